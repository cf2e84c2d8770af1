"""The RM endpoint under Serve's direct ingress, the default on Ray instances the project starts.

tests/conftest.py sets `frft_ray.env.SERVE_INGRESS_ENV` before the session's Ray starts (Ray reads
it once). Each replica then answers HTTP on its own port (`launch.replica_urls`), without the
proxy hop, and the proxy's URL stays the stable one. Everything tests/test_serve.py checks through
the proxy is checked here straight on a replica: scores, both routes, limits, bad bodies, auth,
hot swap. The apps, checkpoints and helpers are test_serve.py's.
"""

import pytest
import requests

ray = pytest.importorskip("ray")

from serve import launch  # noqa: E402
from test_serve import BAD, PAIRS, PORT, TOKEN, URL, ckpts, direct, post, refused_mid_stream, server  # noqa: E402,F401


@pytest.fixture(scope="module")
def replicas(server):
    """{app: base URL of its one replica}; the auth app's keeps its route prefix /auth."""
    return {app: launch.replica_urls(app) for app in (launch.APP_NAME, "frft_rm_auth")}


def test_each_replica_has_its_own_loopback_port(replicas):
    plain, auth = replicas[launch.APP_NAME], replicas["frft_rm_auth"]
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


@pytest.mark.parametrize("path,body,data,status,needle", BAD, ids=[f"{b[3]}-{i}" for i, b in enumerate(BAD)])
def test_limits_and_bad_bodies_on_the_replica(replicas, path, body, data, status, needle):
    base = replicas[launch.APP_NAME][0]
    r = post(path, body, data=data, headers={"content-type": "application/json"} if data else None, base=base)
    assert r.status_code == status, r.text
    assert needle in r.json()["message"]


def test_oversized_body_refused_on_the_replica(replicas):
    r = post("/v1/score", data="x" * 3_000_000, headers={"content-type": "application/json"},
             base=replicas[launch.APP_NAME][0])
    assert r.status_code == 413 and "bytes" in r.json()["message"]


def test_body_limit_applies_while_streaming_on_the_replica(replicas):
    refused_mid_stream(replicas[launch.APP_NAME][0])


def test_auth_on_the_replica(replicas):
    base = replicas["frft_rm_auth"][0]
    body = {"items": [{"prompt": "p", "response": "r"}]}
    assert post("/v1/score", body, base=base).status_code == 401
    assert post("/get_reward", {"query": ["x"]}, base=base, headers={"Authorization": "Bearer wrong"}).status_code == 401
    r = post("/v1/score", body, base=base, headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200 and r.json()["model_version"] == 1
    assert requests.get(base + "/health", timeout=10).status_code == 200  # open by design


def test_hot_swap_reaches_the_replica(replicas, ckpts):
    base = replicas[launch.APP_NAME][0]
    launch.publish_rm(ckpts[2])  # version 2 from meta.json
    assert launch.wait_for_version(base, 2, timeout_s=60)["model_version"] == 2
    out = post("/v1/score", {"items": [{"prompt": p, "response": q} for p, q in PAIRS]}, base=base).json()
    assert out["model_version"] == 2 and out["scores"] == pytest.approx(direct(ckpts[2], PAIRS), abs=1e-5)
    assert launch.replica_urls() == replicas[launch.APP_NAME]  # swapped in place: same replica, same port
