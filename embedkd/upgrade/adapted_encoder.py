"""New documents after an upgrade: encode with v2, map into the index's (v1) space with its adapter.

`AdaptedEncoder` presents itself with the index's model record, so `indexer.build.add_documents`
accepts its vectors for the v1 index: only where an adapter registered for exactly this v2 model
and this index is active (fingerprints and checksum checked). Vectors written this way are an
approximation of v1's; a backfill later replaces every vector with v2's own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from indexer.adapters import Adapter, load_registered
from indexer.catalog import active_adapter, get_index
from indexer.context import Catalog
from indexer.encoder import ModelRecord

__all__ = ["AdaptedEncoder", "adapted_encoder_for_index"]


class AdaptedEncoder:
    """`list[str] -> (n, d_v1)`: v2 embeddings passed through a v2 -> v1 adapter."""

    def __init__(self, encoder: Any, adapter: Adapter, target: ModelRecord) -> None:
        if adapter.source_fingerprint != encoder.record.fingerprint or adapter.target_fingerprint != target.fingerprint:
            raise ValueError("the adapter does not map this encoder's model into the target model")
        self.encoder, self.adapter = encoder, adapter
        self.document_adapter = adapter.for_documents()  # a score map moves queries and documents differently
        self.record = replace(target, info={**target.info, "adapted_from": encoder.record.name})

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        return self.document_adapter.apply(self.encoder(list(texts)))

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        encode = getattr(self.encoder, "encode_queries", self.encoder)
        return self.adapter.apply(encode(list(texts)))


def adapted_encoder_for_index(catalog: Catalog, index_name: str, encoder: Any) -> AdaptedEncoder:
    """The v2 `encoder` wrapped with the index's active adapter for it (NotFound when there is none)."""
    with catalog.session() as s:
        index = get_index(s, index_name)
        row = active_adapter(s, index, encoder.record.fingerprint, encoder.record.source)
        adapter = load_registered(catalog.settings.adapter_dir, row)
        m = index.model
        target = ModelRecord(name=m.name, source=m.source, dimension=m.dimension, fingerprint=m.fingerprint,
                             kind=m.kind, normalized=m.normalized, info=dict(m.info or {}))
    return AdaptedEncoder(encoder, adapter, target)
