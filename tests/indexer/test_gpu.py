"""The torch exact-search path gives the FAISS CPU index's results (on CPU here, on CUDA with -m gpu)."""

from __future__ import annotations

import numpy as np
import pytest

from indexer import store
from indexer.gpu import TorchExactIndex, gpu_available, to_gpu


def _check(device: str) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3000, 64)).astype(np.float32)
    q = rng.standard_normal((16, 64)).astype(np.float32)
    for metric in ("ip", "l2"):
        index = store.make_index(64, "Flat", metric)
        index.add_with_ids(x, np.arange(10, 3010))
        d_cpu, i_cpu = index.search(q, 10)
        d_t, i_t = TorchExactIndex(index, metric, device=device).search(q, 10)
        assert (i_cpu == i_t).mean() > 0.99
        np.testing.assert_allclose(d_cpu, d_t, rtol=1e-3, atol=1e-3)


def test_torch_exact_search_matches_faiss_on_cpu():
    _check("cpu")


def test_to_gpu_without_gpu_returns_the_index():
    index = store.make_index(8, "Flat")
    if not gpu_available():
        assert to_gpu(index, "Flat", "ip") is index


@pytest.mark.gpu
@pytest.mark.skipif(not gpu_available(), reason="no GPU")
def test_torch_exact_search_matches_faiss_on_gpu():
    _check("cuda")
