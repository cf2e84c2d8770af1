"""Ray Jobs end to end: a real head started by the test (token auth on), a real submission through
`frft_ray.jobs.submit`, and the head stopped again by the PIDs it started (never `ray stop`, which
kills every Ray process on the machine).

The acceptance check submits a micro run (skipped while `frft_ray/driver.py` does not exist); a
second job checks the mechanism itself with `frft-ray data stats` plus a probe of the job's
interpreter, working dir, code and environment.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests

from frft_ray import jobs

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
HAS_DRIVER = (ROOT / "frft_ray" / "driver.py").is_file()


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _stop_tree(proc: subprocess.Popen) -> None:
    """End `ray start --block` and every process it started, by PID: SIGTERM to all of them at once (the
    head shuts its node down), SIGKILL to whatever is left after 3 s (a node agent ignores SIGTERM)."""
    import psutil

    try:
        procs = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        procs = []
    for p in procs:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=3)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    proc.wait(timeout=5)


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """A token-auth Ray head on 127.0.0.1 with its own ports, temp dir and token file."""
    token_file = tmp_path_factory.mktemp("auth") / "token"
    token_file.write_text(uuid.uuid4().hex)
    temp_dir = f"/tmp/frj{os.getpid()}"  # AF_UNIX paths under it must stay short
    gcs, dash, client, agent, metrics, rt_agent = _free_ports(6)
    env = dict(os.environ)
    env.update(
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",  # as if the venv were activated
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=str(token_file),
    )
    env.pop("RAY_AUTH_TOKEN", None)
    env.pop("RAY_ADDRESS", None)
    log = open(tmp_path_factory.mktemp("head") / "ray_start.log", "w")
    proc = subprocess.Popen(
        [str(VENV_BIN / "ray"), "start", "--head", "--block", "--disable-usage-stats",
         "--dashboard-host=127.0.0.1", "--num-cpus=2", f"--temp-dir={temp_dir}",
         f"--port={gcs}", f"--dashboard-port={dash}", f"--ray-client-server-port={client}",
         f"--dashboard-agent-listen-port={agent}", f"--metrics-export-port={metrics}",
         f"--runtime-env-agent-port={rt_agent}", f"--object-store-memory={200 * 2**20}"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    address = f"http://127.0.0.1:{dash}"
    headers = {"Authorization": f"Bearer {token_file.read_text()}"}
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, f"ray start exited early: {Path(log.name).read_text()[-2000:]}"
            try:
                if requests.get(f"{address}/api/version", headers=headers, timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, "the Ray dashboard did not come up in 120 s"
            time.sleep(1)
        yield {"address": address, "token_file": token_file, "temp_dir": temp_dir}
    finally:
        _stop_tree(proc)
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture
def client_env(monkeypatch, ray_head):
    """The submitting side: only the token file is known, RAY_AUTH_MODE is not exported."""
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(ray_head["token_file"]))
    return ray_head


@pytest.mark.slow
@pytest.mark.jobs
@pytest.mark.timeout(600)
@pytest.mark.skipif(not HAS_DRIVER, reason="frft_ray/driver.py is not written yet")
def test_submit_micro_run_to_success(client_env, tmp_path):
    """The issue's acceptance check: a micro run submitted to a real head finishes, with its summary."""
    address = client_env["address"]
    run_dir = tmp_path / "run"
    # the micro config at its smallest whole run (one arm, one iteration): the submission is what is tested
    small = ["frft.arms=[frft]", "frft.alpha=1", "frft.steps_per_iteration=2", "sft.epochs=1",
             "reward.init_records=500", "eval.num_prompts=16"]
    job_id = jobs.submit(address, config="micro", overrides=small, extra_args=["--out", str(run_dir)])
    final = jobs.wait(address, job_id, timeout_s=540)
    assert final == "SUCCEEDED", jobs.logs(address, job_id)[-4000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["gold_reward"].keys() == {"sft", "frft"} and summary["eval_prompts"] == 16
    assert len(summary["rm_records"]["frft"]) == 1


@pytest.mark.slow
@pytest.mark.jobs
@pytest.mark.timeout(300)
def test_job_runs_uploaded_code_with_venv_python_and_offline_env(client_env, tmp_path):
    """The mechanism under every submission: which python, which cwd, which code, which env."""
    address = client_env["address"]
    data = tmp_path / "pairs.jsonl"
    rows = [{"prompt": f"Q{i}:", "chosen": f" good answer {i}", "rejected": " no"} for i in range(7)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    probe = (
        "import json, os, sys, frft_ray; print('PROBE ' + json.dumps({'exe': sys.executable, "
        "'cwd': os.getcwd(), 'pkg': frft_ray.__file__, 'venv_uploaded': os.path.exists('.venv'), "
        "'git_uploaded': os.path.exists('.git'), 'offline': os.environ.get('HF_HUB_OFFLINE')}))"
    )
    entrypoint = (
        f"python -c {json.dumps(probe)} && "
        f"python -m frft_ray.cli data stats {data} --format jsonl --json --no-progress"
    )
    job_id = jobs.submit(address, entrypoint=entrypoint)
    assert job_id.startswith("raysubmit_")
    final = jobs.wait(address, job_id, timeout_s=240)
    out = jobs.logs(address, job_id)
    assert final == "SUCCEEDED", out[-3000:]
    assert jobs.status(address, job_id)[0] == "SUCCEEDED"

    probe_line = next(line for line in out.splitlines() if line.startswith("PROBE "))
    probe = json.loads(probe_line[len("PROBE "):])
    assert Path(probe["exe"]).parent == VENV_BIN, "the job must run the venv's python"
    assert probe["cwd"].startswith(client_env["temp_dir"]), "the job must run in the uploaded working_dir"
    assert Path(probe["pkg"]).resolve().is_relative_to(Path(probe["cwd"]).resolve()), "uploaded code must win"
    assert probe["venv_uploaded"] is False and probe["git_uploaded"] is False
    assert probe["offline"] == "1"
    stats = json.loads(next(line for line in out.splitlines() if line.startswith('{"path"')))
    assert stats["records"] == 7 and stats["skipped_total"] == 0


@pytest.mark.slow
@pytest.mark.jobs
@pytest.mark.timeout(300)
def test_stop_and_cli_status(client_env, capsys):
    from frft_ray.cli import main

    address = client_env["address"]
    job_id = jobs.submit(address, entrypoint="sleep 300")
    assert main(["jobs", "stop", job_id, "--address", address]) == 0
    assert jobs.wait(address, job_id, timeout_s=120) == "STOPPED"
    capsys.readouterr()
    assert main(["jobs", "status", job_id, "--address", address]) == 0
    assert capsys.readouterr().out.startswith("STOPPED")


@pytest.mark.slow
@pytest.mark.jobs
def test_wrong_or_missing_token_is_a_clear_error(ray_head, monkeypatch, tmp_path):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # this client sends no token
    with pytest.raises(jobs.JobError, match="token"):
        jobs.make_client(ray_head["address"])
    wrong = tmp_path / "wrong"
    wrong.write_text("0" * 32)
    monkeypatch.delenv("RAY_AUTH_MODE")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(wrong))
    with pytest.raises(jobs.JobError, match="refused our credentials"):
        jobs.make_client(ray_head["address"])


# ---------------------------------------------------------------- no cluster needed


def test_upload_over_limit_fails_before_upload_naming_the_biggest_entry(tmp_path):
    (tmp_path / "pyproject.toml").write_text("[project]\nname='x'\n")
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "big.bin").write_bytes(os.urandom(300_000))  # random: does not compress
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / "huge.bin").write_bytes(os.urandom(2_000_000))  # excluded, must not count
    size = jobs.check_package_size(tmp_path, limit=10 * 2**20)
    assert 300_000 < size < 400_000
    with pytest.raises(jobs.JobError, match=r"over Ray's limit.*weights/"):
        jobs.check_package_size(tmp_path, limit=200_000)


