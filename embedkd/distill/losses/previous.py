"""Hook for continual training (issue 4, QDC): keep a new model's embeddings close to a previous
model's on the same texts, so an index built by the previous model keeps answering.

`previous_model_loss` is the maths; `DistillObjective(..., previous_weight=w)` adds it as a term when
the step's `previous_embeddings` are given (computed by the frozen previous model on the batch texts).
"""

from __future__ import annotations

from torch import Tensor
from torch.nn import functional as F

__all__ = ["previous_model_loss"]


def previous_model_loss(student: Tensor, previous: Tensor, metric: str = "cosine") -> Tensor:
    """Mean embedding distance, (n, d) vs (n, d): 'cosine' = 1 - cos, 'mse' = mean squared error."""
    if student.shape != previous.shape:
        raise ValueError(
            f"student embeddings {tuple(student.shape)} and previous-model embeddings {tuple(previous.shape)} "
            "differ; project the student first when the dimensions differ"
        )
    previous = previous.detach().to(student.dtype)
    if metric == "cosine":
        return (1 - F.cosine_similarity(student, previous, dim=-1)).mean()
    if metric == "mse":
        return F.mse_loss(student, previous)
    raise ValueError(f"metric must be 'cosine' or 'mse', got {metric!r}")
