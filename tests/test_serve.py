"""The RM endpoint over real HTTP on 127.0.0.1: scores, OpenRLHF format, bad input, auth, hot swap,
through Serve's proxy URL and again straight on each replica's own port (direct ingress).

One Ray instance and one Serve instance for the module (~8 s each); two apps: `frft_rm` (no
auth, at /) and `frft_rm_auth` (bearer token, at /auth).
"""

import concurrent.futures as cf
import functools
import json
import math
import os
import threading
import time
from pathlib import Path

import pytest
import requests

ray = pytest.importorskip("ray")
from ray import serve  # noqa: E402

import serve_checkpoints  # noqa: E402
from frft_ray.config import ServeConfig  # noqa: E402
from serve import launch  # noqa: E402
from serve_checkpoints import PAIRS, TEXTS, ckpts, direct  # noqa: E402,F401  (ckpts: a fixture)

PORT = 18431
URL = f"http://127.0.0.1:{PORT}"
TOKEN = "s3cret-test-token"


@pytest.fixture(scope="module")
def server(ckpts, ray_local):  # the session's shared local Ray instance (tests/conftest.py)
    # inline_forward_ms: generous, so that a slow CI machine still scores lone requests inline
    cfg = ServeConfig(port=PORT, max_items=8, max_text_chars=200, max_batch_size=16, inline_forward_ms=1000)
    url = launch.start_server(cfg, ckpts[1], precision="fp32")  # fp32 forced: scores compared to 1e-5 below
    os.environ["FRFT_TEST_TOKEN"] = TOKEN
    # the auth app also runs the non-default batching linger, no inline forwards and the access log end to end
    auth_cfg = cfg.model_copy(update={"auth_token_env": "FRFT_TEST_TOKEN", "batch_wait_timeout_s": 0.01,
                                      "inline_forward_ms": 0.0, "access_log": True})
    auth_url = launch.start_server(auth_cfg, ckpts[1],
                                   app_name="frft_rm_auth", route_prefix="/auth", precision="bf16")
    yield url, auth_url
    launch.stop_server()
    launch.stop_server("frft_rm_auth")
    serve.shutdown()


post = functools.partial(serve_checkpoints.post, base=URL)  # another base= for the other apps


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


BAD = [
    ("/v1/score", None, "{not json", 400, "not valid JSON"),
    ("/v1/score", {"items": []}, None, 422, "items"),
    ("/v1/score", {"items": [{"prompt": 1, "response": "x"}]}, None, 422, "items[0].prompt"),
    ("/v1/score", {"items": [{"prompt": "x"}]}, None, 422, "items[0].response"),
    ("/v1/score", {"items": "abc"}, None, 422, "items"),
    ("/v1/score", {"itemz": []}, None, 422, "itemz"),
    ("/v1/score", [1, 2], None, 422, "body"),
    ("/v1/score", {"items": [{"prompt": "a", "response": "b"}] * 9}, None, 413, "max_items=8"),
    ("/v1/score", {"items": [{"prompt": "a", "response": "b" * 201}]}, None, 413, "max_text_chars=200"),
    ("/get_reward", {"query": []}, None, 422, "query"),
    ("/get_reward", {"query": ["ok", 3]}, None, 422, "query[1]"),
    ("/get_reward", {"query": ["hello"], "prompts": ["bye"]}, None, 422, "does not start with prompts[0]"),
    ("/get_reward", {"query": ["a", "b"], "prompts": ["a"]}, None, 422, "must match"),
    ("/get_reward", {"query": ["q"] * 9}, None, 413, "max_items=8"),
]


@pytest.mark.parametrize("path,body,data,status,needle", BAD, ids=[f"{b[3]}-{i}" for i, b in enumerate(BAD)])
def test_bad_input_is_4xx_with_message(server, path, body, data, status, needle):
    r = post(path, body, data=data, headers={"content-type": "application/json"} if data else None)
    assert r.status_code == status, r.text
    err = r.json()
    assert needle in err["message"], err
    assert post("/v1/score", {"items": [{"prompt": "p", "response": "r"}]}).status_code == 200


