"""The experiment runner (frft_ray/sweep.py): grid files, the shared SFT/RM cache, skip on re-run, the report."""

import json
import os
import shutil
from pathlib import Path

import pytest

from frft_ray.config import ConfigError, load_config
from frft_ray.base_cache import base_key
from frft_ray.sweep import load_grid

RUNS = Path(os.environ["FRFT_TEST_RUNS"])
REPO = Path(__file__).resolve().parent.parent

# The smallest whole run: one vanilla arm, one PPO step, a 300-pair pool
TINY = ["data.benchmark.sft_size=128", "data.benchmark.pool_size=300", "data.benchmark.eval_prompts=16",
        "sft.epochs=1", "reward.heldout_pairs=50", "rollout.filter_prompts=8", "eval.num_prompts=16",
        "eval.onpolicy_pairs=8", "frft.arms=[vanilla]", "frft.alpha=1", "frft.steps_per_iteration=1",
        "ppo.batch_size=16", "ppo.minibatch_size=8", "serve.enabled=false"]


def _write_grid(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_grid_cells_are_the_product_of_the_axes(tmp_path):
    grid = load_grid(_write_grid(tmp_path / "g.yaml", """
base: micro
set: ["frft.arms=[vanilla, frft]"]
axes:
  seed: [[seed=0, data.benchmark.seed=0], [seed=1, data.benchmark.seed=1]]
  threshold: [filter.threshold=0.7, filter.threshold=0.9]
  alpha: [frft.alpha=1]
"""))
    assert grid.name == "g" and len(grid.cells) == 4
    assert [c.name for c in grid.cells][:2] == ["seed-0+0__threshold-0.7__alpha-1", "seed-0+0__threshold-0.9__alpha-1"]
    cell = grid.cells[3]
    assert cell.overrides == ["frft.arms=[vanilla, frft]", "seed=1", "data.benchmark.seed=1", "filter.threshold=0.9",
                              "frft.alpha=1"]
    assert cell.group == (("threshold", "0.9"), ("alpha", "1"))
    cfg = grid.config(cell)
    assert cfg.seed == 1 and cfg.filter.threshold == 0.9 and cfg.frft.arms == ["vanilla", "frft"]


def test_grid_errors_name_the_cell_and_key(tmp_path):
    bad = _write_grid(tmp_path / "bad.yaml", "base: micro\naxes:\n  budget: [filter.budget=100, filter.budgit=5]\n")
    with pytest.raises(ConfigError, match=r"cell budget-5: .*filter.budgit"):
        load_grid(bad)
    with pytest.raises(ConfigError, match="unknown grid key"):
        load_grid(_write_grid(tmp_path / "b2.yaml", "base: micro\naxis: {}\n"))
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_grid(_write_grid(tmp_path / "b3.yaml", "base: micro\naxes:\n  seed: [3]\n"))
    with pytest.raises(ConfigError, match="b4.yaml: not valid YAML"):
        load_grid(_write_grid(tmp_path / "b4.yaml", "base: micro\naxes:\n  seed: [seed=1\n"))


def test_base_key_follows_what_sft_and_the_initial_rm_depend_on():
    k = base_key(load_config("micro"))
    assert base_key(load_config("micro", ["filter.threshold=0.5", "frft.alpha=3", "reward.refit_lr=1e-3"])) == k
    for change in ("seed=1", "data.benchmark.annotators=uniform", "sft.epochs=1", "reward.init_epochs=2"):
        assert base_key(load_config("micro", [change])) != k, change


def test_committed_grids_load():
    paths = sorted((REPO / "configs" / "grids").glob("*.yaml"))
    assert {p.stem for p in paths} >= {"ablation", "headline", "seeds", "seeds_uniform"}
    for path in paths:  # every committed grid, so `make report` never meets a bad cell
        grid = load_grid(path)
        for cell in grid.cells:
            cfg = grid.config(cell)
            pool = cfg.data.benchmark.pool_size
            assert cfg.filter.budget <= 0.12 * pool, (path.stem, cell.name)  # the filtered budget stays ~10% of the pool
    headline = load_grid(REPO / "configs" / "grids" / "headline.yaml")
    assert len(headline.axes["seed"]) >= 5 and set(headline.axes["annotators"]) == {"uniform", "adversarial"}
    cfg = headline.config(headline.cells[0])
    assert set(cfg.frft.arms) == {"oracle", "vanilla", "frft", "random_refit"}
    assert cfg.data.benchmark.pool_size >= 20000 and cfg.filter.budget == 2000 and cfg.reward.init_records == "all"


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sweep_runs_two_cells_shares_the_base_skips_on_rerun_and_writes_the_report(ray_local, capsys):
    from frft_ray.cli import main

    out, docs, archive = RUNS / "sweep", RUNS / "sweep-docs", RUNS / "sweep-archive"
    for d in (out, docs, archive):
        shutil.rmtree(d, ignore_errors=True)
    grid = _write_grid(out / "tiny.yaml", "base: micro\nset: [" + ", ".join(f'"{o}"' for o in TINY) + "]\n"
                       "axes:\n  kl: [ppo.kl_coef=0.05, ppo.kl_coef=0.2]\n")
    other = "## Grid `other`\n\nAn earlier sweep's section, kept as it is.\n"
    _write_grid(docs / "results.md", "# Results\n\n" + other)
    argv = ["sweep", "--grid", str(grid), "--out", str(out), "--archive", str(archive),
            "--results", str(docs / "results.md"), "--img-dir", str(docs / "img")]
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert "cell tiny/kl-0.05: ran, SFT + initial RM trained" in first
    assert "cell tiny/kl-0.2: ran, SFT + initial RM cached" in first  # same seed and data: shared
    cells = [out / "tiny" / "kl-0.05", out / "tiny" / "kl-0.2"]
    assert (cells[1] / "ckpt" / "sft").is_symlink() and (cells[1] / "ckpt" / "rm-v0").is_symlink()
    s0, s1 = (json.loads((c / "summary.json").read_text()) for c in cells)
    assert s0["initial_rm"] == s1["initial_rm"] and s1["config"]["ppo"]["kl_coef"] == 0.2
    assert json.loads((cells[1] / "cell.json").read_text())["base"] == "cached"
    # each cell logs to its own run.log (its own folder only), the sweep's run.log has both
    logs = [(c / "run.log").read_text() for c in cells]
    assert "SFT: " in logs[0] and "SFT: " not in logs[1]  # the second cell's base came from the cache
    assert "resuming from rm-v0" in logs[1] and "resuming from" not in logs[0]  # ... and its lines stay out of the first's
    assert all(x.count("[vanilla it 1/1]") == 1 for x in logs)
    assert (out / "run.log").read_text().count("[vanilla it 1/1]") == 2
    mtimes = [(c / "summary.json").stat().st_mtime_ns for c in cells]

    assert main(argv) == 0  # the re-run skips both finished cells
    second = capsys.readouterr().out
    assert second.count(": skipped") == 2 and ": ran" not in second
    assert [(c / "summary.json").stat().st_mtime_ns for c in cells] == mtimes
    md = (docs / "results.md").read_text()
    assert "## Grid `tiny`" in md and "2 cells, 2 finished" in md
    assert "| kl=0.05 | vanilla |" in md and "| kl=0.2 | sft |" in md and "vanilla_vs_sft" in md
    assert (docs / "img" / "tiny-gold-vs-kl.png").stat().st_size > 5_000
    assert other in md and md.index(other) < md.index("## Grid `tiny`")  # another grid's section stays, in its place

    # each finished cell's summary is archived: with the run folders gone, the cells still count as
    # finished (nothing runs) and the report is the same
    for c in cells:
        assert (archive / "tiny" / c.name / "summary.json").read_text() == (c / "summary.json").read_text()
    shutil.rmtree(out / "tiny")
    assert main(argv) == 0
    third = capsys.readouterr().out
    assert third.count(": skipped") == 2 and ": ran" not in third and not (out / "tiny").exists()
    assert (docs / "results.md").read_text() == md
    # the grid edited under the same name: its finished cells ran other settings, so the sweep refuses
    # (exit 2, naming the cell and what changed) instead of reporting them as the new settings' results
    _write_grid(grid, grid.read_text().replace("sft.epochs=1", "sft.epochs=2"))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "cell kl-0.05 finished in" in err and "sft.epochs=2" in err and "with other settings" in err
    assert (docs / "results.md").read_text() == md
    # nothing of the grid found (another checkout): its section stays as it is, not "no cell has finished"
    argv[argv.index("--archive") + 1] = str(archive / "elsewhere")
    assert main(argv + ["--report-only"]) == 0
    assert (docs / "results.md").read_text() == md


def test_paired_differences_compare_groups_seed_by_seed():
    """Two groups that differ on one axis: an arm's gold in the second minus the first, per shared seed."""
    from frft_ray.sweep_report import Finished, _paired_lines

    def cell(group, seed, frft, vanilla=None):
        gold = {"sft": 0.9, "frft": frft} | ({"vanilla": vanilla} if vanilla is not None else {})
        return Finished(group, {"gold_reward": gold}, {}, seed)

    a = (("annotators", "uniform"), ("refit", "current"))
    b = (("annotators", "uniform"), ("refit", "initial"))
    c = (("annotators", "adversarial"), ("refit", "initial"))  # differs from a on two axes: not paired with it
    groups = {a: [cell(a, "0", 0.2, -1.0), cell(a, "1", 0.5, -1.2), cell(a, "2", 0.1)],
              b: [cell(b, "0", 0.7), cell(b, "1", 0.8)],  # no seed 2: only seeds 0 and 1 are paired
              c: [cell(c, "0", 0.3)]}
    lines = _paired_lines(groups)
    rows = lines[lines.index("|---|---|---|---|") + 1:]
    assert rows[0] == "| annotators=uniform | frft | refit: current → initial | 0.400 ± 1.271 (n=2) |"
    assert rows[1] == "| refit=initial | frft | annotators: uniform → adversarial | -0.400 (n=1) |"  # b -> c
    assert len(rows) == 2  # vanilla ran in one group only; sft is the same policy in every group
    assert _paired_lines({a: groups[a]}) == []
