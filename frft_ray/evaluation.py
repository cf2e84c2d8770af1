"""Comparison statistics for evaluation: head-to-head win rate and mean with a 95% interval.

Intervals use the normal approximation on the per-item outcome mean (mean +- 1.96 * s / sqrt(n),
s the sample standard deviation); the win-rate interval is clipped to [0, 1]. We chose it over a
bootstrap because it is deterministic and needs no seed or resampling, and the outcomes are
bounded, so the approximation is sound at the evaluation sizes used (hundreds of prompts); it is
too narrow for a handful of items or for rates at 0 or 1 (then the interval collapses). With ties
counted as one half, a win-rate outcome is 1, 0.5 or 0 per prompt, so the same formula applies.
Over a handful of seeds (the sweep report), `mean_ci(..., small_sample=True)` widens the interval
with Student's t quantile for n - 1 degrees of freedom instead of 1.96.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

Z95 = 1.959963984540054
# Student t 0.975 quantiles for 1..30 degrees of freedom; beyond 30 the normal 1.96 is within 4%
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def _as_1d(x, name: str) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    arr = np.asarray(x, dtype=np.float64).reshape(-1)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or inf")
    return arr


def mean_ci(values: Sequence[float], small_sample: bool = False) -> dict:
    """{"mean", "ci95": [lo, hi], "std", "n"}: normal-approximation 95% interval of the mean, or with
    `small_sample` Student's t interval (for a few seeds)."""
    v = _as_1d(values, "mean_ci: values")
    n = len(v)
    if n == 0:
        raise ValueError("mean_ci: no values")
    mean = float(v.mean())
    std = float(v.std(ddof=1)) if n > 1 else 0.0
    crit = T975[n - 2] if small_sample and 2 <= n <= len(T975) + 1 else Z95
    half = crit * std / math.sqrt(n)
    return {"mean": mean, "ci95": [mean - half, mean + half], "std": std, "n": n}


def win_rate(scores_a: Sequence[float], scores_b: Sequence[float]) -> dict:
    """How often A beats B on the same prompts (item i of each): ties count one half.

    Returns {"estimate", "ci95": [lo, hi] (clipped to [0, 1]), "n", "wins", "ties", "losses"}.
    """
    a, b = _as_1d(scores_a, "win_rate: scores_a"), _as_1d(scores_b, "win_rate: scores_b")
    if len(a) != len(b):
        raise ValueError(f"win_rate: {len(a)} scores for A but {len(b)} for B (need one pair per prompt)")
    if len(a) == 0:
        raise ValueError("win_rate: no scores")
    wins, ties = int((a > b).sum()), int((a == b).sum())
    outcomes = (a > b) + 0.5 * (a == b)
    ci = mean_ci(outcomes)
    lo, hi = ci["ci95"]
    return {
        "estimate": ci["mean"],
        "ci95": [max(0.0, lo), min(1.0, hi)],
        "n": len(a),
        "wins": wins,
        "ties": ties,
        "losses": len(a) - wins - ties,
    }
