"""How a benchmark's report names the command that made it."""

from __future__ import annotations

import argparse
from pathlib import Path


def command_line(script: str, args: argparse.Namespace) -> str:
    """`benchmarks/NAME.py` and every option that has a value, as the report's rerun command."""
    return f"benchmarks/{Path(script).name} " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None)
