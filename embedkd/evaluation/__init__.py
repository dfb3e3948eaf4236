"""Retrieval evaluation on BEIR-format data."""

from .beir import BeirData, load_beir
from .metrics import retrieval_metrics
from .retrieval import evaluate_index, evaluate_model, exact_run

__all__ = ["BeirData", "load_beir", "retrieval_metrics", "evaluate_index", "evaluate_model", "exact_run"]
