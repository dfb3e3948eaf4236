"""QDC's stability term: hand-worked values of both losses and the hook's mode choice."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from embedkd.upgrade.continual import (
    PreviousModelHook,
    embedding_distillation_loss,
    relational_distillation_loss,
)


def test_embedding_distillation_hand_values():
    new = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    old = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    # cosines 1 and 0 -> mean(1 - cos) = 0.5
    assert embedding_distillation_loss(new, old).item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="relational"):
        embedding_distillation_loss(new, torch.zeros(2, 3))


def test_relational_distillation_hand_values():
    new = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # similarity matrix I
    old = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])  # all ones
    # off-diagonal differences 1, two of four entries -> MSE 0.5
    assert relational_distillation_loss(new, old).item() == pytest.approx(0.5)
    assert relational_distillation_loss(old, old).item() == pytest.approx(0.0)


def test_hook_picks_mode_and_backpropagates():
    def prev(texts):
        return np.ones((len(texts), 3), np.float32)

    new = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    loss = PreviousModelHook(prev, weight=2.0)(["a", "b"], new)
    assert loss.item() == pytest.approx(1.0)
    loss.backward()
    assert new.grad is not None
    same = PreviousModelHook(lambda t: np.array([[1.0, 0.0], [1.0, 0.0]], np.float32))(["a", "b"], new.detach())
    assert same.item() == pytest.approx(0.5)
