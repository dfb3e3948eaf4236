"""The weighted objective composes sentence-transformers' losses; checked against hand values."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from embedkd.distill.losses import DistillObjective, StepTensors


class _FakeST(nn.Module):
    """Just what sentence-transformers' loss constructors read from a model."""

    def __init__(self, dim: int = 2) -> None:
        super().__init__()
        self.dim = dim
        self.w = nn.Parameter(torch.ones(1))

    @property
    def device(self):
        return torch.device("cpu")

    def get_embedding_dimension(self) -> int:
        return self.dim

    def get_sentence_embedding_dimension(self) -> int:
        return self.dim


def _step() -> StepTensors:
    # one query, positive and one negative, unit vectors in 2-d
    q = torch.tensor([[1.0, 0.0]])
    docs = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # student scores: pos 1, neg 0 -> margin 1
    return StepTensors(query=q, docs=docs, teacher_scores=torch.tensor([[0.8, 0.3]]),  # margin 0.5
                       teacher_query=q.clone(), teacher_docs=torch.tensor([[[0.0, 1.0], [0.0, 1.0]]]))


def test_margin_mse_term_hand_value():
    obj = DistillObjective(_FakeST(), {"margin-mse": 1.0})
    total, parts = obj(_step())
    assert parts["margin-mse"] == pytest.approx((1.0 - 0.5) ** 2)
    assert total.item() == pytest.approx(0.25)


def test_cosine_and_mse_terms_hand_values():
    obj = DistillObjective(_FakeST(), {"cosine": 1.0, "mse": 2.0})
    total, parts = obj(_step())
    # columns: query (cos 1), pos (cos 0), neg (cos 1) -> mean(1 - cos) = 1/3
    assert parts["cosine"] == pytest.approx(1 / 3)
    # squared error: 0, 2, 0 summed over dims, /2 dims per column, mean over columns -> 1/3
    assert parts["mse"] == pytest.approx(1 / 3)
    assert total.item() == pytest.approx(1 / 3 + 2 / 3)


def test_kl_term_in_batch_uses_teacher_embeddings():
    obj = DistillObjective(_FakeST(), {"kl": 1.0}, temperature=1.0)
    step = _step()
    _, parts = obj(step)
    # teacher scores from embeddings: q.pos = 0, q.neg = 0 -> uniform; student [1, 0]
    p = torch.tensor([0.5, 0.5])
    q = torch.softmax(torch.tensor([1.0, 0.0]), 0)
    assert parts["kl"] == pytest.approx(float((p * (p / q).log()).sum()), abs=1e-6)


def test_kl_term_adds_a_fused_teachers_lexical_scores_to_its_cosines():
    obj = DistillObjective(_FakeST(), {"kl": 1.0}, temperature=1.0)
    step = _step()
    step.teacher_lexical = torch.tensor([[math.log(3.0), 0.0]])  # cosines 0, 0 + lexical -> p = [3/4, 1/4]
    _, parts = obj(step)
    p = torch.tensor([0.75, 0.25])
    q = torch.softmax(torch.tensor([1.0, 0.0]), 0)
    assert parts["kl"] == pytest.approx(float((p * (p / q).log()).sum()), abs=1e-6)


def test_kl_term_cross_encoder_scores_only_own_candidates():
    obj = DistillObjective(_FakeST(), {"kl": 1.0}, temperature=1.0)
    step = _step()
    step.teacher_query = step.teacher_docs = None
    step.teacher_scores = torch.tensor([[math.log(3.0), 0.0]])
    step.docs = torch.tensor([[[0.0, 1.0], [0.0, 1.0]]])  # student uniform over its two candidates
    _, parts = obj(step)
    assert parts["kl"] == pytest.approx(0.75 * math.log(1.5) + 0.25 * math.log(0.5), abs=1e-6)


def test_projection_when_teacher_dimension_differs():
    obj = DistillObjective(_FakeST(dim=2), {"cosine": 1.0}, teacher_dim=3)
    assert obj.embed_cos.projection is obj.embed_mse.projection
    assert [p.shape for p in obj.trainable_parameters() if p.dim() == 2] == [torch.Size([3, 2])]
    step = _step()
    step.teacher_query = torch.randn(1, 3)
    step.teacher_docs = torch.randn(1, 2, 3)
    total, _ = obj(step)
    total.backward()
    assert obj.embed_cos.projection.weight.grad is not None


def test_labels_term_is_mnrl():
    obj = DistillObjective(_FakeST(), {"labels": 1.0})
    _, parts = obj(_step())
    # scale 20 * cos: pos 1, neg 0 -> -log(e^20 / (e^20 + 1))
    assert parts["labels"] == pytest.approx(math.log1p(math.exp(-20)), abs=1e-6)


def test_student_is_not_a_parameter_of_the_objective():
    obj = DistillObjective(_FakeST(), {"margin-mse": 1.0, "cosine": 1.0})
    assert all(not n.endswith(".w") for n, _ in obj.named_parameters())
