"""An index checked against its catalog rows, as an operator does after an incident (a disk error, files
restored from a backup, a manual edit): every file present and matching its checksum, every shard holding
only its own id range, and the FAISS ids equal to the catalog's items, each once. Shards are read one at a
time, so checking an index needs the memory of its largest shard, not of the whole index."""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np
from sqlalchemy import select

from . import shards, store
from .catalog import get_index
from .context import Catalog
from .errors import Conflict, UserError
from .models import Item

__all__ = ["verify_index"]


def verify_index(catalog: Catalog, name: str, attempts: int = 3) -> dict[str, Any]:
    """{"index", "ok", "vectors", "items", "shards", "problems": [one line each]}. A check that finds problems
    while a write moved the index to a new generation (deleting files of the one checked) is made again on it, up
    to `attempts` times: an index being written is not reported broken (`Conflict` if it moved every time)."""
    for _ in range(attempts):
        out, generation = _check(catalog, name)
        with catalog.session() as s:
            if out["ok"] or get_index(s, name).generation == generation:
                return out
    raise Conflict(f"index {name!r} was written {attempts} times while it was being verified; verify it again "
                   "when writes pause")


def _check(catalog: Catalog, name: str) -> tuple[dict[str, Any], int]:
    """`verify_index`'s figures for the index's current generation, and that generation."""
    with catalog.session() as s:
        index = get_index(s, name)
        file, checksum, count, dim, next_id = index.file, index.checksum, index.count, index.dimension, index.next_id
        generation = index.generation
        items = np.array(s.scalars(select(Item.faiss_id).where(Item.index_id == index.id)).all(), np.int64)
    problems: list[str] = []
    out = {"index": name, "ok": False, "vectors": None, "items": len(items), "shards": 0, "problems": problems}
    if file is None:
        problems.append("the catalog names no index file")
        return out, generation
    try:
        loaded = shards.load(catalog.settings.index_dir / name / file, checksum, lazy=True)
    except UserError as err:
        problems.append(str(err))
        return out, generation
    out["shards"] = len(loaded.shards)
    if loaded.template is not None:  # what adds copy a new shard from
        try:
            template = store.read_index(catalog.settings.index_dir / name / loaded.template.file, loaded.template.checksum)
            if template.ntotal or template.d != dim:
                problems.append(f"the template holds {template.ntotal} {template.d}-d vectors, not 0 {dim}-d ones")
        except UserError as err:
            problems.append(f"template: {err}")
    stored = []
    for pos, shard in enumerate(loaded.shards):
        try:
            faiss_index = loaded.shard(pos)
        except UserError as err:
            problems.append(f"shard {pos}: {err}")
            continue
        ids = store.stored_ids(faiss_index)
        unknown = np.setdiff1d(shard.deleted, ids)
        if len(unknown):
            problems.append(f"shard {pos} lists {len(unknown)} deleted ids it does not hold (e.g. {int(unknown[0])})")
        ids = ids[~np.isin(ids, shard.deleted)]
        end = loaded.shards[pos + 1].first_id if pos + 1 < len(loaded.shards) else None
        outside = ids[(ids < shard.first_id) | ((ids >= end) if end is not None else False)]
        if len(outside):
            problems.append(f"shard {pos} holds {len(outside)} ids outside its range (e.g. {int(outside[0])})")
        if _ivf_misnumbered(faiss_index):
            problems.append(f"shard {pos}: its IVF lists do not match its id map, so searches answer with wrong ids "
                            "(left by a delete before embedkd fixed IVF removals); rebuild the index")
        if faiss_index.d != dim:
            problems.append(f"shard {pos} holds {faiss_index.d}-d vectors, the catalog says {dim}")
        stored.append(ids)
        shard.index = None  # one shard in memory at a time
    if len(stored) < len(loaded.shards):
        return out, generation
    ids = np.sort(np.concatenate(stored)) if stored else np.zeros(0, np.int64)
    out["vectors"] = len(ids)
    repeated = ids[1:][ids[1:] == ids[:-1]]
    if len(repeated):
        problems.append(f"{len(repeated)} FAISS ids are stored twice (e.g. {int(repeated[0])})")
    if len(ids) != count:
        problems.append(f"FAISS holds {len(ids)} vectors but the catalog's count says {count}")
    for what, extra in (("vectors without an item row", np.setdiff1d(ids, items)),
                        ("item rows without a vector", np.setdiff1d(items, ids))):
        if len(extra):
            problems.append(f"{len(extra)} {what} (e.g. FAISS id {int(extra[0])})")
    if len(ids) and ids[-1] >= next_id:
        problems.append(f"FAISS id {int(ids[-1])} is not below the catalog's next id {next_id}: a new item would reuse it")
    out["ok"] = not problems
    return out, generation


def _ivf_misnumbered(index) -> bool:
    """True when an IVF shard's list entries are not the positions 0..n-1 of its id map, each once."""
    ivf = faiss.try_extract_index_ivf(store._inner(index))
    if ivf is None:
        return False
    positions = np.concatenate([p.copy() for p in store.ivf_positions(ivf)] or [np.zeros(0, np.int64)])
    return not np.array_equal(np.sort(positions), np.arange(int(index.ntotal)))
