"""Two runs on one cluster, each with its own RM endpoint (`frft_ray.phases.start_serving`): their own
app, version registry and route; a NaN score answered as a JSON error naming the item; a version
that fails to load reported by /health and retried; a resume whose registry is ahead; the endpoint
stopped as the run ends unless serve.keep_alive. Real HTTP on 127.0.0.1; the checkpoints are
tests/serve_checkpoints.py's plus a poisoned one.
"""

import logging
import shutil

import pytest
import requests
import torch

ray = pytest.importorskip("ray")
from ray import serve  # noqa: E402

from frft_ray import phases  # noqa: E402
from frft_ray.config import ModelsConfig, RunConfig, ServeConfig  # noqa: E402
from frft_ray.models import build_reward_model, load_tokenizer, save_checkpoint  # noqa: E402
from frft_ray.run_state import Published, RunState  # noqa: E402
from serve import launch  # noqa: E402
from serve_checkpoints import PAIRS, ckpts, direct, post  # noqa: E402,F401  (ckpts: a fixture)

PORT = 18433
POISON = "~"  # a token whose embedding row is NaN in run B's RM: any text holding it scores NaN


def _cfg(**serve_kw) -> RunConfig:
    # fp32 forced: the scores are compared to fp32 ones to 1e-5 (auto is bf16 on CPUs with bf16 hardware)
    return RunConfig(precision="fp32",
                     serve=ServeConfig(enabled=True, port=PORT, max_items=8, max_text_chars=200, **serve_kw))


@pytest.fixture(scope="module")
def runs(ckpts, tmp_path_factory, ray_local):
    """Run folders A (serve_checkpoints' v1 RM) and B (another RM, NaN for POISON), both served on the session Ray."""
    root = tmp_path_factory.mktemp("runs")
    run_a, run_b = root / "run-a", root / "run-b"
    shutil.copytree(ckpts[1], run_a / "ckpt" / "rm-v0")
    tok = load_tokenizer(ckpts[1])
    rm = build_reward_model(ModelsConfig(), tok, seed=7)
    with torch.no_grad():
        rm.transformer.wte.weight[tok.convert_tokens_to_ids(POISON)] = float("nan")
    save_checkpoint(run_b / "ckpt" / "rm-v0", rm, tok, None, {"version": 0})
    cfg = _cfg()
    eps = {}
    for name, run_dir in (("a", run_a), ("b", run_b)):
        ep = phases.start_serving(cfg, run_dir, RunState(rm0_path="ckpt/rm-v0"))
        eps[name] = (run_dir, ep, f"http://127.0.0.1:{PORT}{ep.route_prefix}")
    for _, _, url in eps.values():
        launch.wait_for_version(url, 0, timeout_s=120)
    yield eps
    for _, ep, _ in eps.values():
        launch.stop_server(ep.app_name)
    serve.shutdown()


def _score(url, pairs):
    r = post("/v1/score", {"items": [{"prompt": p, "response": q} for p, q in pairs]}, base=url)
    assert r.status_code == 200, r.text
    return r.json()


def test_two_runs_serve_their_own_rm(runs):
    (dir_a, ep_a, url_a), (dir_b, ep_b, url_b) = runs["a"], runs["b"]
    assert ep_a.app_name != ep_b.app_name and ep_a.route_prefix != ep_b.route_prefix
    info_a = requests.get(url_a + "/v1/model", timeout=10).json()
    info_b = requests.get(url_b + "/v1/model", timeout=10).json()
    assert info_a["checkpoint"] == str(dir_a / "ckpt" / "rm-v0") and info_b["checkpoint"] == str(dir_b / "ckpt" / "rm-v0")
    out_a, out_b = _score(url_a, PAIRS), _score(url_b, PAIRS)
    assert out_a["scores"] == pytest.approx(direct(dir_a / "ckpt" / "rm-v0", PAIRS), abs=1e-5)
    assert out_b["scores"] == pytest.approx(direct(dir_b / "ckpt" / "rm-v0", PAIRS), abs=1e-5)
    assert out_a["scores"] != pytest.approx(out_b["scores"], abs=1e-3)
    # each run has its own registry: B's versions do not block A's (the old shared registry refused this)
    assert launch.current_version(ep_a.app_name)["version"] == launch.current_version(ep_b.app_name)["version"] == 0


