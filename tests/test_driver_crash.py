"""The driver killed with SIGKILL mid-PPO, resumed, killed again mid-refit, then resumed: the run finishes
with every iteration exactly once and the summary of an uninterrupted run with the same seed.

Each run is a real `frft-ray run` subprocess with its own local Ray (address=local), in its own
session, so the test can check that no Ray process outlives the killed driver. The crash point comes
from the driver's test hook `FRFT_RAY_TEST_KILL_AT` (frft_ray/faults.py: the driver SIGKILLs itself
there), which makes the place of the crash exact instead of a race against log lines.

The uninterrupted result to match is the run of tests/resumed_run.py (stopped after iteration 1 on
purpose, scaled to 2 rollout workers, resumed; test_pipeline.py checks its resume and its endpoint):
the crashed run here is scaled at the same point, before iteration 2 runs, so both sample alike.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from resumed_run import OVERRIDES as REFERENCE_OVERRIDES
from session_procs import reap_session

from frft_ray.faults import KILL_AT_ENV

RUNS = Path(os.environ["FRFT_TEST_RUNS"])
REPO = Path(__file__).resolve().parents[1]
RAY_TMP = os.environ.get("FRFT_TEST_RAY_TMP", "/tmp/frft_test_ray") + "_crash"
# the reference run's settings (one arm, two iterations of two PPO steps), on a Ray of its own
OVERRIDES = [*REFERENCE_OVERRIDES, f"resources.temp_dir={RAY_TMP}"]
# Ray gives a starting raylet 30 s to register (fixed in Ray 2.60); on a loaded machine that can fail
# before the run did anything, so that one error is retried
RAY_START_TIMEOUT = "The current node timed out during startup"
TIMING_KEYS = {"timing_s", "timing", "seconds"}  # wall-clock numbers: all a crash may change in a summary
# where the two runs' configs differ on purpose: the reference's stop, endpoint and Ray temp dir
CONFIG_DIFFERENCES = {"serve", "temp_dir", "stop_after"}

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _frft_ray(args: list[str], kill_at: str | None = None) -> int:
    """Run `frft-ray` in a new session; return its exit status once it and every process of its
    session (its Ray: GCS, raylet, workers) are gone. Survivors fail the test, after being killed."""
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env.pop(KILL_AT_ENV, None)
    if kill_at:
        env[KILL_AT_ENV] = kill_at
    for attempt in range(3):
        proc = subprocess.Popen([sys.executable, "-m", "frft_ray.cli", "run", *args], cwd=REPO, env=env,
                                start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        _, err = proc.communicate(timeout=600)
        leaked = reap_session(proc.pid)  # survivors are killed by PID; the hanging node agents are tolerated
        assert not leaked, f"processes of the run's Ray outlived its driver: {leaked}"
        if RAY_START_TIMEOUT not in err:
            break
    if proc.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(f"frft-ray run {' '.join(args)} exited {proc.returncode}:\n{err[-3000:]}")
    return proc.returncode


def _run(run_dir: Path, kill_at: str | None = None) -> int:
    shutil.rmtree(run_dir, ignore_errors=True)
    args = ["--config", "micro", "--out", str(run_dir)]
    for o in OVERRIDES:
        args += ["--set", o]
    return _frft_ray(args, kill_at)


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _without(d, keys: set[str]):
    """`d` without the keys in `keys`, at every depth."""
    if isinstance(d, dict):
        return {k: _without(v, keys) for k, v in d.items() if k not in keys}
    return [_without(v, keys) for v in d] if isinstance(d, list) else d


def _without_timings(d):
    return _without(d, TIMING_KEYS)


def _frft_steps(run_dir: Path) -> list[int]:
    return [m["step"] for m in _metrics(run_dir) if "step" in m and m.get("arm") == "frft"]


def test_a_driver_killed_mid_ppo_then_mid_refit_resumes_to_the_uninterrupted_result(resumed_run):
    """Two crashes in one run (three processes instead of four): SIGKILL in iteration 1's first PPO
    step, resume, SIGKILL in iteration 2's refit, scale to 2 rollout workers, resume to the end."""
    reference = resumed_run.run_dir
    run_dir = RUNS / "crash-ppo-then-refit"
    assert _run(run_dir, "ppo:1:1") == -signal.SIGKILL
    assert not (run_dir / "summary.json").exists()
    assert (run_dir / "latest").read_text().strip() == "ckpt/rm-v0"
    assert _frft_steps(run_dir) == [1]  # the unfinished iteration had logged its first PPO step

    assert _frft_ray(["--resume", str(run_dir)], kill_at="refit:2") == -signal.SIGKILL
    assert not (run_dir / "summary.json").exists()
    assert (run_dir / "latest").read_text().strip() == "ckpt/frft-iter-001"
    assert _frft_steps(run_dir) == [1, 2]  # iteration 1 once: the killed step's line was dropped

    from frft_ray.cli import main

    assert main(["scale", str(run_dir), "--rollout-workers", "2"]) == 0  # as the reference did before iteration 2
    assert _frft_ray(["--resume", str(run_dir)]) == 0

    # every iteration and every PPO step exactly once, in the metrics and in the state
    metrics = _metrics(run_dir)
    assert [m["iteration"] for m in metrics if "records" in m] == [1, 2]
    assert _frft_steps(run_dir) == [1, 2, 3, 4]
    assert sum(m.get("phase") == "base" for m in metrics) == 1
    state = json.loads((run_dir / "ckpt/frft-iter-002/driver_state.json").read_text())
    assert [r["iteration"] for r in state["arms"]["frft"]["iterations"]] == [1, 2]
    assert state["rm_version"] == 2
    ref_state = json.loads((reference / "ckpt/frft-iter-002/driver_state.json").read_text())
    assert _without_timings(state["arms"]) == _without_timings(ref_state["arms"])
    # nothing half-written is left: no temporary checkpoint folders beside the finished ones
    assert not [p.name for p in (run_dir / "ckpt").rglob(".*.tmp")]

    # the finished summary is the uninterrupted run's, but for wall-clock timings
    got = json.loads((run_dir / "summary.json").read_text())
    want = json.loads((reference / "summary.json").read_text())
    for summary in (got, want):
        summary["config"] = _without(summary["config"], CONFIG_DIFFERENCES)
    assert _without_timings(got) == _without_timings(want)
