"""Tiny real Market-1501 slices for the ReID tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from .reid_testdata import MARKET, make_slice


@pytest.fixture(scope="session", autouse=True)
def _cpu_setup():
    torch.set_flush_denormal(True)
    torch.set_num_threads(1)  # tiny batches; one thread also copes far better with a busy shared CPU


@pytest.fixture(scope="session")
def market_slice(tmp_path_factory) -> Path:
    if not MARKET.is_dir():
        pytest.skip("Market-1501 data not found")
    return make_slice(tmp_path_factory.mktemp("market"))


@pytest.fixture(scope="session")
def trained_model(market_slice, tmp_path_factory) -> Path:
    """A model trained for one epoch (a couple of steps) at a tiny input size."""
    from reid.training import TrainOptions, train_reid

    out = tmp_path_factory.mktemp("model")
    train_reid(market_slice, out, TrainOptions(epochs=1, p=4, k=2, height=64, width=32, eval_every=0), quiet=True)
    return out
