"""The per-query fusion of teacher and labels, against values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from embedkd.distill.losses import DistillObjective, StepTensors, adaptive_listwise, listwise_kl
from tests.embedkd.test_distill_objective import _FakeST

# teacher softmax [.75, .25], student uniform [.5, .5]
KL_HAND = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)  # 0.130812
CE_HAND = math.log(2.0)  # -ln .5 for either positive
STUDENT = torch.tensor([[0.0, 0.0]])
TEACHER = torch.tensor([[math.log(3.0), 0.0]])


@pytest.mark.parametrize("pos, trust", [(0, 0.75), (1, 0.25)])
def test_weight_on_the_teacher_is_its_probability_of_the_labelled_positive(pos, trust):
    loss, a = adaptive_listwise(STUDENT, TEACHER, torch.tensor([pos]))
    assert a.item() == pytest.approx(trust)
    # pos 0: .75 * .130812 + .25 * .693147 = .271396; pos 1: .25 * .130812 + .75 * .693147 = .552563
    assert loss.item() == pytest.approx(trust * KL_HAND + (1 - trust) * CE_HAND, abs=1e-6)


def test_a_sure_teacher_gives_kl_and_a_teacher_that_rules_the_label_out_gives_the_labels():
    student = torch.tensor([[0.3, -0.2, 0.1]])
    sure = torch.tensor([[50.0, 0.0, 0.0]])
    loss, _ = adaptive_listwise(student, sure, torch.tensor([0]))
    assert loss.item() == pytest.approx(listwise_kl(student, sure).item(), abs=1e-5)
    loss, _ = adaptive_listwise(student, sure, torch.tensor([1]))  # teacher gives the positive ~0
    ce = -torch.log_softmax(student, 1)[0, 1]
    assert loss.item() == pytest.approx(ce.item(), abs=1e-5)


def test_gradient_is_the_cross_entropy_to_the_mixed_target():
    student = torch.tensor([[0.4, -0.1, 0.2], [0.0, 0.3, -0.5]], requires_grad=True)
    teacher = torch.tensor([[0.9, 0.2, 0.1], [0.1, 0.5, 0.6]])
    positive = torch.tensor([0, 1])
    loss, a = adaptive_listwise(student, teacher, positive, temperature=0.5)
    loss.backward()
    p = torch.softmax(teacher / 0.5, 1)
    target = a[:, None] * p + (1 - a[:, None]) * torch.nn.functional.one_hot(positive, 3)
    # d/ds of mean_i CE(target_i, softmax(s_i / T)) = (softmax - target) / (T * B)
    expected = (torch.softmax(student.detach() / 0.5, 1) - target) / (0.5 * 2)
    assert torch.allclose(student.grad, expected, atol=1e-6)


def test_mask_that_hides_a_positive_is_refused():
    with pytest.raises(ValueError, match="positive"):
        adaptive_listwise(STUDENT, TEACHER, torch.tensor([1]), mask=torch.tensor([[True, False]]))


def test_objective_term_uses_the_in_batch_teacher_and_logs_the_trust():
    # one query, positive and negative; teacher embeddings give cosines [0, 0] + lexical [ln 3, 0]
    q = torch.tensor([[1.0, 0.0]])
    step = StepTensors(query=q, docs=torch.tensor([[[0.0, 1.0], [0.0, 1.0]]]),  # student uniform
                       teacher_query=q.clone(), teacher_docs=torch.tensor([[[0.0, 1.0], [0.0, 1.0]]]),
                       teacher_lexical=TEACHER.clone())
    obj = DistillObjective(_FakeST(), {"adaptive": 2.0}, temperature=1.0)
    assert obj.needs_in_batch_teacher
    total, logs = obj(step)
    assert logs["trust"] == pytest.approx(0.75)
    assert logs["adaptive"] == pytest.approx(0.75 * KL_HAND + 0.25 * CE_HAND, abs=1e-6)
    assert total.item() == pytest.approx(2 * logs["adaptive"], abs=1e-6)
