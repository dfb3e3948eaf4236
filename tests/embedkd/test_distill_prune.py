"""Depth pruning of a real sentence-transformers model."""

from __future__ import annotations

import numpy as np
import pytest

from embedkd.distill.prune import default_layers, load_student, parse_prune_spec, prune_model
from indexer.errors import UserError
from tests.conftest import minilm_path


def test_default_layers_even_spacing_keeps_first_and_last():
    assert default_layers(6, 3) == [0, 3, 5]
    assert default_layers(6, 2) == [0, 5]
    assert default_layers(6, 1) == [5]
    assert default_layers(6, 6) == [0, 1, 2, 3, 4, 5]
    assert default_layers(12, 4) == [0, 4, 7, 11]
    with pytest.raises(UserError, match="cannot keep 7 layers"):
        default_layers(6, 7)
    with pytest.raises(UserError):
        default_layers(6, 0)


def test_parse_prune_spec_forms_and_errors():
    spec = parse_prune_spec("prune:/a/b:c/model:3")
    assert (spec.model, spec.count, spec.layers) == ("/a/b:c/model", 3, None)
    assert parse_prune_spec("prune:m:0,2,5").layers == (0, 2, 5)
    for bad in ("prune:m", "prune::3", "prune:m:x", "prune:m:2,1", "prune:m:1,1", "m:3"):
        with pytest.raises(UserError):
            parse_prune_spec(bad)


def test_pruned_student_keeps_named_layers_and_round_trips(tmp_path):
    from sentence_transformers import SentenceTransformer

    model, info = load_student(f"prune:{minilm_path()}:0,5", device="cpu")
    assert info["kept_layers"] == [0, 5] and info["pruned_from_layers"] == 6
    layers = model[0].auto_model.encoder.layer
    assert len(layers) == 2 and model[0].auto_model.config.num_hidden_layers == 2
    texts = ["a claim about cells", "an unrelated sentence"]
    before = model.encode(texts, normalize_embeddings=True)
    model.save(str(tmp_path / "s"))
    again = SentenceTransformer(str(tmp_path / "s"), device="cpu")
    assert len(again[0].auto_model.encoder.layer) == 2
    np.testing.assert_allclose(again.encode(texts, normalize_embeddings=True), before, atol=1e-5)


def test_pruned_model_keeps_the_teachers_weights_for_kept_layers():
    from sentence_transformers import SentenceTransformer

    teacher = SentenceTransformer(minilm_path(), device="cpu")
    student, _ = load_student(f"prune:{minilm_path()}:1", device="cpu")
    t_last = teacher[0].auto_model.encoder.layer[5].output.dense.weight
    s_only = student[0].auto_model.encoder.layer[0].output.dense.weight
    assert (t_last == s_only).all()


def test_out_of_range_layers_are_a_clear_error():
    with pytest.raises(UserError, match="cannot keep 9 layers of a model with 6"):
        load_student(f"prune:{minilm_path()}:9", device="cpu")
    with pytest.raises(UserError, match="out of range"):
        load_student(f"prune:{minilm_path()}:0,6", device="cpu")
    with pytest.raises(UserError, match="cannot load model"):
        load_student("prune:/no/such/model:2", device="cpu")


def test_prune_model_rejects_empty_selection():
    from sentence_transformers import SentenceTransformer

    with pytest.raises(UserError):
        prune_model(SentenceTransformer(minilm_path(), device="cpu"), [])
