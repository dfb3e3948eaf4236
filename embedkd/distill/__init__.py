"""Distillation of small text retrievers: teachers, pruned students, losses, mined negatives, training.

The names below load their module on first use, so importing one light submodule (a model load checks
`prune.is_prune_spec` on every model name) does not pull in the whole training pipeline.
"""

from __future__ import annotations

import importlib
from typing import Any

_MODULE_OF = {
    "DEFAULT_LOSS": "pipeline", "distill": "pipeline",
    "default_layers": "prune", "load_student": "prune", "parse_prune_spec": "prune", "prune_model": "prune",
    "BiEncoderTeacher": "teachers", "CrossEncoderTeacher": "teachers", "Teacher": "teachers", "load_teacher": "teachers",
    "Example": "train", "TrainOptions": "train", "train_student": "train",
}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_MODULE_OF[name]}", __name__), name)
