"""FAISS index files: create from a factory string, write atomically with a checksum, load verified.

Every index is wrapped in `IDMap2` so items keep stable 64-bit ids across adds and deletes, and
stored vectors can be read back by id where the index keeps them exactly (Flat, HNSW, IVF-Flat).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import faiss
import numpy as np

from .errors import UserError
from .hashing import sha256_file

__all__ = [
    "make_index",
    "needs_training",
    "min_training_size",
    "train_index",
    "write_index",
    "read_index",
    "stores_exact_vectors",
    "reconstruct",
    "remove_ids",
    "merge",
    "ivf_positions",
]

_LOSSY = re.compile(r"(PQ|SQ|LSH|RQ|LSQ|OPQ|ITQ|Binary)", re.IGNORECASE)


def make_index(dimension: int, factory: str, metric: str = "ip") -> faiss.Index:
    faiss_metric = faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2
    try:
        inner = faiss.index_factory(dimension, factory, faiss_metric)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[-1] if str(err).strip() else ""
        raise UserError(
            f"FAISS cannot make an index from factory string {factory!r} at dimension {dimension} ({first}); "
            "try 'Flat', 'HNSW32', 'IVF256,Flat' or 'IVF1024,PQ32' (PQ m must divide the dimension)"
        ) from None
    return faiss.IndexIDMap2(inner)


def _inner(index: faiss.Index) -> faiss.Index:
    return faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else index


def needs_training(index: faiss.Index) -> bool:
    return not _inner(index).is_trained


def min_training_size(index: faiss.Index) -> int:
    """Fewest training vectors FAISS accepts: IVF needs one per list, PQ 2^nbits per sub-quantizer."""
    inner = _inner(index)
    need = 1
    ivf = faiss.try_extract_index_ivf(inner)
    if ivf is not None:
        need = max(need, int(ivf.nlist))
        pq = getattr(faiss.downcast_index(ivf), "pq", None)
        if pq is not None:
            need = max(need, 1 << int(pq.nbits))
    elif hasattr(inner, "pq"):
        need = max(need, 1 << int(inner.pq.nbits))
    return need


def train_index(index: faiss.Index, vectors, factory: str, seed: int = 0) -> None:
    """Train on a seeded sample (at most 256 points per IVF list: more only costs time). `vectors`: an
    array, or a build's chunks on disk (`indexer.build.ChunkVectors`: only the sample is read)."""
    need = min_training_size(index)
    if len(vectors) < need:
        raise UserError(
            f"index factory {factory!r} needs at least {need} vectors to train but the corpus has "
            f"{len(vectors)}; use 'Flat' or fewer IVF lists (about sqrt(n), e.g. 'IVF{max(1, int(len(vectors) ** 0.5))},Flat')"
        )
    cap = max(need * 256, 50_000)
    if len(vectors) > cap:
        rng = np.random.default_rng(seed)
        vectors = vectors[np.sort(rng.choice(len(vectors), cap, replace=False))]
    index.train(np.ascontiguousarray(vectors, dtype=np.float32))


