"""Content and file hashes (sha256, hex)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

__all__ = ["content_key", "sha256_file", "sha256_text", "fsync_write"]


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def content_key(content: Any) -> str:
    """What an item stores as its content hash (a changed document is re-embedded, an unchanged one skipped)."""
    return sha256_text(content if isinstance(content, str) else str(content))


def fsync_write(path: Path, data: bytes) -> None:
    """Write to `path` via a temp file and rename, so readers see the old or the new file, never half."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
