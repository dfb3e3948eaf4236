"""Distillation of small text retrievers: teachers, pruned students, losses, mined negatives, training."""

from __future__ import annotations

from .pipeline import DEFAULT_LOSS, distill
from .prune import default_layers, load_student, parse_prune_spec, prune_model
from .teachers import BiEncoderTeacher, CrossEncoderTeacher, Teacher, load_teacher
from .train import Example, TrainOptions, train_student

__all__ = [
    "DEFAULT_LOSS",
    "BiEncoderTeacher",
    "CrossEncoderTeacher",
    "Example",
    "Teacher",
    "TrainOptions",
    "default_layers",
    "distill",
    "load_student",
    "load_teacher",
    "parse_prune_spec",
    "prune_model",
    "train_student",
]
