"""Where a gallery's crops uploaded over HTTP are kept: EMBEDKD_HOME/galleries/NAME (the index keeps their paths).
Crops indexed from the user's own folders stay there; these are the catalog's to remove with the gallery and to
move with it (`embedkd index export` / `import`)."""

from __future__ import annotations

import re
from pathlib import Path

from indexer.context import Catalog

__all__ = ["upload_dir", "safe_name"]

_SAFE = re.compile(r"[^A-Za-z0-9._-]")


def safe_name(name: str) -> str:
    """`name` as a file name: anything but letters, digits, '.', '_' and '-' becomes '_'."""
    return _SAFE.sub("_", name)


def upload_dir(catalog: Catalog, gallery: str) -> Path:
    """Where crops uploaded over HTTP to `gallery` are stored."""
    return catalog.settings.home / "galleries" / safe_name(gallery)
