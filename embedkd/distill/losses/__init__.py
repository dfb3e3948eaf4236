"""Distillation losses. Each one's maths is a function of tensors (tested against hand-worked values);
sentence-transformers' own losses are used where they fit (MarginMSELoss, EmbedDistillLoss,
MultipleNegativesRankingLoss), and only what it lacks is written here."""

from __future__ import annotations

from .listwise_kl import listwise_kl
from .minilm import attention_relation_loss, relation_kl, value_relation_loss
from .objective import TERMS, DistillObjective, StepTensors, parse_loss_spec
from .previous import previous_model_loss

__all__ = [
    "TERMS",
    "DistillObjective",
    "StepTensors",
    "attention_relation_loss",
    "listwise_kl",
    "parse_loss_spec",
    "previous_model_loss",
    "relation_kl",
    "value_relation_loss",
]
