"""How a benchmark's report names the command that made it."""

from __future__ import annotations

import argparse
from pathlib import Path


def command_line(script: str, args: argparse.Namespace) -> str:
    """`benchmarks/NAME.py` and every option that has a value (a flag: when set), as the report's rerun command."""
    return f"benchmarks/{Path(script).name} " + " ".join(
        f"--{k.replace('_', '-')}" + ("" if v is True else f" {v}") for k, v in vars(args).items()
        if v is not None and v is not False)


def emit(report: dict, out: Path | None) -> None:
    """Print a benchmark's report, and write it to `out` when given (docs/*.json)."""
    import json

    text = json.dumps(report, indent=1)
    print(text)
    if out:
        out.write_text(text + "\n")
