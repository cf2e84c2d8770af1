"""The RM endpoint over real HTTP on 127.0.0.1: scores, OpenRLHF format, the score CLI, batching,
hot swap, through Serve's proxy URL and again straight on each replica's own port (direct ingress).
What it refuses (bad input, limits, auth) is tests/test_serve_errors.py.

One Serve instance for the module on the session's Ray; two apps (serve_checkpoints.serve_two_apps):
`frft_rm` (no auth, at /) and `frft_rm_auth` (bearer token, at /auth).
"""

import concurrent.futures as cf
import json
import math
import threading
import time
from pathlib import Path

import pytest
import requests

ray = pytest.importorskip("ray")

import serve_checkpoints  # noqa: E402
from frft_ray.config import ServeConfig  # noqa: E402
from serve import launch  # noqa: E402
from serve_checkpoints import (  # noqa: E402,F401  (ckpts: a fixture)
    AUTH_APP, PAIRS, TEXTS, TOKEN, ckpts, direct, serve_two_apps, two_app_replicas,
)

PORT = 18431
URL = f"http://127.0.0.1:{PORT}"


@pytest.fixture(scope="module")
def server(ckpts, ray_local):  # noqa: F811  (the session's shared local Ray instance: tests/conftest.py)
    yield from serve_two_apps(ckpts, PORT)


post = serve_checkpoints.post_to(URL)  # another base= for the other apps


def test_scores_match_direct_rm(server, ckpts):
    r = post("/v1/score", {"items": [{"prompt": p, "response": q} for p, q in PAIRS]})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["model_version"] == 1
    assert out["scores"] == pytest.approx(direct(ckpts[1], PAIRS), abs=1e-5)
    info = requests.get(URL + "/v1/model", timeout=10).json()
    assert info["model_version"] == 1 and info["iteration"] == 0 and info["heldout_accuracy"] == pytest.approx(0.6)
    assert info["checkpoint"] == ckpts[1] and info["device"] == "cpu/fp32"  # placement.serve: no GPU; fp32 forced
    assert requests.get(URL + "/health", timeout=10).json() == {"status": "ok", "model_version": 1,
                                                                 "wanted_version": 1, "last_error": None}


def test_request_timeout_reaches_the_proxy(server):
    """serve.request_timeout_s reaches Serve's proxy (a request sent to a replica as it was killed could
    otherwise wait for ever: docs/serve.md, Soak). Read from the Serve controller's own report."""
    from ray.serve.context import _get_global_client

    http = _get_global_client().get_serve_details()["http_options"]
    assert http["request_timeout_s"] == ServeConfig().request_timeout_s == 60.0
    assert (http["host"], http["port"]) == ("127.0.0.1", PORT)


