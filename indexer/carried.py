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

from .context import Catalog
from .errors import UserError

__all__ = ["entries", "folder", "forget", "root"]


def root(catalog: Catalog) -> Path:
    """Where every index's carried corpus files are, a folder each."""
    return catalog.settings.home / "corpora"


def folder(catalog: Catalog, name: str) -> Path:
    """Where index `name`'s carried corpus files are."""
    return root(catalog) / name


def entries(sources: list[tuple[int, str]]) -> list[dict[str, Any]]:
    """The files of `sources` ((when, path), as `jobs.sources` gives them) as an export carries them: each path
    once, with the name its copy has in the export (numbered: two files may share a name)."""
    out: list[dict[str, Any]] = []
    for path in dict.fromkeys(p for _, p in sources):
        if not Path(path).is_file():
            raise UserError(f"{path}, a file this index's documents came from, is gone, so it cannot be carried; "
                            "restore it, or export without --with-corpora; nothing was exported")
        out.append({"path": path, "name": f"{len(out)}-{Path(path).name}"})
    return out


def forget(catalog: Catalog, name: str) -> None:
    """Delete an index's carried files (it was dropped)."""
    shutil.rmtree(folder(catalog, name), ignore_errors=True)
