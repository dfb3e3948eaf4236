"""Which shard files a running compaction rewrites, so that writes leave them in their files meanwhile.

`index compact` rewrites shards without its index's write lock (`compaction.py`). Before it starts it lists the
files it rewrites here, holding that lock; every write loads the index with them frozen (`shards.ShardedIndex`):
an add never merges a new shard into one, a delete lists its ids with them past the usual bound. So the
compaction's shards stay valid: at its commit the ids deleted meanwhile are all that changed in them. The list
counts only while its compaction holds its lock: one killed midway freezes nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

from . import locks
from .context import Catalog

__all__ = ["freeze", "thaw", "files", "marker", "leftovers"]


def marker(catalog: Catalog, name: str) -> Path:
    return catalog.settings.home / "compacting" / f"{name}.json"


def freeze(catalog: Catalog, name: str, frozen: set[str]) -> None:
    """List `frozen` for index `name` (call holding its write lock and its compaction lock)."""
    path = marker(catalog, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(sorted(frozen)))
    tmp.replace(path)


def thaw(catalog: Catalog, name: str) -> None:
    marker(catalog, name).unlink(missing_ok=True)


def files(catalog: Catalog, name: str) -> set[str]:
    """The files of index `name` a running compaction rewrites (none when no compaction of it runs)."""
    path = marker(catalog, name)
    if not path.is_file() or locks.compactor(catalog, name) is None:
        return set()
    return set(json.loads(path.read_text()))


def leftovers(catalog: Catalog) -> list[Path]:
    """The lists of compactions that are not running (killed ones'), for `index gc`."""
    root = catalog.settings.home / "compacting"
    return [p for p in sorted(root.glob("*.json")) if locks.compactor(catalog, p.stem) is None] if root.is_dir() else []
