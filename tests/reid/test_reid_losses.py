from __future__ import annotations

import pytest
import torch

from reid.attributes import ATTRIBUTE_TASKS, IGNORE, attribute_targets, load_attributes
from reid.losses import (
    CenterLoss,
    MetricLoss,
    attribute_loss,
    feature_distillation,
    logit_distillation,
    relation_distillation,
)

from .reid_testdata import ATTRIBUTES


def test_batch_hard_triplet_hand_value():
    # 1-D points on a circle-free line after L2 normalization: use 2-D unit vectors.
    e = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    labels = torch.tensor([0, 0, 1, 1])
    # anchor 0: hardest positive = item 1 (dist sqrt2), hardest negative = items 2/3 (dist 0) -> sqrt2 + 0.3
    # anchor 1: positive item 0 (sqrt2), negative 2/3 (sqrt2) -> 0.3
    # anchor 2: positive item 3 (0), hardest negative item 0 (0) -> 0.3
    # anchor 3: same -> 0.3
    expected = (2**0.5 + 0.3 + 0.3 * 3) / 4
    assert MetricLoss("triplet", margin=0.3)(e, labels).item() == pytest.approx(expected, abs=1e-4)


def test_metric_loss_zero_when_separated_and_shape_errors():
    e = torch.tensor([[1.0, 0.0], [1.0, 0.01], [-1.0, 0.0], [-1.0, 0.01]])
    labels = torch.tensor([0, 0, 1, 1])
    assert MetricLoss("triplet", margin=0.3)(e, labels).item() == pytest.approx(0.0, abs=1e-6)
    assert MetricLoss("circle")(e, labels).item() >= 0.0
    with pytest.raises(ValueError, match="labels"):
        MetricLoss()(e, labels[:3])
    with pytest.raises(ValueError, match="unknown metric"):
        MetricLoss("arcface")


def test_distillation_terms():
    t = torch.randn(6, 8)
    assert feature_distillation(t * 3, t).item() == pytest.approx(0.0, abs=1e-6)
    assert feature_distillation(-t, t).item() == pytest.approx(2.0, abs=1e-6)
    assert relation_distillation(t * 2, t).item() == pytest.approx(0.0, abs=1e-6)
    assert relation_distillation(torch.randn(6, 8), t).item() > 0.01
    # relation is rotation invariant, feature is not
    q, _ = torch.linalg.qr(torch.randn(8, 8))
    assert relation_distillation(t @ q, t).item() == pytest.approx(0.0, abs=1e-5)
    assert feature_distillation(t @ q, t).item() > 0.1
    s = torch.randn(6, 8, requires_grad=True)
    (feature_distillation(s, t) + relation_distillation(s, t)).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="shape"):
        feature_distillation(torch.randn(6, 4), t)


def test_logit_distillation_hand_value():
    # teacher softmax [1/4, 3/4], student uniform: KL = 1/4 ln(1/2) + 3/4 ln(3/2) = 0.130812
    teacher = torch.tensor([[0.0, float(torch.log(torch.tensor(3.0)))]])
    student = torch.zeros(1, 2, requires_grad=True)
    assert logit_distillation(student, teacher, temperature=1.0).item() == pytest.approx(0.130812, abs=1e-5)
    # at T = 2 the teacher's logits doubled give the same softmax; the loss is scaled by T^2
    assert logit_distillation(student, teacher * 2, temperature=2.0).item() == pytest.approx(4 * 0.130812, abs=1e-4)
    assert logit_distillation(teacher, teacher).item() == pytest.approx(0.0, abs=1e-6)
    logit_distillation(student, teacher).backward()
    assert student.grad[0, 1] < 0 < student.grad[0, 0]  # pushed toward the teacher's preferred identity
    with pytest.raises(ValueError, match="shape"):
        logit_distillation(torch.zeros(1, 3), teacher)


def test_center_loss_pulls_to_centers():
    loss = CenterLoss(2, 3)
    with torch.no_grad():
        loss.centers.copy_(torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]))
    e = torch.tensor([[1.0, 0, 0], [0, 3.0, 0]])
    assert loss(e, torch.tensor([0, 1])).item() == pytest.approx(2.0)


def test_attributes_from_market_csv_and_loss():
    table = load_attributes(ATTRIBUTES)
    assert len(table) > 1000
    targets = attribute_targets([2, 7, 999999], table)
    assert targets.shape == (3, len(ATTRIBUTE_TASKS))
    # 0002: gender 1 -> 0, age 2 -> 1, upred (3rd upper colour) -> 2, downblue (7th lower) -> 6
    names = [n for n, _ in ATTRIBUTE_TASKS]
    assert targets[0, names.index("gender")] == 0
    assert targets[0, names.index("age")] == 1
    assert targets[0, names.index("upcolor")] == 2
    assert targets[0, names.index("downcolor")] == 6
    assert (targets[2] == IGNORE).all()
    logits = [torch.zeros(3, n, requires_grad=True) for _, n in ATTRIBUTE_TASKS]
    value = attribute_loss(logits, torch.as_tensor(targets))
    expected = sum(torch.log(torch.tensor(float(n))) for _, n in ATTRIBUTE_TASKS) / len(ATTRIBUTE_TASKS)
    assert value.item() == pytest.approx(expected.item(), rel=1e-5)
    all_ignored = torch.full((2, len(ATTRIBUTE_TASKS)), IGNORE)
    assert attribute_loss([torch.zeros(2, n) for _, n in ATTRIBUTE_TASKS], all_ignored).item() == 0.0
