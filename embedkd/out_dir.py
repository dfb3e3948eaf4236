"""Where a command writes (a folder or a file), checked before any work (config at the edge, one-line errors).

Without the check a path that can never be written fails with a traceback after the run's work is done
(a TREC run after encoding every query) or begun (a distillation's first checkpoint)."""

from __future__ import annotations

import os
from pathlib import Path

from indexer.errors import UserError

__all__ = ["output_file", "output_folder"]


def output_folder(path: str | Path, flag: str = "--out") -> Path:
    """`path` as a Path, if it is or can be made a folder: no file stands at it or above it, and the nearest
    existing folder above it is writable. Nothing is created."""
    out = Path(path).expanduser()
    if out.exists() and not out.is_dir():
        raise UserError(f"{flag} {out} is a file, not a folder; give a new folder path")
    _check_writable(out, flag)
    return out


def output_file(path: str | Path, flag: str) -> Path:
    """`path` as a Path, if a file can be written there: it is not a folder, and its folder is or can be made."""
    out = Path(path).expanduser()
    if out.is_dir():
        raise UserError(f"{flag} {out} is a folder; give a file path")
    _check_writable(out.parent, flag, out)
    return out


def _check_writable(folder: Path, flag: str, target: Path | None = None) -> None:
    existing = folder.absolute()
    while not existing.exists():
        existing = existing.parent
    shown = target or folder
    if not existing.is_dir():
        raise UserError(f"{flag} {shown}: {existing} is a file, so no folder can be made under it; give another path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {shown}: {existing} is not writable by this user; give a path you can write to")
