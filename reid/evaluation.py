"""Feature extraction and Market-1501 evaluation of a ReID model (clean or `--lq` queries)."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from indexer.errors import UserError

from .data import MarketData, Sample, read_market
from .degrade import lq_protocol
from .metrics import cosine_distance, evaluate_rank, first_match_ranks, re_ranking
from .model import ReIDModel
from .transforms import TestTransform, load_image

__all__ = ["default_image_batch", "embed_images", "extract_features", "evaluate_model", "evaluate_market"]


def default_image_batch(device: torch.device | str) -> int:
    """Images per batch when the caller gives none: 32 on a CPU, 128 on a GPU. On this 2-core CPU a
    batch of 32 crops embeds 1.4-2.0x faster than 64 and 2.0-2.6x faster than 128 (MobileNetV2 and
    EfficientNet-Lite0 at 128x64, `benchmarks/reid_batch.py`, docs/reid.md); a GPU wants large batches."""
    return 128 if str(device).startswith("cuda") else 32


@torch.no_grad()
def embed_images(model: ReIDModel, images: Sequence[Image.Image], batch_size: int | None = None) -> np.ndarray:
    """L2-normalized float32 embeddings (n, dim) of RGB PIL images (resized to the model's input)."""
    model.eval()
    model.to(memory_format=torch.channels_last)  # faster convolutions on CPU
    spec = model.spec
    transform = TestTransform(spec.height, spec.width, spec.mean, spec.std)
    device = next(model.parameters()).device
    batch_size = batch_size or default_image_batch(device)
    out = np.zeros((len(images), model.dim), dtype=np.float32)
    for start in range(0, len(images), batch_size):
        batch = torch.stack([transform(img) for img in images[start : start + batch_size]])
        feats = model(batch.to(device).contiguous(memory_format=torch.channels_last)).float()
        out[start : start + len(batch)] = torch.nn.functional.normalize(feats, dim=1).cpu().numpy()
    return out


def extract_features(
    model: ReIDModel, paths: Sequence[str | Path], *, lq: bool = False, batch_size: int | None = None,
    lq_kinds: Sequence[str] | None = None,
) -> np.ndarray:
    """Embeddings of image files, read `batch_size` at a time. With `lq`, each crop is first degraded
    by the fixed protocol (`reid.degrade.lq_protocol`, keyed by file name; `lq_kinds` restricts its kinds)."""
    batch_size = batch_size or default_image_batch(next(model.parameters()).device)
    out = np.zeros((len(paths), model.dim), dtype=np.float32)
    for start in range(0, len(paths), batch_size):
        images = []
        for path in paths[start : start + batch_size]:
            img = load_image(path)
            images.append(lq_protocol(img, os.path.basename(str(path)), kinds=lq_kinds) if lq else img)
        out[start : start + len(images)] = embed_images(model, images, batch_size)
    return out


def _arrays(samples: list[Sample]) -> tuple[list[str], np.ndarray, np.ndarray]:
    return [s.path for s in samples], np.array([s.pid for s in samples]), np.array([s.camid for s in samples])


def tracklet_crops(q_pids: np.ndarray, q_cams: np.ndarray, g_pids: np.ndarray, g_cams: np.ndarray,
                   extra: int) -> list[np.ndarray]:
    """The multi-shot protocol's added crops: per query, up to `extra` gallery crops (in gallery order,
    i.e. frame order) of the same person from the same camera. They are one passage past that camera, as
    a tracker's crops are, and the Market protocol already excludes them from that query's ranking."""
    return [np.flatnonzero((g_pids == p) & (g_cams == c))[:extra] for p, c in zip(q_pids, q_cams)]


def crop_features(model: ReIDModel, g_paths: Sequence[str | Path], gf: np.ndarray, crops: Sequence[Sequence[int]],
                  *, lq: bool = False, batch_size: int | None = None, lq_kinds: Sequence[str] | None = None) -> np.ndarray:
    """Gallery-indexed embeddings for crops used as query shots: the gallery's own (`gf`), or under `lq`
    a copy whose rows for the `crops` named are re-extracted degraded, as the query is."""
    if not lq:
        return gf
    needed = sorted({int(j) for idx in crops for j in idx})
    out = gf.copy()
    out[needed] = extract_features(model, [g_paths[j] for j in needed], lq=True, batch_size=batch_size, lq_kinds=lq_kinds)
    return out


def fuse_tracklets(qf: np.ndarray, crop_feats: np.ndarray, crops: list[np.ndarray]) -> np.ndarray:
    """Each query's embedding fused with those of its added crops (rows of `crop_feats`, gallery-indexed),
    as a gallery search with `fuse` does it (`indexer.search.mean_query`)."""
    from indexer.search import mean_query

    return np.vstack([mean_query(np.vstack([qf[i], crop_feats[idx]])) for i, idx in enumerate(crops)])


def evaluate_market(
    model: ReIDModel, data: MarketData, *, lq: bool = False, rerank: bool = False, batch_size: int | None = None,
    per_query: bool = False, lq_kinds: Sequence[str] | None = None, tracklet: int = 1,
) -> dict:
    """rank1/rank5/rank10/mAP (fractions in 0..1) of query vs gallery, plus counts and images/s; with
    `per_query`, also each query's first-match rank (`first_match_ranks`) for paired comparisons. With
    `tracklet` > 1, each query is searched with up to that many crops (`tracklet_crops`, degraded too
    under `lq`), fused by `fuse_tracklets`."""
    if tracklet < 1:
        raise UserError(f"--tracklet must be at least 1 (crops per query), got {tracklet}")
    q_paths, q_pids, q_cams = _arrays(data.query)
    g_paths, g_pids, g_cams = _arrays(data.gallery)
    t0 = time.perf_counter()
    gf = extract_features(model, g_paths, batch_size=batch_size)
    t_gallery = time.perf_counter() - t0
    qf = extract_features(model, q_paths, lq=lq, batch_size=batch_size, lq_kinds=lq_kinds)
    extra = {}
    if tracklet > 1:
        crops = tracklet_crops(q_pids, q_cams, g_pids, g_cams, tracklet - 1)
        feats = crop_features(model, g_paths, gf, crops, lq=lq, batch_size=batch_size, lq_kinds=lq_kinds)
        qf = fuse_tracklets(qf, feats, crops)
        extra["mean_crops"] = 1 + float(np.mean([len(idx) for idx in crops]))
    dist = cosine_distance(qf, gf)
    if rerank:
        dist = re_ranking(dist, cosine_distance(qf, qf), cosine_distance(gf, gf))
    cmc, mean_ap = evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams, max_rank=10)
    if per_query:
        extra["first_match_rank"] = first_match_ranks(dist, q_pids, g_pids, q_cams, g_cams).tolist()
    return {
        **extra,
        "rank1": float(cmc[0]),
        "rank5": float(cmc[4]),
        "rank10": float(cmc[9]),
        "mAP": mean_ap,
        "queries": len(q_paths),
        "gallery": len(g_paths),
        "images_per_s": len(g_paths) / max(t_gallery, 1e-9),
    }


def evaluate_model(
    model_dir: str | Path, data_root: str | Path, *, lq: bool = False, rerank: bool = False,
    lq_kinds: Sequence[str] | None = None, tracklet: int = 1,
) -> dict[str, float]:
    """Load a model folder and evaluate it on a Market-1501 folder's query/gallery split."""
    from .model import load_model

    torch.set_flush_denormal(True)
    data = read_market(data_root, need_test=True)
    model, _ = load_model(model_dir)
    return evaluate_market(model, data, lq=lq, rerank=rerank, lq_kinds=lq_kinds, tracklet=tracklet)
