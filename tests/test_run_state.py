"""The typed run state: round trip, old run folders, newer formats, atomic writes."""

import json

import pytest

from frft_ray.run_state import (
    STATE_FORMAT,
    ArmState,
    InitialRM,
    IterationRecord,
    Published,
    RunState,
    RunStateError,
    atomic_write_text,
    read_latest,
    write_latest,
)

# driver_state.json as the first releases wrote it (an untyped dict, no "format" key)
V1_STATE = {
    "arms": {"vanilla": {"iterations": [{
        "arm": "vanilla", "iteration": 1, "path": "ckpt/vanilla-iter-001", "rollout_workers": 1, "samples": 64,
        "records": 2800, "rm_heldout": 0.56, "rm_version": 0, "rm_on_policy": 0.48, "rm_heldout_gold": 0.4,
        "rm_heldout_policy_like": 0.9, "score_first": -0.05, "score_last": 0.02, "scores": [-0.05, 0.0, 0.02],
        "ppo_samples": 96, "timing": {"generate": 1.5}}], "done": False}},
    "timing": {"sft": 18.7, "rm_fit": 54.7},
    "rm_version": 0,
    "sft_path": "ckpt/sft",
    "rm0_path": "ckpt/rm-v0",
    "sft": {"loss_start": 6.9, "loss_end": 4.2},
    "rm0": {"records": 2800, "heldout": 0.565},
    "wall_s": 100.0,
}


def _state() -> RunState:
    rec = IterationRecord(arm="frft", iteration=1, path="ckpt/frft-iter-001", rollout_workers=2, samples=64,
                          records=120, selection={"count": 120, "strategy": "chosen"}, rm_version=1,
                          rm_heldout=0.6, rm_fit_loss=0.65, scores=[0.1, 0.2], score_first=0.1, score_last=0.2)
    return RunState(sft_path="ckpt/sft", rm0_path="ckpt/rm-v0", sft={"loss_end": 4.2},
                    rm0=InitialRM(records=2800, heldout=0.565), arms={"frft": ArmState([rec], done=True)},
                    timing={"ppo": 1.5}, rm_version=1, published=Published("ckpt/frft-iter-001/rm", 1), wall_s=12.5)


def test_state_round_trips_through_latest(tmp_path):
    ckpt = tmp_path / "ckpt" / "frft-iter-001"
    ckpt.mkdir(parents=True)
    write_latest(tmp_path, ckpt, _state())
    assert (tmp_path / "latest").read_text().strip() == "ckpt/frft-iter-001"
    got_dir, got = read_latest(tmp_path)
    assert got_dir == ckpt and got == _state()
    assert got.arms["frft"].last.rm_fit_loss == 0.65 and got.base_done
    assert json.loads((ckpt / "driver_state.json").read_text())["format"] == STATE_FORMAT


def test_a_first_release_state_still_loads_and_resumes_as_typed():
    s = RunState.from_dict(V1_STATE)
    assert s.format == STATE_FORMAT and s.rm0 == InitialRM(records=2800, heldout=0.565)
    rec = s.arms["vanilla"].last
    assert rec.records == 2800 and rec.selection is None and rec.scores[-1] == 0.02
    assert s.published is None and not s.arms["vanilla"].done


def test_a_newer_or_foreign_state_fails_naming_the_format(tmp_path):
    with pytest.raises(RunStateError, match="state format 99"):
        RunState.from_dict({**V1_STATE, "format": 99}, origin="x/driver_state.json")
    with pytest.raises(RunStateError, match="not a run state"):
        RunState.from_dict({**V1_STATE, "surprise": 1})
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "driver_state.json").write_text('{"arms": ')  # truncated by a crash
    (tmp_path / "latest").write_text("ckpt\n")
    with pytest.raises(RunStateError, match="not valid JSON"):
        read_latest(tmp_path)


def test_atomic_write_keeps_the_old_file_when_the_write_fails(tmp_path):
    f = tmp_path / "summary.json"
    atomic_write_text(f, "old")

    with pytest.raises(TypeError):
        atomic_write_text(f, 12345)  # not text: fails mid-write
    assert f.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_each_run_folder_logs_to_its_own_run_log_and_lets_go_after(tmp_path):
    """RunFolder owns run.log: lines logged while it is open land there, not after it closes, and the
    next run's folder (a sweep's next cell, in the same process) does not write into the first's."""
    import logging

    from frft_ray.config import load_config
    from frft_ray.driver import RunFolder

    log = logging.getLogger("frft_ray")
    handlers_before = list(log.handlers)
    cfg = load_config("micro")
    first = RunFolder.open(cfg, tmp_path / "a", resume=False)
    log.info("line of run a")
    first.close()
    second = RunFolder.open(cfg, tmp_path / "b", resume=False)
    log.info("line of run b")
    second.close()
    log.info("line of no run")
    a, b = (tmp_path / "a" / "run.log").read_text(), (tmp_path / "b" / "run.log").read_text()
    assert "line of run a" in a and "line of run b" not in a and "line of no run" not in a
    assert "line of run b" in b and "line of run a" not in b and "line of no run" not in b
    assert log.handlers == handlers_before
