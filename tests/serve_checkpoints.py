"""What the RM endpoint tests share (test_serve.py, test_serve_errors.py, test_serve_runs.py,
test_serve_scorer.py, test_fuzz_serve.py): three tiny RM checkpoints on one tokenizer, the pairs they
score, the RM's own score of a pair without Serve, a JSON POST, and the two apps test_serve.py and
test_serve_errors.py each start on a port of their own."""

import functools
import os

import pytest
import requests

from frft_ray.config import ModelsConfig, ServeConfig
from frft_ray.models import build_reward_model, load_reward_checkpoint, save_checkpoint, score, train_tokenizer

TEXTS = [f"question {i} about cats and dogs, answer number {i * 7} is here" for i in range(200)]
PAIRS = [("Human: hi", " Assistant: hello there"), ("Q: 2+2?", " 4"), ("", "just a response"),
         ("a much longer prompt about many different things", " and an answer")]


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """{version: checkpoint folder} for versions 1, 2, 3 (RMs of different seeds, one tokenizer)."""
    root = tmp_path_factory.mktemp("rm")
    tok = train_tokenizer(TEXTS, 512, 256)
    paths = {}
    for v in (1, 2, 3):
        rm = build_reward_model(ModelsConfig(), tok, seed=v)
        paths[v] = str(save_checkpoint(root / f"v{v}", rm, tok, None, {"version": v, "iteration": v - 1,
                                                                       "heldout_accuracy": 0.5 + v / 10}))
    return paths


def direct(path, pairs):
    """The checkpoint's fp32 score of each (prompt, response), in this process."""
    m = load_reward_checkpoint(path)
    return [score(m.model, m.tokenizer, [p], [r], 160).item() for p, r in pairs]


def post(path, body=None, data=None, headers=None, *, base):
    return requests.post(base + path, json=body, data=data, headers=headers, timeout=30)


def post_to(base: str):
    """`post` with `base` as its default (another base= for the other apps)."""
    return functools.partial(post, base=base)


TOKEN = "s3cret-test-token"
AUTH_APP = "frft_rm_auth"


def serve_two_apps(ckpts, port: int):
    """A module's endpoint (needs the session's Ray): `frft_rm` (no auth, at /, fp32) and `frft_rm_auth`
    (bearer token, at /auth, bf16) on `port`; yields their base URLs, then stops them and Serve."""
    from ray import serve

    from serve import launch

    # inline_forward_ms: generous, so that a slow CI machine still scores lone requests inline
    cfg = ServeConfig(port=port, max_items=8, max_text_chars=200, max_batch_size=16, inline_forward_ms=1000)
    url = launch.start_server(cfg, ckpts[1], precision="fp32")  # fp32 forced: scores compared to 1e-5
    os.environ["FRFT_TEST_TOKEN"] = TOKEN
    # the auth app also runs the non-default batching linger, no inline forwards and the access log end to end
    auth_cfg = cfg.model_copy(update={"auth_token_env": "FRFT_TEST_TOKEN", "batch_wait_timeout_s": 0.01,
                                      "inline_forward_ms": 0.0, "access_log": True})
    auth_url = launch.start_server(auth_cfg, ckpts[1], app_name=AUTH_APP, route_prefix="/auth", precision="bf16")
    yield url, auth_url
    launch.stop_server()
    launch.stop_server(AUTH_APP)
    serve.shutdown()


def two_app_replicas() -> dict[str, list[str]]:
    """{app: base URLs of its replicas} of `serve_two_apps`' apps; the auth app's keep the prefix /auth."""
    from serve import launch

    return {app: launch.replica_urls(app) for app in (launch.APP_NAME, AUTH_APP)}
