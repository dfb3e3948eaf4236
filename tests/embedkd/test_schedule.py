"""`run_fraction`: step schedules that end on time, and stay reproducible when the budget is not needed."""

from __future__ import annotations

import pytest

from embedkd.schedule import run_fraction


def test_a_run_that_fits_its_budget_follows_its_steps_exactly():
    # 100 steps, 1,000 s budget: time at most one step ahead never moves the fraction
    assert run_fraction(0, 100, 0.001, 1000.0) == 0.0  # was 1e-6: wall time set the first learning rates
    assert run_fraction(0, 100, 10.0, 1000.0) == 0.0  # 0.01 by time: exactly one step ahead, not more
    assert run_fraction(50, 100, 500.0, 1000.0) == 0.5
    assert run_fraction(50, 100, 0.0, None) == 0.5


def test_a_run_short_of_time_ends_its_schedule_on_time():
    assert run_fraction(10, 100, 500.0, 1000.0) == pytest.approx(0.5)
    assert run_fraction(10, 100, 2000.0, 1000.0) == 1.0
    assert run_fraction(100, 100, 0.0, 1000.0) == 1.0
