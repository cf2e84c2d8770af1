"""What the RM endpoint refuses, over real HTTP on 127.0.0.1: bad bodies (docs/serve.md's error table),
limits (item count, text length, body size while it streams in), an unknown route, and the bearer token,
through Serve's proxy URL and again straight on the replica's own port (direct ingress).

The same two apps as tests/test_serve.py, on a port of their own (serve_checkpoints.serve_two_apps).
"""

import json
import time
from pathlib import Path

import pytest
import requests

ray = pytest.importorskip("ray")

import serve_checkpoints  # noqa: E402
from serve import launch  # noqa: E402
from serve_checkpoints import AUTH_APP, PAIRS, TOKEN, ckpts, serve_two_apps, two_app_replicas  # noqa: E402,F401

PORT = 18432
URL = f"http://127.0.0.1:{PORT}"
post = serve_checkpoints.post_to(URL)


@pytest.fixture(scope="module")
def server(ckpts, ray_local):  # noqa: F811  (the session's shared local Ray instance: tests/conftest.py)
    yield from serve_two_apps(ckpts, PORT)


@pytest.fixture(scope="module")
def replicas(server):
    return two_app_replicas()


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
    while not any("/auth/v1/score" in f.read_text() for f in logs.glob(f"replica_{AUTH_APP}_RewardModel_*.log")):
        assert time.monotonic() < deadline, "no access-log line for the auth app (serve.access_log: true)"
        time.sleep(0.2)
    plain = "".join(f.read_text() for f in logs.glob(f"replica_{launch.APP_NAME}_RewardModel_*.log"))
    assert "/v1/score" not in plain  # access_log defaults to off


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
    base = replicas[AUTH_APP][0]
    body = {"items": [{"prompt": "p", "response": "r"}]}
    assert post("/v1/score", body, base=base).status_code == 401
    assert post("/get_reward", {"query": ["x"]}, base=base, headers={"Authorization": "Bearer wrong"}).status_code == 401
    r = post("/v1/score", body, base=base, headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200 and r.json()["model_version"] == 1
    assert requests.get(base + "/health", timeout=10).status_code == 200  # open by design