def test_score_cli_prints_the_rms_score_and_names_what_failed(server, ckpts, capsys):
    """`frft-ray score` end to end: the RM's score and version; a 401 (not retried) and an address where
    nothing listens (retried, then given up) exit 1 with the reason on stderr."""
    from frft_ray.cli import main

    prompt, response = PAIRS[0]
    assert main(["score", "--url", URL, prompt, response]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model_version"] == 1 and out["score"] == pytest.approx(direct(ckpts[1], PAIRS[:1])[0], abs=1e-5)
    assert main(["score", "--url", server[1], prompt, response]) == 1  # the auth app, no token given
    assert "HTTP 401" in capsys.readouterr().err
    assert main(["score", "--url", "http://127.0.0.1:9", prompt, response]) == 1
    assert "no answer from http://127.0.0.1:9 after 3 tries" in capsys.readouterr().err


def test_light_traffic_is_scored_on_the_event_loop(server, ckpts):
    """One client, one request at a time: after the first, each lone request is scored inline (no hop to
    the worker thread), with the same scores; the auth app (inline_forward_ms=0) never does."""
    expect = direct(ckpts[1], PAIRS[:1])
    body = {"items": [{"prompt": PAIRS[0][0], "response": PAIRS[0][1]}]}
    for base in (URL, server[1]):
        headers = {"Authorization": f"Bearer {TOKEN}"} if base != URL else None
        before = requests.get(base + "/v1/model", headers=headers, timeout=10).json()["batching"]
        for _ in range(6):
            r = post("/v1/score", body, headers=headers, base=base)
            tol = 1e-5 if base == URL else 0.05  # the auth app serves bf16
            assert r.status_code == 200 and r.json()["scores"] == pytest.approx(expect, abs=tol)
        after = requests.get(base + "/v1/model", headers=headers, timeout=10).json()["batching"]
        inline = after["inline"] - before["inline"]
        assert (inline >= 4) if base == URL else (inline == 0), (base, before, after)


@pytest.mark.parametrize("client", ["aiohttp", "threads"])
def test_the_benchmark_load_generator_scores_every_request(server, client):
    """benchmarks/serve_load.py, both clients, against the live endpoint: every request answered
    with one reward per query, latencies measured."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from serve_load import load

    for batch in (1, 3):
        r = load(URL + "/get_reward", concurrency=4, per_client=3, batch=batch, client=client, queries=TEXTS[:20])
        assert (r["requests"], r["errors"]) == (12, 0) and r["queries_s"] == pytest.approx(r["req_s"] * batch)
        assert 0 < r["p50_ms"] <= r["p99_ms"]


def test_openrlhf_round_trip(server, ckpts):
    queries = [p + q for p, q in PAIRS]
    expect = direct(ckpts[1], PAIRS)
    r = post("/get_reward", {"query": queries, "prompts": [p for p, _ in PAIRS], "labels": [None] * 4})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["rewards"] == pytest.approx(expect, abs=1e-5)
    assert out["scores"] == pytest.approx([1 / (1 + math.exp(-x)) for x in expect], abs=1e-5)
    assert out["extra_logs"]["model_version"] == [1.0] * 4
    # no prompts: the whole query is scored as the response with an empty prompt
    alone = post("/get_reward", {"query": queries}).json()["rewards"]
    assert alone == pytest.approx(direct(ckpts[1], [("", q) for q in queries]), abs=1e-5)


# ---- the same, straight on each replica's own port: Serve's direct ingress, the default on Ray instances
# the project starts (tests/conftest.py sets frft_ray.env.SERVE_INGRESS_ENV before the session's Ray starts;
# Ray reads it once). The proxy's URL above stays the stable one. These run before the hot swaps below.


@pytest.fixture(scope="module")
def replicas(server):
    return two_app_replicas()


def test_each_replica_has_its_own_loopback_port(replicas):
    plain, auth = replicas[launch.APP_NAME], replicas[AUTH_APP]
    assert len(plain) == 1 and len(auth) == 1, replicas
    assert plain[0].startswith("http://127.0.0.1:") and f":{PORT}" not in plain[0]
    assert auth[0].startswith("http://127.0.0.1:") and auth[0].endswith("/auth") and auth[0] != plain[0]
    # the proxy's URL still answers: the stable address in front of every replica
    assert requests.get(URL + "/health", timeout=10).json()["status"] == "ok"
    assert requests.get(plain[0] + "/health", timeout=10).json()["model_version"] == 1


def test_both_routes_on_the_replica(replicas, ckpts):
    base = replicas[launch.APP_NAME][0]
    expect = direct(ckpts[1], PAIRS)
    r = post("/v1/score", {"items": [{"prompt": p, "response": q} for p, q in PAIRS]}, base=base)
    assert r.status_code == 200, r.text
    assert r.json()["model_version"] == 1 and r.json()["scores"] == pytest.approx(expect, abs=1e-5)
    r = post("/get_reward", {"query": [p + q for p, q in PAIRS], "prompts": [p for p, _ in PAIRS]}, base=base)
    assert r.status_code == 200, r.text
    assert r.json()["rewards"] == pytest.approx(expect, abs=1e-5)


def test_hot_swap_reaches_the_replica(replicas, ckpts):
    """Before the hot swap under load (v3 below): v1 -> v2, straight on the replica's port."""
    base = replicas[launch.APP_NAME][0]
    items = {"items": [{"prompt": p, "response": q} for p, q in PAIRS]}
    r = post("/v1/score", items, base=base, headers={"X-Min-Model-Version": "2"})
    assert r.status_code == 409 and r.json()["error"] == "version_unavailable", r.text
    assert "2 is not published yet (the newest version is 1)" in r.json()["message"]
    r = post("/get_reward", {"query": ["x"]}, base=base, headers={"X-Min-Model-Version": "two"})
    assert r.status_code == 422 and "X-Min-Model-Version" in r.json()["message"], r.text
    launch.publish_rm(ckpts[2])  # version 2 from meta.json
    # read-your-version: asked at once, before the replica's poller may have loaded it
    r = post("/get_reward", {"query": ["x"]}, base=base, headers={"X-Min-Model-Version": "2"})
    assert r.status_code == 200 and r.json()["model_version"] == 2, r.text
    assert launch.wait_for_version(base, 2, timeout_s=60)["model_version"] == 2
    out = post("/v1/score", items, base=base, headers={"X-Min-Model-Version": "1"}).json()
    assert out["model_version"] == 2 and out["scores"] == pytest.approx(direct(ckpts[2], PAIRS), abs=1e-5)
    assert launch.replica_urls() == replicas[launch.APP_NAME]  # swapped in place: same replica, same port


def test_versions_never_go_backwards(server, ckpts):
    with pytest.raises(ValueError, match="not newer"):
        launch.publish_rm(ckpts[2], version=1)
    with pytest.raises(FileNotFoundError):
        launch.publish_rm("/nonexistent/rm")


def test_hot_swap_under_load(server, ckpts):
    """32 clients hammer the endpoint while v2 is published: no failures, no version goes back."""
    stop = threading.Event()
    item = {"items": [{"prompt": PAIRS[0][0], "response": PAIRS[0][1]}]}

    def client(_):
        seen, failures, s = [], [], requests.Session()
        while not stop.is_set():
            try:
                r = s.post(URL + "/v1/score", json=item, timeout=30)
                if r.status_code != 200:
                    failures.append(r.status_code)
                else:
                    out = r.json()
                    seen.append((out["model_version"], out["scores"][0]))
            except requests.RequestException as e:
                failures.append(repr(e))
        return seen, failures

    before = requests.get(URL + "/v1/model", timeout=10).json()["batching"]
    with cf.ThreadPoolExecutor(32) as pool:
        futs = [pool.submit(client, i) for i in range(32)]
        try:
            time.sleep(1.5)
            launch.publish_rm(ckpts[3])  # version 3 from meta.json (the replica test above published 2)
            launch.wait_for_version(URL, 3, timeout_s=60)
            time.sleep(1.0)
        finally:
            stop.set()  # the clients stop even when publishing failed
        results = [f.result() for f in futs]

    expect = {v: direct(ckpts[v], PAIRS[:1])[0] for v in (2, 3)}
    assert all(not fails for _, fails in results), [f for _, f in results if f][:3]
    for seen, _ in results:
        versions = [v for v, _ in seen]
        assert versions == sorted(versions), "a client saw the version go backwards"
        for v, s in seen:
            assert s == pytest.approx(expect[v], abs=1e-5)
    assert sum(len(s) for s, _ in results) > 64
    assert any(v == 3 for seen, _ in results for v, _ in seen)
    after = post("/v1/score", {"items": [{"prompt": p, "response": q} for p, q in PAIRS]}).json()
    assert after["model_version"] == 3
    assert after["scores"] == pytest.approx(direct(ckpts[3], PAIRS), abs=1e-5)
    info = json.loads(requests.get(URL + "/v1/model", timeout=10).text)
    assert info["checkpoint"] == ckpts[3]
    batches, reqs = (info["batching"][k] - before[k] for k in ("batches", "requests"))
    assert reqs > batches > 0, info["batching"]  # concurrent requests were merged into batches


@pytest.mark.gpu
def test_replica_on_a_gpu_fraction_serves_in_bf16(server, ckpts):
    """placement.serve.num_gpus > 0: the replica's weights go to CUDA in bf16 (precision auto); scores stay fp32."""
    from frft_ray.config import RolePlacement

    cfg = ServeConfig(port=PORT, max_items=8, max_text_chars=200, max_batch_size=16)
    url = launch.start_server(cfg, ckpts[1], app_name="frft_rm_gpu", route_prefix="/gpu",
                              placement=RolePlacement(num_cpus=0.25, num_gpus=0.25))
    try:
        launch.wait_for_version(url, 1, timeout_s=120)
        assert requests.get(url + "/v1/model", timeout=10).json()["device"] == "cuda:0/bf16"
        r = post("/v1/score", {"items": [{"prompt": p, "response": q} for p, q in PAIRS]}, base=url)
        assert r.status_code == 200, r.text
        assert r.json()["scores"] == pytest.approx(direct(ckpts[1], PAIRS), abs=0.05)
    finally:
        launch.stop_server("frft_rm_gpu")
