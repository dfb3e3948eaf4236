"""Folders of hard links a reader keeps while it reads files a writer may delete (an export reading an index's
generation, an upgrade reading kept texts): in the jobs folder, named by kind, machine and process, so that
`index gc` can tell a reader killed on this machine (its links are then garbage) from one that runs."""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

__all__ = ["KINDS", "folder", "prefix", "stale"]

KINDS = {"export": "an export", "texts": "an upgrade reading kept texts"}


def prefix(kind: str, host: str | None = None, pid: int | None = None) -> str:
    """How the pin folders of `kind` of a process are named (by default, this process's)."""
    assert kind in KINDS, kind
    return f"{kind}-{host or socket.gethostname()}-{pid or os.getpid()}-"


def folder(job_dir: Path, kind: str) -> Path:
    """A new pin folder's path for this process (not made)."""
    return job_dir / f"{prefix(kind)}{uuid.uuid4().hex[:8]}"


def stale(job_dir: Path) -> list[tuple[Path, str, int]]:
    """(folder, what pinned it, its process id) of the pin folders of processes of this machine that are gone;
    another machine's are its own to clean, as this one cannot tell whether their process runs."""
    out = []
    for kind, what in KINDS.items():
        for path in sorted(job_dir.glob(f"{kind}-*")) if job_dir.is_dir() else []:
            _, pid, _ = path.name.rsplit("-", 2)
            if pid.isdigit() and path.name.startswith(prefix(kind, pid=int(pid))) and not _alive(int(pid)):
                out.append((path, what, int(pid)))
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
