"""How far a training run is, for learning-rate schedules that end on time under a wall-clock budget."""

from __future__ import annotations

__all__ = ["run_fraction"]


def run_fraction(step: int, steps: int, elapsed_s: float, budget_s: float | None) -> float:
    """Share of the run done, in [0, 1]: by steps, or by time once the budget is set to run out first.

    Time counts only when it is more than one step ahead of the steps. Taking the larger of the two
    outright let wall time decide every learning rate of the first steps (at step 0 any time is ahead),
    so a run that fit its budget was not reproducible from its seed; now it follows its step schedule
    exactly, and a run that does not fit still ends its schedule on time."""
    frac = step / steps
    if budget_s:
        by_time = elapsed_s / budget_s
        if by_time > frac + 1 / steps:
            frac = by_time
    return min(frac, 1.0)
