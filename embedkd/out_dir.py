"""The output folder a command writes to, checked before any work (config at the edge, one-line errors)."""

from __future__ import annotations

from pathlib import Path

from indexer.errors import UserError

__all__ = ["output_folder"]


def output_folder(path: str | Path, flag: str = "--out") -> Path:
    """`path` as a Path; a one-line error when a file already stands there (it could never be written as a
    folder, and would otherwise fail with a traceback after the run's work was done or begun)."""
    out = Path(path).expanduser()
    if out.exists() and not out.is_dir():
        raise UserError(f"{flag} {out} is a file, not a folder; give a new folder path")
    return out
