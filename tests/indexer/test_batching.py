"""Dynamic query batching: concurrent callers share one model call and each gets its own vectors."""

from __future__ import annotations

import numpy as np
import pytest

from indexer.batching import QueryBatcher

from .helpers import run_concurrently

QUERIES = [f"does {w} raise the risk of heart disease" for w in
           ("smoking", "coffee", "salt", "sleep loss", "air pollution", "obesity", "stress", "alcohol")]


@pytest.mark.parametrize("max_running", [1, 2])
def test_concurrent_queries_share_model_calls(minilm, max_running):
    batcher = QueryBatcher(minilm, max_running=max_running)
    got = run_concurrently(batcher.encode_queries, [[q] for q in QUERIES])
    # the first caller(s) encode at once; the others queue meanwhile and share the next model call(s)
    assert sum(batcher.batch_sizes) == len(QUERIES) and len(batcher.batch_sizes) < len(QUERIES)
    alone = minilm.encode_queries(QUERIES)
    for i, vectors in enumerate(got):
        assert vectors.shape == (1, 384)
        assert float(vectors[0] @ alone[i]) > 0.9999  # each caller gets its own query's vector
    assert batcher.record == minilm.record


def test_max_batch_caps_a_model_call(minilm):
    batcher = QueryBatcher(minilm, max_batch=3)
    got = run_concurrently(batcher.encode_queries, [[q] for q in QUERIES[:6]])
    assert all(isinstance(v, np.ndarray) for v in got)
    assert max(batcher.batch_sizes) <= 3 and sum(batcher.batch_sizes) == 6


def test_a_bad_request_fails_alone(minilm):
    batcher = QueryBatcher(minilm, max_batch=4)
    got = run_concurrently(batcher.encode_queries, [[QUERIES[0]], [None], [QUERIES[1]], [QUERIES[2]]])
    assert isinstance(got[1], Exception)
    alone = minilm.encode_queries(QUERIES[:3])
    for i, j in ((0, 0), (2, 1), (3, 2)):
        assert float(got[i][0] @ alone[j]) > 0.9999
    assert batcher.encode_queries([QUERIES[3]]).shape == (1, 384)  # an error leaves the batcher usable


def test_documents_pass_through_unbatched(minilm):
    batcher = QueryBatcher(minilm)
    np.testing.assert_allclose(batcher(QUERIES[:2]), minilm(QUERIES[:2]), atol=1e-6)
    assert batcher.batch_sizes == []
    for bad in ({"max_batch": 0}, {"max_running": 0}):
        with pytest.raises(ValueError, match="must be at least 1"):
            QueryBatcher(minilm, **bad)
