"""ReID galleries in the `indexer`: build, add, remove, query by image, and upgrade the model through
an adapter without re-extracting the gallery.

A gallery is an ordinary index whose model is a ReID model folder (its record's `source`) and whose
documents are crops: id = file stem, content = `ImageRef` (path + sha256 of the bytes, so re-adding a
changed crop re-embeds it), info = {"path", "file", "pid", "camid"} (ids parsed from Market-style
names when present). All images are read and checked before anything is written.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from indexer.catalog import check_kind, get_index, list_indexes
from indexer.context import Catalog
from indexer.corpus import Doc
from indexer.encoder import Encoder
from indexer.errors import Conflict, NotFound, UserError
from indexer.models import Index

from .data import IMAGE_SUFFIXES, parse_market_name
from .encoder import ImageEncoder, ImageRef, file_sha256, load_image_encoder
from .transforms import load_image
from .uploads import safe_name, upload_dir

__all__ = [
    "GallerySource",
    "build_gallery",
    "add_to_gallery",
    "remove_from_gallery",
    "drop_gallery",
    "require_gallery",
    "upload_dir",
    "query_gallery",
    "upgrade_gallery",
]


def _image_files(paths: Sequence[str | Path]) -> list[Path]:
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES))
        elif p.is_file():
            files.append(p)
        else:
            raise UserError(f"{p} does not exist; pass image files or folders of images")
    if not files:
        raise UserError(f"no .jpg/.jpeg/.png images in {', '.join(map(str, paths))}")
    return files


class GallerySource:
    """A DocSource of crops from files and folders; every image is opened and checked here."""

    def __init__(self, paths: Sequence[str | Path]) -> None:
        self.docs: list[Doc] = []
        h = hashlib.sha256()
        for f in _image_files(paths):
            load_image(f)  # unreadable or tiny -> UserError before any write
            digest = file_sha256(f)
            info: dict[str, Any] = {"path": str(f.resolve()), "file": f.name}
            parsed = parse_market_name(f.name)
            if parsed is not None:
                info["pid"], info["camid"] = parsed
            self.docs.append(Doc(id=f.stem, content=ImageRef(str(f.resolve()), digest), info=info))
            h.update(f"{f.stem}\x00{digest}\x01".encode())
        self.fingerprint = h.hexdigest()

    def __iter__(self) -> Iterator[Doc]:
        return iter(self.docs)

    def __len__(self) -> int:
        return len(self.docs)


def build_gallery(catalog: Catalog, name: str, model_dir: str | Path, images: Sequence[str | Path],
                  factory: str = "Flat", progress: bool = False,
                  encoder_for: Callable[[str], Encoder] = load_image_encoder,
                  shard_size: int | None = None) -> dict[str, Any]:
    """Embed the crops with the model, loaded by `encoder_for(model_dir)` (in this process by default, or on
    Ray workers: `indexer.distributed`), and write a new gallery index `name` (cosine / inner product), in
    shards of `shard_size` vectors (`indexer.shards`; default 1,000,000)."""
    from indexer.build import build_index
    from indexer.shards import DEFAULT_SHARD_SIZE, check_shard_size

    shard_size = check_shard_size(DEFAULT_SHARD_SIZE if shard_size is None else shard_size)  # before a model loads
    docs = GallerySource(images)
    encoder = encoder_for(str(model_dir))
    out = build_index(catalog, name, encoder, docs, factory=factory, metric="ip", progress=progress,
                      shard_size=shard_size)
    return {**out, "model_source": encoder.record.source, "dimension": encoder.record.dimension}


def _gallery_index(s: Session, name: str) -> Index:
    """The gallery's index row; an unknown name (the error lists galleries) or a text index is a one-line
    error, so no command goes on to load a text model as a ReID model (whose error would blame a folder the
    user never passed)."""
    try:
        row = get_index(s, name)
    except NotFound:
        known = [i.name for i in list_indexes(s) if i.model.kind == "image"][:10]
        hint = f"known galleries: {', '.join(known)}" if known else "the catalog has no gallery yet"
        raise NotFound(f"no gallery named {name!r} ({hint}); build one with `embedkd reid gallery build`") from None
    check_kind(name, row.model.kind, "image")
    return row


def _index_model(catalog: Catalog, name: str) -> tuple[str, int, str]:
    with catalog.session() as s:
        row = _gallery_index(s, name)
        return row.model.source, row.dimension, row.model.fingerprint


def add_to_gallery(catalog: Catalog, name: str, images: Sequence[str | Path], progress: bool = False,
                   encoder_for: Callable[[str], Encoder] = load_image_encoder) -> dict[str, Any]:
    """Add crops (or re-embed changed ones) with the gallery's own model, loaded by `encoder_for(source)`."""
    from indexer.build import add_documents

    docs = GallerySource(images)
    source, _, _ = _index_model(catalog, name)
    return add_documents(catalog, name, encoder_for(source), docs, progress=progress)


