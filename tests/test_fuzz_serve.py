"""Hostile bodies for the RM endpoint's two scoring routes, over real HTTP on 127.0.0.1 (hypothesis).

Wrong types, huge item counts, deep JSON, invalid UTF-8, lone surrogates, empty strings, NaN/inf
and huge numbers. The property: every answer is a 2xx with finite scores, or a 4xx whose body is
a JSON error `{"error", "message"}`; any 5xx fails. The number of examples is bounded (FUZZ).
Schemathesis (in the test extra) adds cases generated from the app's own OpenAPI schema.
"""

import json

import pytest
import requests

ray = pytest.importorskip("ray")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from ray import serve  # noqa: E402

try:
    import schemathesis
except ImportError:  # only its test is skipped
    schemathesis = None
from frft_ray.config import ModelsConfig, ServeConfig  # noqa: E402
from frft_ray.models import build_reward_model, save_checkpoint, train_tokenizer  # noqa: E402
from serve import launch  # noqa: E402

PORT = 18437
URL = f"http://127.0.0.1:{PORT}"
MAX_ITEMS, MAX_CHARS = 8, 200
FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
ROUTES = ("/v1/score", "/get_reward")


@pytest.fixture(scope="module")
def url(tmp_path_factory, ray_local):
    tok = train_tokenizer([f"question {i} about cats, answer {i * 7}" for i in range(200)], 512, 256)
    ckpt = save_checkpoint(tmp_path_factory.mktemp("rm") / "v1", build_reward_model(ModelsConfig(), tok), tok,
                           None, {"version": 1})
    cfg = ServeConfig(port=PORT, max_items=MAX_ITEMS, max_text_chars=MAX_CHARS, max_batch_size=16)
    launch.start_server(cfg, ckpt, app_name="frft_rm_fuzz")  # precision auto (devices.serve_dtype)
    yield URL
    launch.stop_server("frft_rm_fuzz")
    serve.shutdown()


def _check(base: str, route: str, body: bytes) -> None:
    r = requests.post(base + route, data=body, headers={"content-type": "application/json"}, timeout=60)
    assert r.status_code < 500, f"{route} answered {r.status_code} to {body[:300]!r}: {r.text[:500]}"
    out = r.json()  # every answer, error or not, is JSON
    if r.status_code >= 400:
        assert set(out) >= {"error", "message"}, out
    else:
        scores = out["scores"] if route == "/v1/score" else out["rewards"]
        assert all(isinstance(s, float) for s in scores) and out["model_version"] == 1


# ---------------------------------------------------------------- strategies

texts = st.one_of(st.just(""), st.text(max_size=40),  # hypothesis never draws surrogates: the alphabet has one
                  st.text(alphabet="\x00\ud800\ufffd\u202e\U0001f600 ab", max_size=MAX_CHARS + 5))
numbers = st.one_of(st.integers(min_value=-(10**30), max_value=10**30), st.floats(allow_nan=True, allow_infinity=True))
scalars = st.one_of(st.none(), st.booleans(), numbers, texts)
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                            st.dictionaries(texts, inner, max_size=4)), max_leaves=12)
text_or_junk = st.one_of(texts, texts, scalars, json_values)  # mostly strings, sometimes the wrong type
item_lists = lambda item: st.one_of(st.lists(item, max_size=3), st.lists(item, min_size=MAX_ITEMS - 1,  # noqa: E731
                                                                              max_size=MAX_ITEMS + 3))
score_bodies = st.one_of(
    st.fixed_dictionaries({"items": item_lists(st.fixed_dictionaries({"prompt": text_or_junk,
                                                                      "response": text_or_junk}))}),
    st.fixed_dictionaries({"items": st.one_of(json_values, item_lists(json_values))}),
    json_values)
reward_bodies = st.one_of(
    st.fixed_dictionaries({"query": item_lists(text_or_junk)},
                          optional={"prompts": st.one_of(st.none(), item_lists(text_or_junk)),
                                    "labels": json_values}),
    json_values)


def _encode(body) -> bytes:
    """Python's JSON, which writes NaN/Infinity literals and escaped lone surrogates as they are."""
    return json.dumps(body).encode()