def write_index(index: faiss.Index, path: Path) -> str:
    """Write to a temp file, fsync, rename; return the sha256 of the file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    faiss.write_index(index, str(tmp))
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    digest = sha256_file(tmp)
    os.replace(tmp, path)
    return digest


def read_index(path: Path, checksum: str | None) -> faiss.Index:
    if not path.is_file():
        raise UserError(f"index file {path} is missing; rebuild the index with `embedkd index build`")
    if checksum is not None:
        actual = sha256_file(path)
        if actual != checksum:
            raise UserError(
                f"index file {path} does not match its catalog checksum (file {actual[:12]}…, "
                f"catalog {checksum[:12]}…): it is corrupt or was changed outside embedkd; "
                "restore it or rebuild the index"
            )
    return set_search_params(faiss.read_index(str(path)))


def default_nprobe(nlist: int) -> int:
    """Inverted lists an IVF search visits unless told otherwise. FAISS's own default is 1: on SciFact
    (IVF64,PQ32, 5,183 documents) that scored nDCG@10 0.363 against 0.574 with 16 lists and 0.579 with
    all 64 (docs/index_benchmark.md). One sixteenth of the lists, at least 16: close to every list's
    recall for a few percent of the work at nlist in the thousands."""
    return int(min(nlist, max(16, nlist // 16)))


DEFAULT_EF_SEARCH = 128  # HNSW candidate list at search time (FAISS's default 16 is tuned for k = 1)


def set_search_params(index: faiss.Index, nprobe: int | None = None, ef_search: int | None = None) -> faiss.Index:
    """Set IVF nprobe and HNSW efSearch on a loaded index (defaults above; other index types unchanged)."""
    for name, value in (("nprobe", nprobe), ("ef_search", ef_search)):
        if value is not None and value < 1:
            raise UserError(f"{name} must be at least 1, got {value}")
    inner = _inner(index)
    ivf = faiss.try_extract_index_ivf(inner)
    if ivf is not None:
        ivf.nprobe = int(min(ivf.nlist, nprobe or default_nprobe(ivf.nlist)))
    if isinstance(inner, faiss.IndexHNSW):
        inner.hnsw.efSearch = int(ef_search or DEFAULT_EF_SEARCH)
    return index


def stores_exact_vectors(factory: str) -> bool:
    """True where reconstructed vectors equal the added ones (no quantization)."""
    return not _LOSSY.search(factory)


def stored_ids(index: faiss.Index) -> np.ndarray:
    """Every 64-bit id the index holds, in storage order."""
    return faiss.vector_to_array(index.id_map).astype(np.int64)


def reconstruct(index: faiss.Index, ids: np.ndarray) -> np.ndarray:
    """Stored vectors by 64-bit id (IDMap2 keeps the id -> position map)."""
    ids = np.asarray(ids, dtype=np.int64)
    if not len(ids):
        return np.zeros((0, index.d), np.float32)
    ivf = faiss.try_extract_index_ivf(_inner(index))
    if ivf is not None:  # IVF needs a direct map to reconstruct; dropped after, since it blocks remove_ids
        ivf.make_direct_map()
    try:
        return np.vstack([index.reconstruct(int(i)) for i in ids]).astype(np.float32)
    finally:
        if ivf is not None:
            ivf.set_direct_map_type(faiss.DirectMap.NoMap)


def remove_ids(index: faiss.Index, ids: np.ndarray, factory: str, metric: str = "ip") -> faiss.Index:
    """Remove ids; indexes that cannot remove in place (HNSW) are rebuilt from their stored vectors."""
    ids = np.asarray(ids, dtype=np.int64)
    ivf = faiss.try_extract_index_ivf(_inner(index))
    if ivf is not None:
        return _remove_ivf(index, ivf, ids)
    try:
        index.remove_ids(ids)
        return index
    except RuntimeError:
        pass
    keep = np.setdiff1d(stored_ids(index), ids)
    vectors = reconstruct(index, keep)
    fresh = make_index(index.d, factory, metric)
    if needs_training(fresh):
        train_index(fresh, vectors, factory)
    fresh.add_with_ids(vectors, keep)
    return fresh


def _remove_ivf(index: faiss.Index, ivf: faiss.IndexIVF, ids: np.ndarray) -> faiss.Index:
    """IDMap2.remove_ids is written for Flat, whose positions close up after a removal: it drops the ids from
    its id map, but an IVF's lists keep the old positions, so every vector after the first removed one was
    answered with the next vector's id. Here the lists' positions are closed up to match the id map."""
    stored = stored_ids(index)
    gone = np.flatnonzero(np.isin(stored, ids))  # positions, ascending
    if not len(gone):
        return index
    ivf.remove_ids(faiss.IDSelectorBatch(len(gone), faiss.swig_ptr(gone)))
    for positions in ivf_positions(ivf):
        positions -= np.searchsorted(gone, positions)
    _set_id_map(index, np.delete(stored, gone))
    return index


def ivf_positions(ivf: faiss.IndexIVF) -> list[np.ndarray]:
    """Each non-empty inverted list's entries: positions in the IDMap2's id map. Views of the lists' own storage,
    so a change to them changes the index."""
    lists = ivf.invlists
    sizes = [(n, lists.list_size(n)) for n in range(ivf.nlist)]
    return [faiss.rev_swig_ptr(lists.get_ids(n), size) for n, size in sizes if size]


def _set_id_map(index: faiss.Index, ids: np.ndarray) -> None:
    """Make `ids` an IDMap2's id map (position -> id) after its inner index changed underneath."""
    faiss.copy_array_to_vector(ids, index.id_map)
    index.ntotal = _inner(index).ntotal
    index.construct_rev_map()


def merge(into: faiss.Index, other: faiss.Index) -> faiss.Index:
    """`into` holding `other`'s vectors and ids too, after its own (`other` is emptied). IVF, Flat, PQ and SQ move
    their codes (nothing re-encoded); HNSW, which cannot merge, inserts `other`'s stored vectors into its graph."""
    ids = stored_ids(other)
    inner, inner_other = _inner(into), _inner(other)
    if isinstance(inner, faiss.IndexHNSW):
        into.add_with_ids(reconstruct(other, ids), ids)
        return into
    # IDMap2.merge_from leaves an IVF's entries pointing at other's positions, not at their new place in the
    # id map (search then returns wrong ids), so merge the inner index with that offset and extend the map here.
    offset = int(into.ntotal) if faiss.try_extract_index_ivf(inner) is not None else 0
    inner.merge_from(inner_other, offset)
    _set_id_map(into, np.concatenate([stored_ids(into), ids]))
    return into
