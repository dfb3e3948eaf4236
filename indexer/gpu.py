"""GPU search where present: FAISS GPU when the installed FAISS has it, else exact search in torch.

FAISS GPU wheels need CUDA 12 cuBLAS; where they are missing, an exact (Flat) index is copied to the
GPU as a torch matrix and searched with one matmul + top-k. Torch is imported only here, on demand.
"""

from __future__ import annotations

import faiss
import numpy as np

from .store import stored_ids

__all__ = ["gpu_available", "to_gpu"]


def _faiss_gpus() -> int:
    return int(faiss.get_num_gpus()) if hasattr(faiss, "get_num_gpus") else 0


def gpu_available() -> bool:
    if _faiss_gpus() > 0:
        return True
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


class TorchExactIndex:
    """Exact inner-product or L2 search of an IDMap2+Flat index's vectors on a CUDA device."""

    def __init__(self, index: faiss.Index, metric: str, device: str = "cuda") -> None:
        import torch

        inner = faiss.downcast_index(index.index)
        vectors = faiss.rev_swig_ptr(inner.get_xb(), inner.ntotal * inner.d).reshape(inner.ntotal, inner.d)
        self._torch = torch
        self.ids = torch.as_tensor(stored_ids(index), device=device)
        self.xb = torch.as_tensor(np.array(vectors), device=device, dtype=torch.float32)
        self.metric = metric
        self.metric_type = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT  # for `shards` merging
        self.d = inner.d
        self.ntotal = inner.ntotal

    def search(self, q: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Exact top k; `allowed` (ids): only those rows are scored, rows past them padded with id -1."""
        torch = self._torch
        xq = torch.as_tensor(q, device=self.xb.device, dtype=torch.float32)
        xb, ids = self.xb, self.ids
        if allowed is not None:
            keep = torch.isin(ids, torch.as_tensor(allowed, device=ids.device))
            xb, ids = xb[keep], ids[keep]
        scores = xq @ xb.T
        if self.metric == "l2":  # ||q - x||^2 = |q|^2 - 2 q.x + |x|^2, smaller is better
            scores = -((xq * xq).sum(1, keepdim=True) - 2 * scores + (xb * xb).sum(1)[None, :])
        top, pos = scores.topk(min(k, len(ids)), dim=1)
        if self.metric == "l2":
            top = -top
        out_scores = np.full((len(q), k), np.inf if self.metric == "l2" else -np.inf, np.float32)
        out_ids = np.full((len(q), k), -1, np.int64)
        out_scores[:, : top.shape[1]], out_ids[:, : top.shape[1]] = top.cpu().numpy(), ids[pos].cpu().numpy()
        return out_scores, out_ids


def to_gpu(index: faiss.Index, factory: str, metric: str):
    """A GPU copy of `index` for searching, or the index itself where no GPU path applies."""
    if _faiss_gpus() > 0:
        return faiss.index_cpu_to_all_gpus(index)
    if factory.strip().lower() == "flat" and gpu_available():
        return TorchExactIndex(index, metric)
    return index