JSON = "application/json"
FORM = "application/x-www-form-urlencoded"  # what `curl -d` sends unless told otherwise
SCORE_OK, REWARD_OK = b'{"items": [{"prompt": "p", "response": "r"}]}', b'{"query": ["q"]}'
# bodies FastAPI itself refuses before our models see them, and the 413's location: (path, raw body,
# content type or None for no header, status, error kind, a fragment of the message)
BODY_ERRORS = [
    ("/v1/score", b"", JSON, 400, "malformed_json", "request body is empty; send a JSON object with 'Content-Type"),
    ("/get_reward", b"", JSON, 400, "malformed_json", "request body is empty"),
    ("/v1/score", b'{"items": [{"prompt": "\xff", "response": "x"}]}', JSON, 400, "malformed_json",
     "not valid UTF-8 JSON (invalid start byte at byte 23)"),
    ("/get_reward", b'{"query": ["\xc3\x28"]}', JSON, 400, "malformed_json", "not valid UTF-8 JSON"),
    ("/get_reward", b"[" * 5_000 + b"]" * 5_000, JSON, 400, "malformed_json", "could not be parsed as JSON"),
    ("/v1/score", SCORE_OK, FORM, 415, "unsupported_media_type",
     f"sent with {FORM}; send a JSON object with 'Content-Type: application/json'"),
    ("/get_reward", REWARD_OK, FORM, 415, "unsupported_media_type", f"sent with {FORM}"),
    ("/v1/score", SCORE_OK, None, 415, "unsupported_media_type", "sent with no Content-Type"),
    ("/get_reward", REWARD_OK, "text/plain; charset=utf-8", 415, "unsupported_media_type", "sent with text/plain"),
    ("/v1/score", b'{"items": [{"prompt": "a", "response": "' + b"b" * 201 + b'"}]}', JSON, 413,
     "limit_exceeded", "items[0].response has 201 characters > max_text_chars=200"),
    ("/v1/score", b'{"items": [{"prompt": "a", "response": "b"}, {"prompt": "' + b"a" * 201 + b'", "response": "b"}]}',
     JSON, 413, "limit_exceeded", "items[1].prompt has 201 characters"),
    ("/get_reward", b'{"query": ["' + b"q" * 201 + b'"]}', JSON, 413, "limit_exceeded", "query[0] has 201 characters"),
    ("/get_reward", b'{"query": ["ab"], "prompts": ["' + b"a" * 201 + b'"]}', JSON, 413, "limit_exceeded",
     "prompts[0] has 201 characters"),
]


@pytest.mark.parametrize("path,data,ctype,status,kind,needle", BODY_ERRORS,
                         ids=[f"{b[3]}-{b[4]}-{i}" for i, b in enumerate(BODY_ERRORS)])
def test_body_errors_answer_with_documented_kinds(server, replicas, path, data, ctype, status, kind, needle):
    """docs/serve.md's error table, for bodies FastAPI refuses on its own (empty, not UTF-8, not sent
    as JSON) and for the 413's location (items[0].response, as in a 422): through the proxy and on
    the replica."""
    for base in (URL, replicas[launch.APP_NAME][0]):
        r = post(path, data=data, headers={"content-type": ctype} if ctype else None, base=base)
        assert r.status_code == status, r.text
        err = r.json()
        assert err["error"] == kind and needle in err["message"], err


def test_unknown_route_and_method_are_json(server):
    """Under the app's route prefix an unknown path or a wrong method is still a JSON error (outside any
    prefix, Serve's own plain-text 404 answers: docs/serve.md, Errors)."""
    r = post("/v1/nope", {"items": []})
    assert r.status_code == 404 and r.json()["error"] == "not_found", r.text
    r = requests.get(URL + "/v1/score", timeout=10)
    assert r.status_code == 405 and r.json()["error"] == "method_not_allowed", r.text


