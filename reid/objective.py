"""The training objective of one PK batch: ID cross-entropy + metric loss (+ center), HQ->LQ distillation
from a teacher on the clean crop (feature, relation and, optionally, identity-logit terms) and coarse
attribute prediction, alternating step by step with distillation when both are on (RLQ's schedule).

The model stays an embedding function; the heads, the projector into the teacher's dimension and the
center loss's centres live here (`trained`), optimised and checkpointed beside the model."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .heads import TrainingHeads
from .losses import (
    CenterLoss,
    MetricLoss,
    attribute_loss,
    feature_distillation,
    logit_distillation,
    relation_distillation,
)
from .model import ReIDModel

__all__ = ["LossWeights", "ReIDObjective"]


@dataclass(frozen=True)
class LossWeights:
    label_smoothing: float
    center: float
    feature: float
    relation: float
    logits: float
    temperature: float
    attributes: float


class ReIDObjective:
    """Loss terms of a batch, by name and already weighted (`__call__`); the loss is their sum."""

    def __init__(self, heads: TrainingHeads, metric: str, weights: LossWeights, *, num_ids: int, dim: int,
                 teacher: ReIDModel | None = None, teacher_ids: Tensor | None = None,
                 attributes: bool = False) -> None:
        self.heads, self.metric, self.w = heads, MetricLoss(metric), weights
        self.center = CenterLoss(num_ids, dim) if weights.center > 0 else None
        self.projector = nn.Linear(dim, teacher.dim) if teacher is not None and teacher.dim != dim else nn.Identity()
        self.id_loss = nn.CrossEntropyLoss(label_smoothing=weights.label_smoothing)
        self.teacher, self.teacher_ids, self.attributes = teacher, teacher_ids, attributes
        # the trained parts, in the order checkpoints store them (the teacher is frozen and not among them)
        self.trained = nn.ModuleList([heads, self.projector] + ([self.center] if self.center else []))

    def distills(self, step: int) -> bool:
        return self.teacher is not None and (not self.attributes or step % 2 == 0)

    def predicts_attributes(self, step: int) -> bool:
        return self.attributes and (self.teacher is None or step % 2 == 1)

    def __call__(self, model: ReIDModel, student_x: Tensor, labels: Tensor, step: int,
                 teacher_x: Tensor | None = None, attribute_labels: Tensor | None = None) -> dict[str, Tensor]:
        """`teacher_x` (the clean crops) is needed where `distills(step)`, `attribute_labels` where
        `predicts_attributes(step)`."""
        pooled = model.pooled(student_x)
        emb = model.neck(pooled)
        terms = {"id": self.id_loss(self.heads.ids(emb), labels), "metric": self.metric(pooled, labels)}
        if self.center is not None:
            terms["center"] = self.w.center * self.center(pooled, labels)
        if self.distills(step):
            with torch.no_grad():
                size = (self.teacher.spec.height, self.teacher.spec.width)
                if teacher_x.shape[-2:] != size:  # a teacher trained at another input size
                    teacher_x = F.interpolate(teacher_x, size=size, mode="bilinear", align_corners=False)
                target = self.teacher(teacher_x.contiguous(memory_format=torch.channels_last))
            s = self.projector(emb)
            terms["kd_feat"] = self.w.feature * feature_distillation(s, target)
            terms["kd_rel"] = self.w.relation * relation_distillation(s, target)
            if self.teacher_ids is not None:
                terms["kd_logit"] = self.w.logits * logit_distillation(
                    self.heads.ids(emb), target.float() @ self.teacher_ids.T, self.w.temperature)
        if self.predicts_attributes(step):
            terms["attr"] = self.w.attributes * attribute_loss(self.heads.attributes(emb), attribute_labels)
        return terms
