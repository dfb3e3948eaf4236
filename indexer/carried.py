"""Corpus files carried with an exported index (`embedkd index export --with-corpora`).

An export records the paths of the files the index's documents came from, and an upgrade reads them there
(`embedkd.upgrade.run.index_corpora`). On another machine those paths do not exist. With `--with-corpora`, the
export copies the files too; the import places them in `EMBEDKD_HOME/corpora/NAME/` and records those paths, so
the imported index backfills with no `--corpus`.

A copy holds only the lines of documents the index holds, as it holds them: a document deleted, purged or changed
since its file was read does not travel with the export. A purge of the imported index takes its documents out of
the copies too (the originals are the user's, and theirs to edit). Dropping the index deletes the copies.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from .context import Catalog
from .corpus import Doc, parse_line
from .errors import UserError
from .hashing import content_key
from .textfile import text_lines

__all__ = ["copy_held", "drop_unheld", "entries", "folder", "forget", "held_key", "purge", "root"]


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


def held_key(external_id: str, content_hash: str) -> int:
    """A document as the index holds it (its id and content hash), in 8 bytes: an export keeps one per item."""
    digest = hashlib.blake2b(f"{external_id}\x00{content_hash}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


def copy_held(src: Path, dest: Path, held: np.ndarray) -> int:
    """Copy corpus file `src` to `dest` with only the lines of documents the index holds as it holds them (`held`:
    their `held_key`s, sorted); lines verbatim. How many were kept."""
    def keep(doc: Doc) -> bool:
        key = held_key(doc.id, content_key(doc.content))
        at = int(np.searchsorted(held, key))
        return at < len(held) and int(held[at]) == key

    return _filtered(src, dest, keep)


def drop_unheld(catalog: Catalog, name: str, held: np.ndarray) -> int:
    """Rewrite index `name`'s carried files with only the lines of documents it holds as it holds them (`held`:
    their `held_key`s, sorted): deleted and changed documents' lines go (`index compact --texts`; call holding
    the index's write lock, as a purge rewrites them holding it). Lines kept."""
    return sum(copy_held(path, path, held) for path in sorted(folder(catalog, name).glob("*"))
               if path.is_file() and not path.name.endswith(".tmp"))


def purge(catalog: Catalog, name: str, ids: Iterable[str], most: int = 64) -> None:
    """Take the documents `ids` out of index `name`'s carried files now (`index delete --purge`): each file that
    holds one is written again without it, under its own name. Only lines that name one of `ids` as JSON writes
    it are parsed (all of them past `most` ids)."""
    gone = set(ids)
    forms = [form for i in gone for form in {i, json.dumps(i)[1:-1]}]

    def mentions(line: str) -> bool:
        return len(gone) > most or any(form in line for form in forms)

    for path in sorted(folder(catalog, name).glob("*")) if gone else []:
        if path.is_file() and not path.name.endswith(".tmp"):
            _filtered(path, path, lambda doc: doc.id not in gone, mentions)


def _filtered(src: Path, dest: Path, keep: Callable[[Doc], bool], parse: Callable[[str], bool] = lambda _: True) -> int:
    """Write the lines of corpus file `src` whose document `keep` accepts to `dest`, through a temporary file and a
    rename (`dest` may be `src`: then rewritten only if a line goes); lines without text are dropped, and a line
    that `parse` passes over is kept unread. The lines kept."""
    tmp = dest.with_name(dest.name + ".tmp")
    kept = dropped = 0
    with (gzip.open if dest.suffix == ".gz" else open)(tmp, "wt", encoding="utf-8") as out:
        for lineno, line in text_lines(src):
            if not line.strip():
                continue
            if parse(line):
                doc = parse_line(line, lineno, src)
                if not (doc.content and keep(doc)):
                    dropped += 1
                    continue
            out.write(line if line.endswith("\n") else line + "\n")
            kept += 1
    if dest == src and not dropped:
        tmp.unlink()
    else:
        os.replace(tmp, dest)
    return kept
