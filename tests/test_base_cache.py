"""SFT + initial RM reused across runs (`resources.base_cache_dir`, frft_ray/base_cache.py)."""

import json
import os
import shutil
from pathlib import Path

import pytest

from frft_ray.base_cache import base_key, code_fingerprint
from frft_ray.config import load_config

RUNS = Path(os.environ["FRFT_TEST_RUNS"])
# one arm, one iteration of two PPO steps, the smallest base the micro config allows
SMALL = ["frft.arms=[vanilla]", "frft.alpha=1", "frft.steps_per_iteration=2", "sft.epochs=1",
         "reward.init_records=500", "eval.num_prompts=16"]


def test_the_key_follows_what_the_base_depends_on_and_the_code(tmp_path):
    base = base_key(load_config("micro"))
    for unrelated in ("ppo.lr=1e-3", "frft.alpha=1", "filter.threshold=0.5", "reward.refit_epochs=3",
                      "resources.base_cache_dir=/elsewhere"):
        assert base_key(load_config("micro", [unrelated])) == base, unrelated
    for dependency in ("seed=3", "sft.epochs=1", "reward.init_records=500", "models.tiny.n_embd=32",
                       "data.benchmark.seed=5"):
        assert base_key(load_config("micro", [dependency])) != base, dependency
    for pkg in ("frft_ray", "actors"):
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "a.py").write_text("x = 1\n")
    before = code_fingerprint(tmp_path)
    code_fingerprint.cache_clear()
    (tmp_path / "actors" / "a.py").write_text("x = 2\n")
    assert code_fingerprint(tmp_path) != before
    code_fingerprint.cache_clear()


@pytest.mark.slow
def test_a_second_run_reuses_the_first_runs_sft_and_initial_rm(ray_local, tmp_path):
    from frft_ray import driver

    cache = tmp_path / "bases"
    first_dir, second_dir = RUNS / "base-first", RUNS / "base-second"
    for d in (first_dir, second_dir):
        shutil.rmtree(d, ignore_errors=True)
    cfg = load_config("micro", [*SMALL, f"resources.base_cache_dir={cache}"])
    first = driver.run(cfg, first_dir)
    (entry,) = [p for p in cache.iterdir()]
    assert first["base_from"] is None and entry.name == f"{base_key(cfg)}-{code_fingerprint()}"
    assert "sft" in first["timing_s"] and "base" in first["timing_s"]

    # the same config again starts from the cached base, and ends where the run that trained it did
    second = driver.run(cfg, second_dir)
    assert second["base_from"] == str(entry.resolve())
    assert second["sft"] == first["sft"] and second["initial_rm"] == first["initial_rm"]
    assert second["gold_reward"] == first["gold_reward"]  # SFT and vanilla, bit for bit
    assert second["curves"] == first["curves"]
    # its own PPO ran: after one update the policy is off its reference (a sampled KL estimate may be < 0)
    assert len(second["curves"]["vanilla"]["kl"]) == 2 and second["curves"]["vanilla"]["kl"][-1] != 0
    assert not {"sft", "rm_fit", "base"} & set(second["timing_s"])  # it spent no time on them
    for part in ("sft", "rm-v0"):  # the run folder stands alone: no links out to the cache
        folder = second_dir / "ckpt" / part
        assert folder.is_dir() and not folder.is_symlink()
        assert (folder / "model.safetensors").read_bytes() == (entry / part / "model.safetensors").read_bytes()
    state = json.loads((second_dir / "ckpt" / "rm-v0" / "driver_state.json").read_text())
    assert state["base_from"] == str(entry.resolve()) and state["wall_s"] == 0.0
    cached = json.loads((entry / "rm-v0" / "driver_state.json").read_text())
    assert cached["base_from"] is None and cached["wall_s"] > 0  # the cache's own state is untouched
    assert "SFT + initial RM: reused from" in (second_dir / "run.log").read_text()
