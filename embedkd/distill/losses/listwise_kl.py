"""Listwise KL distillation over each query's candidates (positive + negatives, optionally the whole
batch's documents), with a temperature. sentence-transformers' DistillKLDivLoss covers a query's own
columns only; this adds in-batch candidates and a mask for pairs the teacher did not score."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["listwise_kl"]


def listwise_kl(student_scores: Tensor, teacher_scores: Tensor, temperature: float = 1.0,
                mask: Tensor | None = None) -> Tensor:
    """KL(teacher || student) between row-wise softmax(scores / temperature), averaged over rows.

    Args:
        student_scores: (B, N) student scores of each query against N candidates.
        teacher_scores: (B, N) teacher scores of the same pairs.
        temperature: softmax temperature for both. With cosine scores it is a sharpening scale
            (T < 1, e.g. 0.05), so there is no T**2 factor: Hinton's factor, meant for T > 1, would
            shrink the gradient 400-fold at T = 0.05 and leave the term without effect.
        mask: optional (B, N) bool, True where the pair is a candidate; at least one per row.
    """
    if student_scores.shape != teacher_scores.shape or student_scores.dim() != 2:
        raise ValueError(
            f"student and teacher scores must both be (batch, candidates); got {tuple(student_scores.shape)} "
            f"and {tuple(teacher_scores.shape)}"
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    s = student_scores / temperature
    t = teacher_scores.detach().to(s.dtype) / temperature
    if mask is not None:
        if mask.shape != s.shape:
            raise ValueError(f"mask must have shape {tuple(s.shape)}, got {tuple(mask.shape)}")
        neg_inf = torch.finfo(s.dtype).min
        s = s.masked_fill(~mask, neg_inf)
        t = t.masked_fill(~mask, neg_inf)
    log_q = torch.log_softmax(s, dim=1)
    log_p = torch.log_softmax(t, dim=1)
    p = log_p.exp()
    terms = p * (log_p - log_q)
    if mask is not None:
        terms = terms.masked_fill(~mask, 0.0)
    return terms.sum(dim=1).mean()
