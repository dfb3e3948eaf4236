"""Teacher and labels fused per query, by how much the teacher believes the label.

A fixed `kl+labels` gives every query the same mix of the teacher's listwise distribution and the
labelled positive. Hu et al. (ICLR 2024, "Less or More From Teacher: Exploiting Trilateral Geometry
for Knowledge Distillation") learn a fusion ratio per sample instead, because a teacher is worth
imitating where it is right and misleading where it is wrong. This is the intra-sample teacher-
correctness part of that idea without its meta-network: query i's weight on the teacher is the
teacher's own softmax probability of the labelled positive, a_i = p_T(pos_i), and the rest goes to
the labels' cross-entropy. Per query the loss is a_i * KL(p_T || q) + (1 - a_i) * CE(pos_i, q),
whose gradient is that of the cross-entropy to the mixed target a_i p_T + (1 - a_i) onehot(pos_i).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["adaptive_listwise"]


def adaptive_listwise(student_scores: Tensor, teacher_scores: Tensor, positive: Tensor,
                      temperature: float = 1.0, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Mean over queries of a_i * KL_i + (1 - a_i) * CE_i, with a_i = p_T(positive_i); returns (loss, a).

    Args:
        student_scores: (B, N) student scores of each query against N candidates.
        teacher_scores: (B, N) teacher scores of the same pairs.
        positive: (B,) long, the column of each query's labelled positive.
        temperature: softmax temperature for teacher and student (cosine scores: T < 1, no T**2).
        mask: optional (B, N) bool, True where the pair is a candidate; must include the positive.
    """
    if student_scores.shape != teacher_scores.shape or student_scores.dim() != 2:
        raise ValueError(
            f"student and teacher scores must both be (batch, candidates); got {tuple(student_scores.shape)} "
            f"and {tuple(teacher_scores.shape)}"
        )
    if positive.shape != student_scores.shape[:1]:
        raise ValueError(f"positive must have shape ({student_scores.shape[0]},), got {tuple(positive.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    s = student_scores / temperature
    t = teacher_scores.detach().to(s.dtype) / temperature
    if mask is not None:
        if mask.shape != s.shape:
            raise ValueError(f"mask must have shape {tuple(s.shape)}, got {tuple(mask.shape)}")
        if not bool(mask.gather(1, positive[:, None]).all()):
            raise ValueError("mask excludes a labelled positive")
        neg_inf = torch.finfo(s.dtype).min
        s = s.masked_fill(~mask, neg_inf)
        t = t.masked_fill(~mask, neg_inf)
    log_q = torch.log_softmax(s, dim=1)
    log_p = torch.log_softmax(t, dim=1)
    p = log_p.exp()
    kl_terms = p * (log_p - log_q)
    if mask is not None:
        kl_terms = kl_terms.masked_fill(~mask, 0.0)
    kl = kl_terms.sum(dim=1)
    ce = -log_q.gather(1, positive[:, None]).squeeze(1)
    trust = p.gather(1, positive[:, None]).squeeze(1).detach()
    return (trust * kl + (1 - trust) * ce).mean(), trust