def test_submit_validates_config_and_paths_before_contacting_a_cluster(tmp_path):
    from frft_ray.config import ConfigError

    unreachable = "http://127.0.0.1:9"  # nothing listens: any network use would fail differently
    with pytest.raises(ConfigError, match="ppo.no_such_key|no_such_key"):
        jobs.submit(unreachable, config="micro", overrides=["ppo.no_such_key=1"])
    outside = tmp_path / "mine.yaml"
    outside.write_text("seed: 1\n")
    with pytest.raises(jobs.JobError, match="outside the uploaded folder"):
        jobs.submit(unreachable, config=str(outside))


def test_auth_headers_follow_rays_token_order(tmp_path):
    f = tmp_path / "t"
    f.write_text("from-file\n")
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text("from-home")
    assert jobs.auth_headers({"HOME": str(home), "RAY_AUTH_TOKEN": "from-env", "RAY_AUTH_TOKEN_PATH": str(f)}) == {
        "Authorization": "Bearer from-env"
    }
    assert jobs.auth_headers({"HOME": str(home), "RAY_AUTH_TOKEN_PATH": str(f)})["Authorization"] == "Bearer from-file"
    assert jobs.auth_headers({"HOME": str(home)})["Authorization"] == "Bearer from-home"
    assert jobs.auth_headers({"HOME": str(home), "RAY_AUTH_MODE": "disabled"}) == {}
    assert jobs.auth_headers({"HOME": str(tmp_path / "nohome")}) == {}
    with pytest.raises(jobs.JobError, match="RAY_AUTH_MODE=token but no Ray auth token"):
        jobs.auth_headers({"HOME": str(tmp_path / "nohome"), "RAY_AUTH_MODE": "token"})
    with pytest.raises(jobs.JobError, match="cannot read"):
        jobs.auth_headers({"HOME": str(home), "RAY_AUTH_TOKEN_PATH": str(tmp_path / "missing")})


def test_runtime_env_and_entrypoint():
    env = jobs.build_runtime_env(ROOT, local_env={"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "UNRELATED": "x"})
    assert env["working_dir"] == str(ROOT)
    assert {".git/", ".venv/", "runs/", "__pycache__/", "*.egg-info/"} <= set(env["excludes"])
    assert env["env_vars"] == {
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_OVERRIDE_JOB_RUNTIME_ENV": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    assert "HF_HUB_OFFLINE" not in jobs.build_runtime_env(ROOT, offline=False, local_env={})["env_vars"]
    with pytest.raises(jobs.JobError, match="RAY_AUTH_TOKEN"):
        jobs.build_runtime_env(ROOT, env_vars={"RAY_AUTH_TOKEN": "secret"}, local_env={})
    assert jobs.build_entrypoint("configs/micro.yaml", ["ppo.kl_coef=0.1", "out_dir=/a b"]) == (
        "python -m frft_ray.cli run --config configs/micro.yaml --set ppo.kl_coef=0.1 --set 'out_dir=/a b'"
    )