def test_replica_under_auto_precision(url):
    """`precision: auto` end to end: the replica holds its RM in `devices.serve_dtype` (bf16 on a CPU
    with bf16 hardware, else fp32) and scores like the fp32 RM within that dtype's rounding."""
    import torch
    from serve_checkpoints import direct

    from frft_ray.devices import describe, serve_dtype

    dtype = serve_dtype("auto", torch.device("cpu"))
    info = requests.get(url + "/v1/model", timeout=10).json()
    assert info["device"] == describe(torch.device("cpu"), dtype)
    pairs = [("question 3 about cats,", " answer 21"), ("", "a response alone"), ("q", " " + "long answer " * 12)]
    r = requests.post(url + "/v1/score", json={"items": [{"prompt": p, "response": q} for p, q in pairs]}, timeout=30)
    fp32 = direct(info["checkpoint"], pairs)
    tol = 1e-5 if dtype == torch.float32 else 0.02
    assert r.status_code == 200 and r.json()["scores"] == pytest.approx(fp32, abs=tol)


# ---------------------------------------------------------------- properties


@FUZZ
@given(body=score_bodies)
def test_score_route_never_500s(url, body):
    _check(url, "/v1/score", _encode(body))


@FUZZ
@given(body=reward_bodies)
def test_get_reward_route_never_500s(url, body):
    _check(url, "/get_reward", _encode(body))


@FUZZ
@given(route=st.sampled_from(ROUTES), raw=st.binary(max_size=300),
       wrap=st.sampled_from([b"%s", b'{"items": [{"prompt": "%s", "response": "x"}]}', b'{"query": ["%s"]}']))
def test_raw_bytes_never_500(url, route, raw, wrap):
    """Invalid UTF-8 and arbitrary bytes, alone or inside an otherwise well-formed body."""
    _check(url, route, wrap.replace(b"%s", raw))


HOSTILE = [
    b"[" * 100_000 + b"]" * 100_000,  # deep JSON (over the body limit)
    b"[" * 5_000 + b"]" * 5_000,  # deep JSON under it: a recursion limit in the parser
    b'{"items": ' + b"[" * 3_000 + b"]" * 3_000 + b"}",
    b'{"query": [' + b"1" * 5_000 + b"]}",  # an integer past Python's 4300-digit limit
    b'{"query": [1e999, -1e999, NaN, Infinity]}',
    b'{"items": [{"prompt": NaN, "response": 1e999}]}',
    b'{"items": [{"prompt": "\\ud800", "response": "\\udfff"}]}',  # escaped lone surrogates
    b'{"query": ["\\ud83d"], "prompts": ["\\ud83d"]}',
    b'{"query": ["' + b"\xff\xfe" * 10 + b'"]}',
    b'{"items": [{"prompt": "", "response": ""}]}',
    b'{"query": [""], "prompts": [""]}',
    b'{"query": ["x"], "labels": ' + b"[" * 2_000 + b"]" * 2_000 + b"}",
    b'{"items": [' + b",".join([b'{"prompt": "a", "response": "b"}'] * 100_000) + b"]}",  # huge item count
    b'{"query": [' + b",".join([b'"q"'] * 2_000) + b"]}",
    b"\x00" * 1_000,
    b"",
]


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("body", HOSTILE, ids=[f"hostile-{i}" for i in range(len(HOSTILE))])
def test_hostile_bodies_never_500(url, route, body):
    _check(url, route, body)


# ---------------------------------------------------------------- the OpenAPI schema's own cases


@pytest.fixture(scope="module")
def schema_cases(url):
    """Cases schemathesis derives from the schema the app serves (every route, bodies that follow
    the schema and, in its negative mode, bodies that break it)."""
    if schemathesis is None:
        pytest.skip("schemathesis is not installed (pip install -e '.[dev]')")
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    ops = [op.ok() for op in schema.get_all_operations()]
    assert {op.path for op in ops} >= set(ROUTES)
    return st.one_of([op.as_strategy(generation_mode=m) for op in ops for m in GenerationMode])


@FUZZ
@given(data=st.data())
def test_openapi_cases_never_500(url, schema_cases, data):
    case = data.draw(schema_cases)
    r = case.call(base_url=url, timeout=60)
    assert r.status_code < 500, f"{case.method} {case.path} answered {r.status_code} to {case.body!r}: {r.text[:500]}"
    if r.status_code >= 400:
        assert set(r.json()) >= {"error", "message"}
