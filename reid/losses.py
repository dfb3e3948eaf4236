"""ReID losses. Identity and metric losses compose pytorch-metric-learning parts; RLQ's HQ->LQ
distillation terms and the attribute loss are plain functions of tensors, testable without a model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .attributes import IGNORE

__all__ = [
    "MetricLoss",
    "CenterLoss",
    "feature_distillation",
    "relation_distillation",
    "logit_distillation",
    "attribute_loss",
    "METRICS",
]

METRICS = ("triplet", "circle")


class MetricLoss(nn.Module):
    """Batch-hard triplet (pytorch-metric-learning `BatchHardMiner` + `TripletMarginLoss`) or circle
    loss (`CircleLoss`, all pairs). Takes (n, d) embeddings and (n,) labels from a P x K batch.

    Args:
        kind: "triplet" or "circle".
        margin: triplet margin on L2-normalized embeddings (Euclidean distance, in 0..2).
    """

    def __init__(self, kind: str = "triplet", margin: float = 0.3) -> None:
        super().__init__()
        from pytorch_metric_learning import losses, miners

        if kind not in METRICS:
            raise ValueError(f"unknown metric loss {kind!r}; choose from {METRICS}")
        self.kind = kind
        if kind == "triplet":
            self.miner = miners.BatchHardMiner()
            self.loss = losses.TripletMarginLoss(margin=margin)
        else:
            self.miner = None
            self.loss = losses.CircleLoss(m=0.25, gamma=64)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if embeddings.dim() != 2 or labels.shape != embeddings.shape[:1]:
            raise ValueError(
                f"expected (n, d) embeddings and (n,) labels, got {tuple(embeddings.shape)} and {tuple(labels.shape)}"
            )
        embeddings = embeddings.float()
        if self.miner is None:
            return self.loss(embeddings, labels)
        return self.loss(embeddings, labels, self.miner(embeddings, labels))


class CenterLoss(nn.Module):
    """Center loss (Wen et al. 2016): mean squared distance of each embedding to its class center,
    the centers being learned parameters (BoT weights it 5e-4)."""

    def __init__(self, num_classes: int, dim: int) -> None:
        super().__init__()
        self.centers = nn.Parameter(torch.randn(num_classes, dim) * 0.01)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return (embeddings.float() - self.centers[labels]).pow(2).sum(dim=1).mean()


def feature_distillation(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """HQ->LQ feature term: mean (1 - cosine) between each student embedding (of the degraded crop)
    and the teacher embedding of the same clean crop. 0 when directions agree; at most 2."""
    if student.shape != teacher.shape:
        raise ValueError(
            f"student {tuple(student.shape)} and teacher {tuple(teacher.shape)} embeddings differ in shape"
        )
    return (1.0 - F.cosine_similarity(student.float(), teacher.float().detach(), dim=1)).mean()


def relation_distillation(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """HQ->LQ relation term: mean squared difference between the batch's pairwise cosine-similarity
    matrices, so LQ crops keep the teacher's neighbourhood structure (task agnostic)."""
    if student.shape != teacher.shape:
        raise ValueError(
            f"student {tuple(student.shape)} and teacher {tuple(teacher.shape)} embeddings differ in shape"
        )
    s = F.normalize(student.float(), dim=1)
    t = F.normalize(teacher.float().detach(), dim=1)
    return (s @ s.T - t @ t.T).pow(2).mean()


def logit_distillation(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 4.0) -> torch.Tensor:
    """Hinton's KD on identity logits: T^2 KL(softmax(teacher / T) || softmax(student / T)), averaged
    over the batch. The teacher's soft identity scores on the clean crop tell the student of the
    degraded crop which other identities look alike; T^2 keeps the gradient scale independent of T."""
    if student.shape != teacher.shape:
        raise ValueError(f"student {tuple(student.shape)} and teacher {tuple(teacher.shape)} logits differ in shape")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    t = F.log_softmax(teacher.float().detach() / temperature, dim=1)
    s = F.log_softmax(student.float() / temperature, dim=1)
    return F.kl_div(s, t, reduction="batchmean", log_target=True) * temperature**2


def attribute_loss(logits: list[torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over attribute tasks; targets (n, tasks) with IGNORE for unknown labels.
    Tasks whose targets are all IGNORE add nothing."""
    if targets.dim() != 2 or targets.shape[1] != len(logits):
        raise ValueError(f"targets must be (n, {len(logits)}), got {tuple(targets.shape)}")
    terms = [
        F.cross_entropy(out.float(), targets[:, i], ignore_index=IGNORE)
        for i, out in enumerate(logits)
        if (targets[:, i] != IGNORE).any()
    ]
    if not terms:
        return logits[0].sum() * 0.0
    return torch.stack(terms).mean()
