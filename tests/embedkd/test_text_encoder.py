"""The text encoder: normalized float32 in input order, bf16 close to fp32, stable fingerprints."""

from __future__ import annotations

import numpy as np
import pytest

from embedkd.text_encoder import TextEncoder, resolve_precision
from indexer.errors import UserError

TEXTS = ["Aspirin lowers the risk of heart attack.", "x", "Vitamin D " * 40, "Statins and LDL cholesterol."]


def test_fp32_matches_sentence_transformers_in_input_order(minilm):
    got = minilm(TEXTS)
    ref = minilm.model.encode(TEXTS, normalize_embeddings=True)
    assert got.dtype == np.float32 and got.shape == (4, 384)
    np.testing.assert_allclose(got, ref, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_bf16_stays_close_to_fp32(minilm):
    bf16 = TextEncoder(minilm.model, name="m", precision="bf16")
    cos = (bf16(TEXTS) * minilm(TEXTS)).sum(1)
    assert cos.min() > 0.999
    assert bf16.record.fingerprint == minilm.record.fingerprint  # same weights, same space


def test_precision_choices():
    assert resolve_precision("fp32", "cpu") == "fp32"
    assert resolve_precision("auto", "cpu") in ("fp32", "bf16")
    with pytest.raises(UserError, match="precision"):
        resolve_precision("fp8", "cpu")