def require_gallery(catalog: Catalog, name: str) -> None:
    """An error unless `name` is a gallery: nothing in `reid gallery` may touch a text index of that name."""
    with catalog.session() as s:
        _gallery_index(s, name)


def remove_from_gallery(catalog: Catalog, name: str, ids: Sequence[str]) -> dict[str, Any]:
    """Remove crops by id (file stem); an unknown id removes nothing and is an error. Crops are images
    of people: a removed crop's uploaded file goes too (only after the index let it go, so a refused
    removal keeps both), and its vector leaves the index files at once (a purge, not a skipped entry);
    crops indexed from the user's own folders stay where they are."""
    from indexer.build import delete_items

    require_gallery(catalog, name)
    folder = upload_dir(catalog, name)
    uploaded = [path for crop_id in ids for path in folder.glob(f"{safe_name(crop_id)}.*")
                if path.stem == crop_id and path.suffix.lower() in IMAGE_SUFFIXES]
    # the files go with the purge, owed until done: a removal killed after its commit deletes them when rerun
    return delete_items(catalog, name, list(ids), purge=True, files=uploaded)


def drop_gallery(catalog: Catalog, name: str) -> dict[str, Any]:
    """Remove a gallery: its index, items and files, and the crops uploaded to it (images of people
    must not outlive the gallery). Crops indexed from the user's own folders are left where they are."""
    from indexer.build import drop_index

    require_gallery(catalog, name)  # an unknown gallery or a text index is an error, nothing removed
    out = drop_index(catalog, name)
    folder = upload_dir(catalog, name)
    uploads = sum(1 for p in folder.iterdir() if p.is_file()) if folder.is_dir() else 0
    shutil.rmtree(folder, ignore_errors=True)
    return {"gallery": name, "dropped": out["dropped"], "uploads_removed": uploads}


def query_gallery(catalog: Catalog, name: str, images: Sequence[Any], k: int = 10,
                  model_dir: str | Path | None = None, lq: bool = False, searcher=None,
                  where: dict[str, Any] | None = None, fuse: bool = False) -> list[list[dict[str, Any]]]:
    """Top-k gallery crops for each query image (path, PIL image or bytes); with `fuse`, the images are one
    person's crops (a tracklet) and one list comes back, for the mean of their embeddings (multi-shot
    query: docs/reid.md, *Querying with a tracklet*). With `model_dir` other
    than the gallery's model, queries go through the gallery's registered adapter into its space.
    `where`: only crops whose info passes (`indexer.where`), e.g. {"camid": {"not_in": [3]}}.
    A long-lived caller (HTTP) passes its own `indexer.search.Searcher` to keep models loaded."""
    from indexer.search import Searcher

    _, dim, fingerprint = _index_model(catalog, name)
    if searcher is None:
        searcher = Searcher(catalog, encoder_for=lambda src: load_image_encoder(src, lq=lq))
    query_model = None
    if model_dir is not None:
        src = str(Path(model_dir).expanduser().resolve())
        if searcher.registered_only:  # a service loads no model folder a client names but did not register
            searcher.require_registered(name, src)
        query_enc = searcher.encoder(src)
        if query_enc.record.fingerprint != fingerprint:
            query_model = src
            _check_adapter_or_dimension(catalog, name, query_enc, dim)
    hits = searcher.search(name, list(images), k=k, query_model=query_model, where=where, fuse=fuse)
    return [[{"id": h.id, "score": h.score, **(h.info or {})} for h in row] for row in hits]


