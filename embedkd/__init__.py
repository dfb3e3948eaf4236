"""Distillation of embedding models, query-drift adapters and retrieval evaluation."""

__version__ = "0.1.0"