def test_oversized_body_refused_before_parsing(server):
    r = post("/v1/score", data="x" * 3_000_000, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "bytes" in r.json()["message"]


MAX_BODY = 8 * (200 * 6 + 64) + 4096  # what the app derives from the fixture's max_items and max_text_chars


def raw_post(base: str, path: str, headers: dict, parts: list[bytes], timeout: float = 20.0) -> tuple[int, dict]:
    """POST over a plain socket, sending `parts` as they are and never ending the body: a server that
    waited for the whole body would answer only after `timeout` (and the test would fail)."""
    import http.client
    import socket
    from urllib.parse import urlsplit

    u = urlsplit(base)
    with socket.create_connection((u.hostname, u.port), timeout=timeout) as sock:
        head = "".join(f"{k}: {v}\r\n" for k, v in {"Host": u.hostname, "Content-Type": "application/json",
                                                      **headers}.items())
        sock.sendall(f"POST {u.path}{path} HTTP/1.1\r\n{head}\r\n".encode())
        try:
            for part in parts:
                sock.sendall(part)
        except OSError:  # the server answered and closed while we were still sending: read its answer
            pass
        resp = http.client.HTTPResponse(sock)
        resp.begin()
        return resp.status, json.loads(resp.read())


def refused_mid_stream(base: str) -> None:
    """A body past the limit is refused while it streams in (chunked, no Content-Length), and a
    Content-Length past it before any of the body is read."""
    chunk = b"x" * 4096
    parts = [b"%x\r\n%s\r\n" % (len(chunk), chunk)] * (MAX_BODY // len(chunk) + 2)  # no last chunk: never ends
    status, err = raw_post(base, "/v1/score", {"Transfer-Encoding": "chunked"}, parts)
    assert status == 413 and err["limit"] == "max_body_bytes" and err["max"] == MAX_BODY, err
    assert f"more than {MAX_BODY} bytes" in err["message"]
    status, err = raw_post(base, "/get_reward", {"Content-Length": "50000000"}, [b'{"query": ["'])
    assert status == 413 and "50000000 bytes (Content-Length)" in err["message"], err


def test_body_limit_applies_while_streaming(server):
    refused_mid_stream(URL)
    # a body under the limit in chunks still reaches the route whole
    body = json.dumps({"items": [{"prompt": p, "response": q} for p, q in PAIRS]}).encode()
    r = requests.post(URL + "/v1/score", data=iter([body[:10], body[10:]]), timeout=30,
                      headers={"content-type": "application/json"})
    assert r.status_code == 200 and len(r.json()["scores"]) == len(PAIRS), r.text


def test_auth(server):
    _, auth_url = server
    body = {"items": [{"prompt": "p", "response": "r"}]}
    assert post("/v1/score", body, base=auth_url).status_code == 401
    assert post("/v1/score", body, base=auth_url, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert post("/get_reward", {"query": ["x"]}, base=auth_url).status_code == 401
    r = post("/v1/score", body, base=auth_url, headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200 and r.json()["model_version"] == 1
    assert requests.get(auth_url + "/health", timeout=10).status_code == 200  # open by design
    assert requests.get(auth_url + "/v1/model", timeout=10).status_code == 401
    info = requests.get(auth_url + "/v1/model", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10).json()
    assert info["device"] == "cpu/bf16"  # this app was started with precision bf16: it reached the replica
    assert post("/v1/score", body).status_code == 200  # the other app has auth off
    logs = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs" / "serve"
    deadline = time.monotonic() + 10
    while not any("/auth/v1/score" in f.read_text() for f in logs.glob("replica_frft_rm_auth_RewardModel_*.log")):
        assert time.monotonic() < deadline, "no access-log line for the auth app (serve.access_log: true)"
        time.sleep(0.2)
    plain = "".join(f.read_text() for f in logs.glob(f"replica_{launch.APP_NAME}_RewardModel_*.log"))
    assert "/v1/score" not in plain  # access_log defaults to off


# ---- the same, straight on each replica's own port: Serve's direct ingress, the default on Ray instances
# the project starts (tests/conftest.py sets frft_ray.env.SERVE_INGRESS_ENV before the session's Ray starts;
# Ray reads it once). The proxy's URL above stays the stable one. These run before the hot swaps below.


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