def _check_adapter_or_dimension(catalog: Catalog, name: str, encoder: ImageEncoder, dim: int) -> None:
    from indexer.catalog import active_adapter

    try:
        with catalog.session() as s:
            active_adapter(s, get_index(s, name), encoder.record.fingerprint)
    except NotFound:
        if encoder.record.dimension != dim:
            raise Conflict(
                f"model {encoder.record.source} makes {encoder.record.dimension}-d vectors but gallery {name!r} "
                f"holds {dim}-d vectors; query with the gallery's model or fit an adapter with "
                "`embedkd reid gallery upgrade`"
            ) from None
        raise NotFound(
            f"gallery {name!r} was built with another model and {encoder.record.source} has no adapter into its "
            f"space; run `embedkd reid gallery upgrade --gallery {name} --model {encoder.record.source}` "
            "or query with the gallery's own model"
        ) from None


def upgrade_gallery(catalog: Catalog, name: str, model_dir: str | Path, sample: int = 2000,
                    holdout: float = 0.25, seed: int = 0, check: str = "lq") -> dict[str, Any]:
    """Fit a v2 -> v1 adapter for the gallery from a sample of its crops and register it, if it passes
    the gate; the gallery's stored vectors are not touched.

    Fit: QDC mean shift (same dimension), and orthogonal Procrustes and ridge affine maps when there
    are at least as many pairs as dimensions (embedkd.upgrade.linear), on crops of 1 - holdout of the
    identities; the one with the highest held-out mean cosine to v1 is kept. Gate: held-out crops
    are used as queries against the stored v1 vectors of the sample and of up to 20,000 other crops
    (Market protocol: same person and camera excluded); the adapted v2 queries' rank-1 must be at
    least the v1 queries' rank-1, with queries degraded by the `--lq` protocol (`check="lq"`, what a
    robust model upgrade is for) or clean (`check="clean"`). Both figures are reported; when the gate
    refuses, nothing is registered and a UserError says why. Needs Market-style names (person ids)
    on the gallery crops.
    """
    from embedkd.upgrade.linear import fit_affine, fit_mean_shift, fit_procrustes, mean_cosine
    from embedkd.upgrade.register import register_adapter
    from embedkd.upgrade.run import distractor_ids, stored_vectors
    from indexer.build import load_latest
    from indexer.models import Item

    from .metrics import evaluate_rank

    if check not in ("lq", "clean"):
        raise UserError(f"check must be lq or clean, got {check!r}")
    source, dim, fingerprint = _index_model(catalog, name)
    v2 = load_image_encoder(model_dir)
    if v2.record.fingerprint == fingerprint:
        raise Conflict(f"gallery {name!r} already uses this model; no adapter is needed")
    with catalog.session() as s:
        index = get_index(s, name)
        rows = s.query(Item).filter(Item.index_id == index.id).order_by(Item.faiss_id).all()
        items = [(r.external_id, r.faiss_id, dict(r.info or {})) for r in rows]
    # as the gallery is now (a crop added or removed meanwhile replaced the generation read above)
    row, faiss_index = load_latest(catalog, name)
    factory, stored = row.factory, set(faiss_index.stored_ids().tolist())
    items = [it for it in items if it[1] in stored]
    known = {fid: (info.get("pid", -1), info.get("camid", -1)) for _, fid, info in items}
    items = [it for it in items if "pid" in it[2] and "path" in it[2]]
    rng = np.random.default_rng(seed)
    if len(items) > sample:
        items = [items[i] for i in sorted(rng.choice(len(items), size=sample, replace=False))]
    pids = np.array([it[2]["pid"] for it in items])
    cams = np.array([it[2]["camid"] for it in items])
    persons = np.unique(pids[pids > 0])  # Market's id 0 marks distractor crops, not one person
    if len(persons) < 10:
        raise UserError(f"gallery {name!r} has crops of {len(persons)} known persons; the adapter's "
                        "check needs Market-style names (PID_cCAM...) of at least 10 persons")
    paths = [it[2]["path"] for it in items]
    sample_ids = np.array([it[1] for it in items])
    # the gate's queries search the gallery as search does: the sample plus up to 20,000 other stored
    # crops (quantized as stored for PQ/SQ); among a sample alone an imprecise adapter still finds its match
    others = distractor_ids(faiss_index, sample_ids, seed=seed)
    exact, as_indexed = stored_vectors(faiss_index, factory, sample_ids, others)
    del faiss_index
    y = exact if exact is not None else load_image_encoder(source)(paths)
    if as_indexed is None:
        as_indexed, others = y, others[:0]
    g_pids = np.concatenate([pids, [known[i][0] for i in others.tolist()]]).astype(int)
    g_cams = np.concatenate([cams, [known[i][1] for i in others.tolist()]]).astype(int)
    x = v2(paths)
    held_ids = rng.choice(persons, size=max(2, int(round(holdout * len(persons)))), replace=False)
    held = np.isin(pids, held_ids)
    candidates = {}
    if x.shape[1] == y.shape[1]:  # QDC's mean drift shift; often best for a fine-tuned model of one family
        candidates["mean-shift"] = fit_mean_shift(x[~held], y[~held])
    if not candidates or (~held).sum() >= x.shape[1]:  # a full d x d map needs about d pairs or more
        candidates["procrustes"] = fit_procrustes(x[~held], y[~held])
        candidates["affine"] = fit_affine(x[~held], y[~held])
    scores = {k: mean_cosine(a.apply(x[held]), y[held]) for k, a in candidates.items()}
    kind = max(scores, key=scores.get)
    adapter = candidates[kind]

    def rank1(queries: np.ndarray) -> float:
        q = queries[held] / np.maximum(np.linalg.norm(queries[held], axis=1, keepdims=True), 1e-12)
        dist = 1.0 - q @ as_indexed.T
        dist[np.arange(len(q)), np.flatnonzero(held)] = np.inf  # a crop never matches itself
        try:
            return float(evaluate_rank(dist, pids[held], g_pids, cams[held], g_cams, max_rank=1)[0][0])
        except ValueError:
            return float("nan")

    held_paths = [p for p, h in zip(paths, held) if h]
    lq_v1 = np.zeros_like(y)
    lq_v2 = np.zeros_like(x)
    lq_v1[held] = load_image_encoder(source, lq=True)(held_paths)
    lq_v2[held] = load_image_encoder(model_dir, lq=True)(held_paths)
    figures = {"kind": kind, "heldout_cosine": scores[kind], "rank1_v1": rank1(y),
               "rank1_adapted": rank1(adapter.apply(x)), "lq_rank1_v1": rank1(lq_v1),
               "lq_rank1_adapted": rank1(adapter.apply(lq_v2)), "check": check,
               "pairs": int((~held).sum()), "heldout": int(held.sum()), "distractors": len(others)}
    key = "lq_rank1" if check == "lq" else "rank1"
    if not figures[f"{key}_adapted"] >= figures[f"{key}_v1"]:
        raise UserError(
            f"the {kind} adapter was not registered: adapted {'LQ ' if check == 'lq' else ''}queries reach "
            f"held-out rank-1 {figures[f'{key}_adapted']:.3f} against {figures[f'{key}_v1']:.3f} for the "
            f"gallery's own model (clean: {figures['rank1_adapted']:.3f} vs {figures['rank1_v1']:.3f}); "
            "keep querying with the gallery's model, or rebuild the gallery with the new one"
        )
    reg = register_adapter(catalog, name, adapter, v2.record, metrics=figures)
    return {"gallery": name, **figures, **reg}