def test_non_finite_score_is_a_json_error_naming_the_item(runs):
    _, _, url_b = runs["b"]
    r = post("/v1/score", {"items": [{"prompt": "p", "response": "fine"}, {"prompt": "p", "response": POISON}]},
             base=url_b)
    assert r.status_code == 500, r.text
    err = r.json()
    assert err["error"] == "non_finite_score" and err["item"] == "items[1]" and err["model_version"] == 0
    assert "items[1]" in err["message"] and "nan" in err["message"]
    r = post("/get_reward", {"query": [f"a {POISON} b"]}, base=url_b)
    assert r.status_code == 500 and r.json()["item"] == "query[0]", r.text
    assert len(_score(url_b, [("p", "fine")])["scores"]) == 1  # the endpoint keeps serving


def test_failed_load_is_reported_by_health_and_retried(runs, ckpts, tmp_path):
    _, ep_a, url_a = runs["a"]
    broken = tmp_path / "rm-v1"
    shutil.copytree(ckpts[2], broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    launch.publish_rm(broken, 1, app_name=ep_a.app_name)
    health = _wait_health(url_a, lambda h: h["status"] == "degraded")
    assert health["model_version"] == 0 and health["wanted_version"] == 1
    assert "version 1 failed to load" in health["last_error"] and str(broken) not in health["last_error"]
    assert str(broken) in requests.get(url_a + "/v1/model", timeout=10).json()["last_error"]  # details behind auth
    # read-your-version asks for the broken version: the replica tries to load it on the request's path
    r = post("/v1/score", {"items": [{"prompt": "Q", "response": " A"}]}, base=url_a,
             headers={"X-Min-Model-Version": "1"})
    assert r.status_code == 503 and r.json()["error"] == "version_unavailable", r.text
    assert _score(url_a, PAIRS)["model_version"] == 0  # without the header it keeps serving version 0
    shutil.copy(f"{ckpts[2]}/model.safetensors", broken / "model.safetensors")  # the checkpoint is whole now
    assert launch.wait_for_version(url_a, 1, timeout_s=60)["model_version"] == 1  # retried without a new publish
    assert _wait_health(url_a, lambda h: h["status"] == "ok")["last_error"] is None
    assert _score(url_a, PAIRS)["scores"] == pytest.approx(direct(ckpts[2], PAIRS), abs=1e-5)


def test_resume_continues_past_a_registry_that_is_ahead(runs, ckpts, caplog):
    """A crash between publishing v1 and checkpointing it: the state says v0, the registry v1."""
    run_b, ep_b, url_b = runs["b"]
    rm0 = run_b / "ckpt" / "rm-v0"
    assert launch.publish_rm(rm0, 0, app_name=ep_b.app_name)["version"] == 0  # the same (version, path): no-op
    launch.publish_rm(ckpts[1], 1, app_name=ep_b.app_name)  # the crashed iteration's RM
    state = RunState(rm0_path="ckpt/rm-v0")
    with caplog.at_level(logging.INFO, logger="frft_ray"):
        phases.start_serving(_cfg(), run_b, state)
    assert state.published == Published("ckpt/rm-v0", 2) and state.rm_version == 2
    assert f"OpenRLHF remote_url: {url_b}/get_reward" in caplog.text
    assert launch.wait_for_version(url_b, 2, timeout_s=60)["model_version"] == 2
    assert requests.get(url_b + "/v1/model", timeout=10).json()["checkpoint"] == str(rm0)  # the state's RM
    phases.publish_rm(_cfg(), run_b, ckpts[2], state.rm_version + 1)  # the next refit is newer: no "not newer"
    assert launch.current_version(ep_b.app_name)["version"] == 3


def test_run_end_stops_the_endpoint_unless_keep_alive(runs):
    _, ep_a, url_a = runs["a"]
    phases.stop_serving(_cfg(keep_alive=True), ep_a)
    assert requests.get(url_a + "/health", timeout=10).status_code == 200
    phases.stop_serving(_cfg(), ep_a)
    assert requests.get(url_a + "/health", timeout=10).status_code == 404
    with pytest.raises(LookupError):
        launch.current_version(ep_a.app_name)
    assert launch.wait_for_version(runs["b"][2], 3, timeout_s=60)["model_version"] == 3  # the other run's: untouched


def _wait_health(url, ok, timeout_s=30.0):
    import time

    deadline, last = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        last = requests.get(url + "/health", timeout=10).json()
        if ok(last):
            return last
        time.sleep(0.2)
    raise AssertionError(f"/health never matched: {last}")
