"""`frft-ray serve` as a user runs it, in a subprocess with a Ray of its own: a port another process
holds is refused before Ray starts; a server comes up, `frft-ray score` finds it through the state
file, `kill PID` stops it as cleanly as Ctrl-C (state file removed, no Ray process left); a state
file left by a server that is gone is removed, not waited on."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from serve_checkpoints import ckpts  # noqa: F401  (a fixture)
from session_procs import reap_session

REPO = Path(__file__).resolve().parents[1]
RAY_TMP = os.environ.get("FRFT_TEST_RAY_TMP", "/tmp/frft_test_ray") + "_servecli"
PORT = 18471

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def _cli(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "frft_ray.cli", *args], cwd=REPO, env=_env(), capture_output=True,
                          text=True, timeout=120, **kw)


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def test_a_port_in_use_is_refused_before_ray_starts(tmp_path):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        # the checkpoint is not even looked at: the port check comes first
        r = _cli("serve", "--checkpoint", str(tmp_path), "--port", str(port),
                 "--set", f"resources.temp_dir={tmp_path / 'ray'}")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert f"serve.port {port} on 127.0.0.1 is in use by another process" in r.stderr
    assert not (tmp_path / "ray").exists()  # no Ray instance was started


def test_serve_then_score_then_kill_then_a_stale_state_file(ckpts, tmp_path):  # noqa: F811
    state = tmp_path / "serve.json"
    proc = subprocess.Popen([sys.executable, "-m", "frft_ray.cli", "serve", "--checkpoint", ckpts[1],
                             "--port", str(PORT), "--state-file", str(state), "--set", f"resources.temp_dir={RAY_TMP}",
                             "--set", "resources.num_cpus=2"], cwd=REPO, env=_env(), start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        deadline = time.monotonic() + 180
        while "Ctrl-C to stop" not in "".join(lines):
            line = proc.stdout.readline()
            assert line or proc.poll() is None, f"serve exited {proc.poll()}: {proc.stderr.read()[-3000:]}"
            lines.append(line)
            assert time.monotonic() < deadline, "serve did not come up in 180 s"
        recorded = json.loads(state.read_text())
        assert recorded["pid"] == proc.pid and recorded["url"].startswith(f"http://127.0.0.1:{PORT}/")

        # no --url: the server the state file records
        r = _cli("score", "--state-file", str(state), "Human: hi", " Assistant: hello there")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["model_version"] == 1
        # a URL without the route prefix: the 404 says what --url should be
        r = _cli("score", "--url", f"http://127.0.0.1:{PORT}", "Human: hi", " hello")
        assert r.returncode == 1 and "HTTP 404" in r.stderr and "route prefix" in r.stderr

        proc.send_signal(signal.SIGTERM)  # `kill PID`
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err[-3000:]
        assert "SIGTERM received" not in err  # Ray's native handler did not take the signal
        assert not state.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
        leaked = reap_session(proc.pid)
    assert not leaked, f"processes of the server's Ray outlived it: {leaked}"

    # a record left by a server that died without cleaning up (SIGKILL): removed, with a warning
    state.write_text(json.dumps({**recorded, "pid": proc.pid}))
    r = _cli("serve", "--checkpoint", ckpts[2], "--reload", "--state-file", str(state))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert f"(pid {proc.pid}) is not running; record removed" in r.stderr
    assert "no running server recorded" in r.stderr and not state.exists()
