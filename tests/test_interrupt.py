"""Ctrl-C during a run: one line that says how to continue (no traceback), exit status 130, and the
run's Ray gone with it."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from session_procs import reap_session

REPO = Path(__file__).resolve().parents[1]
RAY_TMP = os.environ.get("FRFT_TEST_RAY_TMP", "/tmp/frft_test_ray") + "_int"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def test_ctrl_c_mid_run_says_how_to_resume(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen([sys.executable, "-m", "frft_ray.cli", "run", "--config", "micro", "--out", str(out),
                             "--set", f"resources.temp_dir={RAY_TMP}"], cwd=REPO, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        lines, deadline = [], time.monotonic() + 180
        while "starting the run's roles" not in "".join(lines):  # Ray is up, the roles are starting
            line = proc.stderr.readline()
            assert line, f"run exited {proc.wait()} before starting its roles: {''.join(lines)[-2000:]}"
            lines.append(line)
            assert time.monotonic() < deadline
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
        leaked = reap_session(proc.pid)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert f"run interrupted; continue it after its last complete iteration with: frft-ray run --resume {out}" in err
    assert not leaked, f"processes of the run's Ray outlived it: {leaked}"
