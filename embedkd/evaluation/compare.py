"""Paired comparison of two systems on the same queries: is B better than A, or is it noise?"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

__all__ = ["paired_comparison", "standard_error"]


def standard_error(diff: np.ndarray) -> float:
    """Standard error of the mean of per-query (or per-piece) paired differences; 0 with fewer than 2."""
    diff = np.asarray(diff, dtype=np.float64)
    return float(diff.std(ddof=1) / math.sqrt(diff.size)) if diff.size > 1 else 0.0


def paired_comparison(a: np.ndarray, b: np.ndarray, confidence: float = 0.95) -> dict[str, float]:
    """Mean of per-query `b - a`, its standard error, a two-sided Student-t confidence interval and the
    paired t-test's p-value (the test IR evaluations recommend for per-query metrics; pairing removes
    the query-difficulty variance that makes two unpaired means look indistinguishable)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size < 2:
        raise ValueError(f"need two equal-length 1-d arrays of at least 2 queries, got {a.shape} and {b.shape}")
    diff = b - a
    n = diff.size
    mean = float(diff.mean())
    se = standard_error(diff)
    if se == 0.0:
        half, p = 0.0, (1.0 if mean == 0.0 else 0.0)
    else:
        half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * se)
        p = float(2 * stats.t.sf(abs(mean / se), n - 1))
    return {"queries": n, "mean_a": float(a.mean()), "mean_b": float(b.mean()), "diff": mean, "se": se,
            "ci_low": mean - half, "ci_high": mean + half, "confidence": confidence, "p_value": p,
            "b_better": int((diff > 0).sum()), "a_better": int((diff < 0).sum()), "ties": int((diff == 0).sum())}
