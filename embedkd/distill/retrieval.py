"""Retrieval metrics for distillation runs: exact FAISS search + `embedkd.evaluation`'s pytrec_eval metrics.

Works on vectors, so a run can score its student, teacher and dev split from one corpus encoding
(the teacher's corpus vectors come from the on-disk cache).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["encode_texts", "evaluate_vectors", "ir_metrics"]


def encode_texts(model, texts: Sequence[str], batch_size: int | None = None, role: str = "document") -> np.ndarray:
    """Normalized float32 vectors; `batch_size` defaults to the device's (16 on a CPU, 64 on a GPU)."""
    import torch

    from embedkd.text_encoder import default_batch_size, encode_role

    batch_size = batch_size or default_batch_size(str(model.device))
    with torch.inference_mode():
        out = encode_role(model, texts, role, batch_size=batch_size, convert_to_numpy=True,
                          normalize_embeddings=True, show_progress_bar=False)
    return np.ascontiguousarray(out, dtype=np.float32)


def ir_metrics(run: dict[str, dict[str, float]], qrels: dict[str, dict[str, int]]) -> dict[str, float]:
    """Mean nDCG@10, Recall@100 and MRR@10 over the judged queries (`embedkd.evaluation`'s definitions)."""
    from embedkd.evaluation.metrics import retrieval_metrics

    return retrieval_metrics(run, qrels)


def evaluate_vectors(query_ids: Sequence[str], query_vecs: np.ndarray, doc_ids: Sequence[str],
                     doc_vecs: np.ndarray, qrels: dict[str, dict[str, int]], k: int = 100) -> dict[str, float]:
    from embedkd.evaluation.retrieval import exact_run

    return ir_metrics(exact_run(list(doc_ids), doc_vecs, list(query_ids), query_vecs, k, qrels=qrels), qrels)
