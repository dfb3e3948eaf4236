"""Corpus files carried with an exported index (`embedkd index export --with-corpora`).

An export records the paths of the files the index's documents came from, and an upgrade reads them there
(`embedkd.upgrade.run.index_corpora`). On another machine those paths do not exist. With `--with-corpora`, the
export copies the files too; the import places them in `EMBEDKD_HOME/corpora/NAME/` and records those paths, so
the imported index backfills with no `--corpus`. They are copies of your files: as with the originals, a purge
does not edit them; dropping the index deletes them.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from sqlalchemy import select

from .context import Catalog
from .errors import UserError
from .hashing import sha256_file
from .models import Index

__all__ = ["export", "folder", "forget", "leftovers", "place"]


def folder(catalog: Catalog, name: str) -> Path:
    """Where index `name`'s carried corpus files are."""
    return catalog.settings.home / "corpora" / name


def export(sources: list[tuple[int, str]], dest: Path) -> list[dict[str, Any]]:
    """Copy each file of `sources` ((when, path), as `jobs.sources` gives them) into `dest`; their entries."""
    out: list[dict[str, Any]] = []
    for path in dict.fromkeys(p for _, p in sources):
        if not Path(path).is_file():
            raise UserError(f"{path}, a file this index's documents came from, is gone, so it cannot be carried; "
                            "restore it, or export without --with-corpora; nothing was exported")
        dest.mkdir(exist_ok=True)
        name = f"{len(out)}-{Path(path).name}"  # numbered: two files may share a name
        _copy(Path(path), dest / name, "nothing was exported")
        out.append({"path": path, "name": name, "sha256": sha256_file(dest / name)})
    return out


def place(src: Path, entries: list[dict[str, Any]], target: Path) -> tuple[list[Path], dict[str, str]]:
    """Copy the exported files in `src` into `target`: (the paths written, each original path -> its copy)."""
    written, moved = [], {}
    for e in entries:
        target.mkdir(parents=True, exist_ok=True)
        written.append(target / e["name"])
        _copy(src / e["name"], target / e["name"], "free space or fix permissions there, then import again; "
                                                   "nothing was imported")
        moved[e["path"]] = str((target / e["name"]).resolve())
    return written, moved


def forget(catalog: Catalog, name: str) -> None:
    """Delete an index's carried files (it was dropped)."""
    shutil.rmtree(folder(catalog, name), ignore_errors=True)


def leftovers(catalog: Catalog) -> list[Path]:
    """Carried-file folders of indexes the catalog no longer has (a drop killed midway): `index gc` deletes them."""
    root = catalog.settings.home / "corpora"
    if not root.is_dir():
        return []
    with catalog.session() as s:
        names = set(s.scalars(select(Index.name)))
    return [p for p in sorted(root.iterdir()) if p.is_dir() and p.name not in names]


def _copy(src: Path, dst: Path, outcome: str) -> None:
    try:
        shutil.copy2(src, dst)
    except OSError as err:
        raise UserError(f"cannot copy {src} to {dst.parent}: {err.strerror}; {outcome}") from None
