"""Win rate and mean intervals on hand-made inputs."""

import math

import pytest
import torch

from frft_ray.evaluation import mean_ci, win_rate


def test_win_rate_counts_ties_half():
    a = [3.0, 1.0, 2.0, 5.0, 0.0]
    b = [1.0, 1.0, 4.0, 2.0, 0.0]
    out = win_rate(a, b)
    assert (out["wins"], out["ties"], out["losses"], out["n"]) == (2, 2, 1, 5)
    assert out["estimate"] == pytest.approx((2 + 0.5 * 2) / 5)
    # outcomes 1, .5, 0, 1, .5: mean .6, sample sd sqrt(0.175)
    half = 1.959963984540054 * math.sqrt(0.175) / math.sqrt(5)
    assert out["ci95"] == pytest.approx([0.6 - half, 0.6 + half])


def test_win_rate_ci_clipped_and_symmetric():
    all_wins = win_rate(torch.ones(10), torch.zeros(10))
    assert all_wins["estimate"] == 1.0 and all_wins["ci95"] == [1.0, 1.0]
    even = win_rate(list(range(100)), list(range(99, -1, -1)))
    assert even["estimate"] == pytest.approx(0.5)
    lo, hi = even["ci95"]
    assert lo < 0.5 < hi and hi - 0.5 == pytest.approx(0.5 - lo)
    assert 0.0 <= lo and hi <= 1.0
    flipped = win_rate(list(range(99, -1, -1)), list(range(100)))
    assert flipped["estimate"] == pytest.approx(1 - even["estimate"])


def test_win_rate_rejects_bad_input():
    with pytest.raises(ValueError, match="3 scores for A but 2 for B"):
        win_rate([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="no scores"):
        win_rate([], [])
    with pytest.raises(ValueError, match="NaN"):
        win_rate([1.0, float("nan")], [0.0, 0.0])


def test_mean_ci():
    out = mean_ci([1.0, 2.0, 3.0, 4.0])
    sd = math.sqrt(5 / 3)
    assert out["mean"] == 2.5 and out["std"] == pytest.approx(sd) and out["n"] == 4
    assert out["ci95"] == pytest.approx([2.5 - 1.959963984540054 * sd / 2, 2.5 + 1.959963984540054 * sd / 2])
    assert mean_ci([7.0])["ci95"] == [7.0, 7.0]
    with pytest.raises(ValueError, match="no values"):
        mean_ci([])


def test_mean_ci_small_sample_uses_student_t():
    vals = [0.4, 0.5, 0.6, 0.7, 0.8]  # 5 seeds: std 0.158, t(4) = 2.776
    normal, t = mean_ci(vals), mean_ci(vals, small_sample=True)
    half = 2.776 * math.sqrt(0.025) / math.sqrt(5)
    assert t["ci95"] == pytest.approx([0.6 - half, 0.6 + half], abs=1e-6)
    assert t["ci95"][1] - t["ci95"][0] > normal["ci95"][1] - normal["ci95"][0]
    assert mean_ci([0.3], small_sample=True)["ci95"] == [0.3, 0.3]  # one seed: no interval to give


def test_report_png_is_skipped_with_a_warning_where_matplotlib_cannot_be_imported(tmp_path, monkeypatch):
    """A node set up by hand may lack matplotlib: the run's end (summary.json is already written) must not fail."""
    import logging
    import sys

    from frft_ray.summary import write_report

    seen = []
    handler = logging.Handler()
    handler.emit = seen.append
    logger = logging.getLogger("frft_ray")
    logger.addHandler(handler)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    try:
        assert write_report({"gold_reward": {"sft": 0.5}}, tmp_path / "report.png") is False
    finally:
        logger.removeHandler(handler)
    assert not (tmp_path / "report.png").exists()
    assert any("report.png not written" in r.getMessage() and r.levelno == logging.WARNING for r in seen)
