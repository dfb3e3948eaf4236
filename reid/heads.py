"""Training-only heads on top of the embedding: the ID classifier and the coarse attribute heads.
They are dropped when the model is saved; the model itself returns only the embedding."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["TrainingHeads"]


class TrainingHeads(nn.Module):
    """`ids(embedding)` -> identity logits; `attributes(embedding)` -> one logit tensor per task.

    Args:
        dim: embedding size.
        num_ids: training identities.
        attribute_classes: classes per attribute task (empty: no attribute heads).
    """

    def __init__(self, dim: int, num_ids: int, attribute_classes: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.classifier = nn.Linear(dim, num_ids, bias=False)
        nn.init.normal_(self.classifier.weight, std=0.001)
        self.attribute_heads = nn.ModuleList(nn.Linear(dim, n) for n in attribute_classes)

    def ids(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.classifier(embedding)

    def attributes(self, embedding: torch.Tensor) -> list[torch.Tensor]:
        return [head(embedding) for head in self.attribute_heads]
