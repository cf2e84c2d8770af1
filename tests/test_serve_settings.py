"""Who may reach the RM endpoint, decided before anything starts: the token (file or env var), the
refusal of a non-loopback bind without one, and the token kept out of a job's env. No Ray here."""

import hashlib
from pathlib import Path

import pytest

from frft_ray.config import ConfigError, ServeConfig, load_config
from frft_ray.jobs import JobError, build_runtime_env
from serve.launch import Endpoint, url_lines
from serve.settings import ReplicaSettings, check_bind, resolve_token


def test_token_file_wins_over_env(tmp_path):
    f = tmp_path / "tok"
    f.write_text("from-file\n")
    cfg = ServeConfig(auth_token_file=str(f), auth_token_env="FRFT_TEST_TOK")
    assert resolve_token(cfg, {"FRFT_TEST_TOK": "from-env"}) == "from-file"
    assert resolve_token(ServeConfig(auth_token_env="FRFT_TEST_TOK"), {"FRFT_TEST_TOK": " from-env "}) == "from-env"
    assert resolve_token(ServeConfig(auth_token_env="FRFT_TEST_TOK"), {}) is None


@pytest.mark.parametrize("content,needle", [(None, "cannot read"), ("  \n", "is empty")])
def test_bad_token_file_names_the_key(tmp_path, content, needle):
    f = tmp_path / "tok"
    if content is not None:
        f.write_text(content)
    with pytest.raises(ConfigError, match=f"serve.auth_token_file: .*{needle}"):
        resolve_token(ServeConfig(auth_token_file=str(f)), {})


def test_non_loopback_bind_needs_a_token_or_allow_insecure(tmp_path, monkeypatch):
    monkeypatch.delenv("FRFT_RAY_TOKEN", raising=False)
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.5"):
        check_bind(ServeConfig(host=host), None)
    with pytest.raises(ConfigError, match=r"serve.host=0.0.0.0 .*serve.auth_token_file.*serve.allow_insecure=true"):
        ReplicaSettings.from_config(ServeConfig(host="0.0.0.0"))
    with pytest.raises(ConfigError, match="serve.host=rm.example.org"):
        check_bind(ServeConfig(host="rm.example.org"), None)
    assert ReplicaSettings.from_config(ServeConfig(host="0.0.0.0", allow_insecure=True)).token_sha256 is None
    f = tmp_path / "tok"
    f.write_text("s3cret")
    settings = ReplicaSettings.from_config(ServeConfig(host="0.0.0.0", auth_token_file=str(f)))
    assert settings.token_sha256 == hashlib.sha256(b"s3cret").hexdigest()  # the hash travels, never the token


def test_paper_config_binds_all_interfaces_only_with_a_token_file():
    serve_cfg = load_config(Path(__file__).parents[1] / "configs" / "hh-rlhf-gpt2-medium.yaml").serve
    assert serve_cfg.host == "0.0.0.0" and serve_cfg.auth_token_file and not serve_cfg.allow_insecure
    assert not serve_cfg.keep_alive


def test_submit_refuses_the_endpoint_token_in_clear(tmp_path):
    with pytest.raises(JobError, match="FRFT_RAY_TOKEN"):
        build_runtime_env(tmp_path, env_vars={"FRFT_RAY_TOKEN": "s3cret"})


def test_endpoint_names_follow_the_folder(tmp_path):
    a, b = Endpoint.for_folder(tmp_path / "x" / "demo"), Endpoint.for_folder(tmp_path / "y" / "demo")
    assert a.route_prefix.startswith("/demo-") and a.app_name == "frft_rm-" + a.route_prefix[1:]
    assert a != b  # same name, different folders: different endpoints
    assert Endpoint.for_folder(tmp_path / "x" / "." / "demo") == a  # the same folder finds its own again
    assert Endpoint.for_folder(tmp_path / "a b?c").route_prefix.startswith("/a-b-c-")
    lines = url_lines("http://127.0.0.1:8000/demo-1", ["http://127.0.0.1:30000/demo-1"])
    assert "OpenRLHF remote_url: http://127.0.0.1:8000/demo-1/get_reward" in lines
    assert any("http://127.0.0.1:30000/demo-1" in line for line in lines)
