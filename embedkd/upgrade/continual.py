"""Continual training hook (QDC's stability term): keep a new model v2 close to the previous v1.

While v2 trains on new data, the same batch's texts (queries and documents) are also embedded by
the frozen previous model; the hook adds a distillation loss that keeps v2's embeddings near v1's.
A v2 trained this way stays adaptable: the drift it accumulates is small and smooth, which is what a
mean shift or a linear adapter can undo at query time (and forgetting on old data is smaller).

* `embedding_distillation_loss` (same dimension): 1 - cosine(v2(t), v1(t)), mean over the batch.
* `relational_distillation_loss` (any dimensions): MSE between the two models' in-batch cosine
  similarity matrices, so v2 keeps v1's neighbourhood structure even where the spaces differ.

Use in a training loop (`embedkd distill ... --previous MODEL` wires it)::

    hook = PreviousModelHook(previous_encoder, weight=1.0)
    loss = task_loss + hook(texts, new_embeddings)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

__all__ = ["PreviousModelHook", "embedding_distillation_loss", "relational_distillation_loss"]


def embedding_distillation_loss(new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """Mean 1 - cosine between rows of new (n, d) and old (n, d) embeddings."""
    if new.shape != old.shape:
        raise ValueError(
            f"embedding distillation needs equal shapes, got {tuple(new.shape)} and {tuple(old.shape)}; "
            "use relational_distillation_loss when the models' dimensions differ"
        )
    return (1 - torch.nn.functional.cosine_similarity(new, old, dim=-1)).mean()


def relational_distillation_loss(new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """MSE between in-batch cosine similarity matrices of new (n, d2) and old (n, d1)."""
    if new.shape[0] != old.shape[0]:
        raise ValueError(f"relational distillation needs the same batch, got {new.shape[0]} and {old.shape[0]} rows")
    n = torch.nn.functional.normalize(new, dim=-1)
    o = torch.nn.functional.normalize(old, dim=-1)
    return torch.mean((n @ n.T - o @ o.T) ** 2)


class PreviousModelHook:
    """Stability term against a frozen previous model (any callable `list[str] -> (n, d) array`)."""

    def __init__(self, previous: Callable[[Sequence[str]], np.ndarray], weight: float = 1.0,
                 mode: str = "auto") -> None:
        if mode not in ("auto", "embedding", "relational"):
            raise ValueError("mode must be 'auto', 'embedding' or 'relational'")
        self.previous, self.weight, self.mode = previous, weight, mode

    def __call__(self, texts: Sequence[str], new_embeddings: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            old = torch.as_tensor(np.asarray(self.previous(list(texts))), dtype=new_embeddings.dtype,
                                  device=new_embeddings.device)
        mode = self.mode
        if mode == "auto":
            mode = "embedding" if old.shape[-1] == new_embeddings.shape[-1] else "relational"
        loss = embedding_distillation_loss(new_embeddings, old) if mode == "embedding" else \
            relational_distillation_loss(new_embeddings, old)
        return self.weight * loss
