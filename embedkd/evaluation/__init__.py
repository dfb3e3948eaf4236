"""Retrieval evaluation on BEIR-format data."""

from .beir import BeirData, load_beir
from .compare import paired_comparison
from .metrics import METRICS, per_query_metrics, retrieval_metrics
from .retrieval import drop_identical_ids, evaluate_index, evaluate_model, exact_run, index_run, model_run
from .runs import read_trec_run, write_trec_run

__all__ = ["BeirData", "load_beir", "METRICS", "per_query_metrics", "retrieval_metrics", "paired_comparison",
           "drop_identical_ids", "evaluate_index", "evaluate_model", "exact_run", "index_run", "model_run",
           "read_trec_run", "write_trec_run"]
