"""What the RM endpoint tests share (test_serve.py, test_serve_runs.py, test_serve_scorer.py,
test_fuzz_serve.py): three tiny RM checkpoints on one tokenizer, the pairs they score, the RM's own
score of a pair without Serve, and a JSON POST."""

import pytest
import requests

from frft_ray.config import ModelsConfig
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
