"""The text encoder: normalized float32 in input order, bf16 close to fp32, stable fingerprints."""

from __future__ import annotations

import numpy as np
import pytest

from embedkd.text_encoder import TextEncoder, default_batch_size, resolve_precision, role_prompts
from indexer.errors import UserError
from tests.conftest import prompted_copy

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


def test_batch_size_defaults_by_device_and_does_not_change_vectors(minilm):
    assert default_batch_size("cpu") == 16 and default_batch_size("cuda:0") == 64
    small = TextEncoder(minilm.model, name="m", precision="fp32")
    assert small.batch_size == 16  # a CPU model
    big = TextEncoder(minilm.model, name="m", batch_size=64, precision="fp32")
    np.testing.assert_allclose(small(TEXTS * 5), big(TEXTS * 5), atol=1e-5)


def test_precision_choices():
    assert resolve_precision("fp32", "cpu") == "fp32"
    assert resolve_precision("auto", "cpu") in ("fp32", "bf16")
    with pytest.raises(UserError, match="precision"):
        resolve_precision("fp8", "cpu")


def test_queries_and_documents_get_the_models_own_prompts(minilm, tmp_path):
    from embedkd.text_encoder import load_text_encoder

    path = prompted_copy(minilm.record.source, tmp_path / "prompted",
                          {"query": "search_query: ", "document": "search_document: "})
    enc = load_text_encoder(path, device="cpu", precision="fp32")
    plain = minilm.model
    docs, queries = enc(TEXTS), enc.encode_queries(TEXTS)
    np.testing.assert_allclose(docs, plain.encode(["search_document: " + t for t in TEXTS], normalize_embeddings=True),
                               atol=1e-5)
    np.testing.assert_allclose(queries, plain.encode(["search_query: " + t for t in TEXTS], normalize_embeddings=True),
                               atol=1e-5)
    assert (docs * queries).sum(1).min() < 0.99  # the two roles really differ
    assert enc.record.fingerprint == minilm.record.fingerprint  # prompts change inputs, not weights


def test_passage_prompt_is_a_document_prompt_and_no_prompt_means_one_space(minilm, tmp_path):
    from embedkd.text_encoder import load_text_encoder

    enc = load_text_encoder(prompted_copy(minilm.record.source, tmp_path / "e5", {"query": "query: ",
                                                                                   "passage": "passage: "}),
                            device="cpu", precision="fp32")
    np.testing.assert_allclose(enc(TEXTS[:1]), minilm.model.encode(["passage: " + TEXTS[0]], normalize_embeddings=True),
                               atol=1e-5)
    np.testing.assert_allclose(minilm.encode_queries(TEXTS), minilm(TEXTS), atol=1e-6)
    assert role_prompts(enc.model) == {"query": "query: ", "document": "passage: "}
    assert role_prompts(minilm.model) == {}
