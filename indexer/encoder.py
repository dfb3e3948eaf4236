"""What `indexer` knows of a model: a record and a callable that turns items into float32 vectors."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = ["ModelRecord", "Encoder", "check_embeddings"]


@dataclass(frozen=True)
class ModelRecord:
    """Identity of an embedding model. `fingerprint` is a hash of its weights: two records with the
    same fingerprint embed into the same space."""

    name: str
    source: str
    dimension: int
    fingerprint: str
    kind: str = "text"
    normalized: bool = True
    info: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Encoder(Protocol):
    record: ModelRecord

    def __call__(self, items: Sequence[Any]) -> np.ndarray:
        """Embed items (texts, image paths or images) as a float32 array of shape (n, dimension)."""
        ...


def check_embeddings(vectors: np.ndarray, n: int, record: ModelRecord) -> np.ndarray:
    """Guard the encoder contract so a wrong model never writes a malformed index."""
    arr = np.ascontiguousarray(vectors, dtype=np.float32)
    if arr.ndim != 2 or arr.shape != (n, record.dimension):
        raise ValueError(
            f"encoder {record.name!r} returned shape {arr.shape}, expected ({n}, {record.dimension})"
        )
    if not np.isfinite(arr).all():
        raise ValueError(f"encoder {record.name!r} returned NaN or infinite values")
    return arr
