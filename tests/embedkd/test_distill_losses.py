"""Loss maths against values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from embedkd.distill.losses import (
    attention_relation_loss,
    listwise_kl,
    parse_loss_spec,
    previous_model_loss,
    relation_kl,
    value_relation_loss,
)
from indexer.errors import UserError

# KL([.75, .25] || [.5, .5]) = .75 ln 1.5 + .25 ln .5
KL_HAND = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)  # 0.130812...


def test_listwise_kl_hand_value():
    student = torch.tensor([[0.0, 0.0]])
    teacher = torch.tensor([[math.log(3.0), 0.0]])  # softmax -> [.75, .25]
    assert listwise_kl(student, teacher).item() == pytest.approx(KL_HAND, abs=1e-6)


def test_listwise_kl_temperature_scales_scores():
    # scores divided by T=0.5 give the hand case (no T^2 factor)
    student = torch.tensor([[0.0, 0.0]])
    teacher = torch.tensor([[0.5 * math.log(3.0), 0.0]])
    assert listwise_kl(student, teacher, temperature=0.5).item() == pytest.approx(KL_HAND, abs=1e-6)


def test_listwise_kl_mask_ignores_unscored_pairs():
    student = torch.tensor([[0.0, 0.0, 5.0]])
    teacher = torch.tensor([[math.log(3.0), 0.0, -7.0]])
    mask = torch.tensor([[True, True, False]])
    assert listwise_kl(student, teacher, mask=mask).item() == pytest.approx(KL_HAND, abs=1e-6)


def test_listwise_kl_zero_when_equal_and_mean_over_rows():
    s = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    assert listwise_kl(s, s).item() == pytest.approx(0.0, abs=1e-7)
    t = torch.tensor([[1.0, 2.0, 3.0], [math.log(3.0), 0.0, -1e9]])
    s2 = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, -1e9]])
    assert listwise_kl(s2, t).item() == pytest.approx(KL_HAND / 2, abs=1e-6)


def test_listwise_kl_shape_error():
    with pytest.raises(ValueError, match="batch, candidates"):
        listwise_kl(torch.zeros(2, 3), torch.zeros(2, 4))


def test_relation_kl_hand_value_with_padding():
    # one head, hidden 1: teacher row 0 logits [ln3, 0] -> [.75,.25]; row 1 [0, 0] -> uniform.
    # student all zeros -> uniform. Token 2 is padding: masked as key and ignored as query row.
    t_a = torch.tensor([[[1.0], [0.0], [9.0]]])
    t_b = torch.tensor([[[math.log(3.0)], [0.0], [9.0]]])
    s = torch.zeros(1, 3, 1)
    mask = torch.tensor([[1, 1, 0]])
    assert relation_kl(s, s, t_a, t_b, mask, heads=1).item() == pytest.approx(KL_HAND / 2, abs=1e-6)


def test_relation_kl_heads_split_hidden():
    # two heads of size 1: head 0 is the hand case, head 1 agrees (zero) -> mean KL_HAND / 4
    t_a = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    t_b = torch.tensor([[[math.log(3.0), 0.0], [0.0, 0.0]]])
    s = torch.zeros(1, 2, 2)
    mask = torch.ones(1, 2, dtype=torch.long)
    assert relation_kl(s, s, t_a, t_b, mask, heads=2).item() == pytest.approx(KL_HAND / 4, abs=1e-6)


def test_minilm_losses_accept_different_hidden_sizes_and_vanish_on_copy():
    torch.manual_seed(0)
    teacher = {k: torch.randn(2, 4, 8) for k in ("query", "key", "value")}
    student = {k: torch.randn(2, 4, 4, requires_grad=True) for k in ("query", "key", "value")}
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    loss = attention_relation_loss(student, teacher, mask, heads=2) + value_relation_loss(student, teacher, mask, heads=2)
    loss.backward()
    assert loss.item() > 0 and student["query"].grad is not None
    same = attention_relation_loss(teacher, teacher, mask, heads=4)
    assert same.item() == pytest.approx(0.0, abs=1e-6)


def test_relation_kl_rejects_other_tokenization():
    with pytest.raises(ValueError, match="same tokenizer"):
        relation_kl(torch.zeros(1, 3, 2), torch.zeros(1, 3, 2), torch.zeros(1, 4, 2), torch.zeros(1, 4, 2),
                    torch.ones(1, 3), heads=1)


def test_previous_model_loss_hand_values():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[0.0, 1.0], [0.0, 2.0]])
    # cos: 0 and 1 -> mean(1 - cos) = 0.5; mse: ((1+1) + (0+1)) / 4 = 0.75
    assert previous_model_loss(a, b).item() == pytest.approx(0.5)
    assert previous_model_loss(a, b, "mse").item() == pytest.approx(0.75)
    with pytest.raises(ValueError, match="differ"):
        previous_model_loss(a, torch.zeros(2, 3))


def test_parse_loss_spec():
    assert parse_loss_spec("cosine+kl") == {"cosine": 1.0, "kl": 1.0}
    assert parse_loss_spec("margin-mse=0.5, attention=2") == {"margin-mse": 0.5, "attention": 2.0}
    for bad in ("", "nope", "kl=x", "kl=-1"):
        with pytest.raises(UserError):
            parse_loss_spec(bad)
