"""The training loop: resumable checkpoints, the time budget, and the previous-model hook (issue 4)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from embedkd.distill.losses import DistillObjective
from embedkd.distill.prune import load_student
from embedkd.distill.train import Example, TrainOptions, train_student
from tests.conftest import minilm_path

EXAMPLES = [
    Example("vitamin d and bones", ["vitamin d builds bone density", "stocks fell today"], [0.8, 0.1]),
    Example("smoking causes cancer", ["tobacco smoke is carcinogenic", "a recipe for bread"], [0.7, 0.0]),
    Example("exercise lowers blood pressure", ["aerobic training reduces hypertension", "rain in spain"], [0.6, 0.1]),
]


def _student():
    torch.manual_seed(0)
    model, _ = load_student(f"prune:{minilm_path()}:1", device="cpu")
    return model


def test_checkpoint_resume(tmp_path):
    options = TrainOptions(epochs=2, batch_size=2, checkpoint_every=1, max_length=16)  # ceil(2 * 3 / 2) = 3 steps
    model = _student()
    first = train_student(model, EXAMPLES, DistillObjective(model, {"margin-mse": 1.0}), options, tmp_path,
                          progress=False)
    assert first["steps"] == first["planned_steps"] == 3 and first["resumed_from"] == 0
    assert (tmp_path / "checkpoint" / "state.pt").is_file()
    again = _student()
    second = train_student(again, EXAMPLES, DistillObjective(again, {"margin-mse": 1.0}), options, tmp_path,
                           progress=False)
    assert second["resumed_from"] == 2  # the last checkpoint before the end
    other = TrainOptions(epochs=2, batch_size=2, checkpoint_every=1, max_length=16, lr=5e-5)
    third = train_student(_student(), EXAMPLES, DistillObjective(_student(), {"margin-mse": 1.0}), other, tmp_path,
                          progress=False)
    assert third["resumed_from"] == 0  # other settings: the checkpoint is not reused


def test_a_resumed_run_continues_the_general_text_stream(tmp_path):
    from embedkd.distill.general import GeneralTexts

    texts = [f"general text number {i}" for i in range(10)]
    drawn: list[list[str]] = []

    def encode(batch):
        drawn.append(batch)
        return np.ones((len(batch), 384), dtype=np.float32)

    options = TrainOptions(epochs=2, batch_size=2, checkpoint_every=1, max_length=16)  # 3 steps

    def run() -> dict:
        model = _student()
        return train_student(model, EXAMPLES, DistillObjective(model, {"margin-mse": 1.0}), options, tmp_path,
                             progress=False, general=GeneralTexts(texts, encode, batch_size=4), general_weight=0.5)

    assert run()["resumed_from"] == 0 and len(drawn) == 3
    whole, drawn[:] = list(drawn), []
    assert run()["resumed_from"] == 2
    assert drawn == whole[2:]  # not the stream's first batch again


def test_time_budget_stops_training(tmp_path):
    model = _student()
    options = TrainOptions(epochs=100, batch_size=2, time_budget_s=1e-9, max_length=16)
    res = train_student(model, EXAMPLES, DistillObjective(model, {"margin-mse": 1.0}), options, tmp_path,
                        progress=False)
    assert res["stopped"] == "time budget" and res["steps"] < res["planned_steps"]


def test_previous_model_term_pulls_towards_the_previous_embeddings(tmp_path):
    from sentence_transformers import SentenceTransformer

    model = _student()
    previous = SentenceTransformer(minilm_path(), device="cpu")
    texts = ["vitamin d builds bone density", "tobacco smoke is carcinogenic"]

    def gap() -> float:
        a = model.encode(texts, normalize_embeddings=True, convert_to_tensor=True)
        b = previous.encode(texts, normalize_embeddings=True, convert_to_tensor=True)
        return float((1 - (a * b).sum(-1)).mean())

    before = gap()
    options = TrainOptions(epochs=4, batch_size=3, lr=5e-4, warmup=0.0, max_length=16)
    res = train_student(model, EXAMPLES, DistillObjective(model, {"previous": 1.0}), options, tmp_path,
                        previous_model=previous, progress=False)
    assert res["loss"]["previous"] > 0
    assert gap() < before


def test_examples_must_have_equal_candidates(tmp_path):
    model = _student()
    bad = EXAMPLES + [Example("q", ["a", "b", "c"], [1.0, 0.0, 0.0])]
    with pytest.raises(ValueError, match="same number of candidates"):
        train_student(model, bad, DistillObjective(model, {"margin-mse": 1.0}), TrainOptions(), tmp_path)


def test_training_forward_of_a_prompted_model_is_its_search_time_embedding(tmp_path):
    """Queries and documents pass the model's own prompts in training exactly as `encode_query` /
    `encode_document` add them, so the student learns the function search will call."""
    from sentence_transformers import SentenceTransformer

    from embedkd.distill.train import _encode
    from tests.conftest import prompted_copy

    model = SentenceTransformer(prompted_copy(minilm_path(), tmp_path / "e5", {"query": "query: ",
                                                                               "passage": "passage: "}),
                                device="cpu").eval()
    texts = ["Vitamin D and bone loss", "Statins lower LDL cholesterol"]
    with torch.no_grad():
        q, _ = _encode(model, texts, "cpu", "query")
        d, _ = _encode(model, texts, "cpu")
    np.testing.assert_allclose(q.numpy(), model.encode_query(texts), atol=1e-5)
    np.testing.assert_allclose(d.numpy(), model.encode(["passage: " + t for t in texts]), atol=1e-5)
    assert np.abs(q.numpy() - d.numpy()).max() > 1e-3  # the roles differ
