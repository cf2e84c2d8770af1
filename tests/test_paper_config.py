"""The paper's config (configs/hh-rlhf-gpt2-medium.yaml) end to end through `frft-ray run`, on CPU.

Its code path, not its sizes: HF model folders instead of the `tiny` preset (here a small GPT-2
saved with `save_pretrained`, its tokenizer without a pad token, as GPT-2's own), the HH-RLHF loader
on a `.jsonl.gz` with a bad record (the config skips it), `eval.judge: rm`, the RM endpoint up for
the whole run. Only `--set` shrinks it; the config file itself is read as shipped.
"""

import gzip
import json
import os
import random
import shutil
import socket
from pathlib import Path

import pytest

from frft_ray.cli import main

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "hh-rlhf-gpt2-medium.yaml"
RUN_DIR = Path(os.environ["FRFT_TEST_RUNS"]) / "paper_config"
EVAL_PROMPTS = 6  # the config holds out 2% of the pairs: 6 of 300, each its own prompt

TOPICS = ["bread", "a bike tire", "tomatoes", "a fence", "rice", "a kite", "soup", "a shelf", "coffee", "a garden",
          "a letter", "a budget", "a tent", "pasta", "a resume", "a drawer", "tea", "a lamp", "a sweater", "a fish tank"]
VERBS = ["make", "fix", "store", "clean", "start", "choose", "plan", "paint"]
GOOD = [" Start with {t}: gather what you need, {v} it step by step, and check it as you go.",
        " To {v} {t}, read the instructions first, then take it slowly and ask for help if you get stuck.",
        " Here is a simple way to {v} {t}: prepare, do the main step carefully, then tidy up."]
BAD = [" I don't know.", " Why would you want to {v} {t}?", " Figure it out yourself.", " No."]


def _hh_records(n: int, seed: int = 0) -> list[dict]:
    """HH-RLHF transcripts: one-turn questions, and every 25th a two-turn conversation."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        t, v = TOPICS[i % len(TOPICS)], VERBS[(i // len(TOPICS)) % len(VERBS)]
        context = f"\n\nHuman: How do I {v} {t}? (question {i})\n\nAssistant:"
        if i % 25 == 0:  # multi-turn: the shared history ends with a second Human turn
            context = (f"\n\nHuman: Can you help me with {t}?\n\nAssistant: Of course, what do you need?"
                       f"\n\nHuman: How do I {v} it? (question {i})\n\nAssistant:")
        good, bad = rng.choice(GOOD).format(t=t, v=v), rng.choice(BAD).format(t=t, v=v)
        out.append({"chosen": context + good, "rejected": context + bad})
    return out


def _write_hh(path: Path, records: list[dict]) -> None:
    lines = [json.dumps(r) for r in records]
    lines.insert(7, json.dumps({"chosen": "\n\nHuman: hi", "rejected": "\n\nHuman: hello"}))  # no Assistant turn
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def _save_hf_gpt2(folder: Path, texts: list[str]) -> None:
    """A small GPT-2 in HF format, as a hub download would look: no pad token, right padding, 1024-token
    model_max_length (the run must set its own padding and lengths)."""
    from frft_ray.config import ModelsConfig
    from frft_ray.models import build_policy, train_tokenizer

    tok = train_tokenizer(texts, vocab_size=512, model_max_length=1024)
    tok.pad_token = None
    tok.padding_side = tok.truncation_side = "right"
    model = build_policy(ModelsConfig(tiny={"n_layer": 2, "n_embd": 64, "n_head": 4, "n_positions": 128}), tok)
    assert model.config.pad_token_id is None
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _overrides(model_dir: Path, data_path: Path, port: int, cache_dir: Path) -> list[str]:
    sets = [  # sizes only: the config's own learning rates, thresholds, KL and Serve settings stay
        f"models.policy={model_dir}", f"models.reward={model_dir}", "models.max_prompt_tokens=48",
        "models.max_length=96",
        f"data.path={data_path}",
        "sft.batch_size=16",
        "rollout.engine=hf", "rollout.num_workers=1", "rollout.batch_size=16", "rollout.max_new_tokens=16",
        "rollout.filter_prompts=16",
        "filter.budget=64", "filter.min_records=16", "filter.random_share=0.25", "filter.num_embedders=1", f"filter.cache_dir={cache_dir}",
        "filter.embed_early=true",  # on CPU (auto embeds early only on GPUs): the pool is embedded while SFT runs
        "reward.batch_size=16", "reward.num_workers=1", "reward.refit_epochs=1",
        "ppo.batch_size=8", "ppo.minibatch_size=4", "ppo.micro_batch_size=2", "ppo.epochs=1",  # micro-batches split
        "ppo.score_scale=rm",  # the refit RM in its own units (the default, initial_rm, runs in the micro runs)
        "frft.alpha=1", "frft.steps_per_iteration=1",
        f"eval.num_prompts={EVAL_PROMPTS}", "eval.onpolicy_pairs=8",
        "serve.host=127.0.0.1", f"serve.port={port}", "serve.replicas=1", "serve.auth_token_file=null",
        "serve.keep_alive=true",
        "resources.address=null", "resources.num_cpus=2", "resources.torch_threads=1",
        "resources.overlap_base_models=false",  # SFT, then the initial RM (micro runs overlap them)
    ]
    for role in ("rollout", "learner", "reward_trainer", "embedder", "serve"):
        # whatever the config's placement asks (GPUs, custom node resources), here every role fits in 2 CPUs
        sets += [f"placement.{role}.num_gpus=0", f"placement.{role}.num_cpus=0.25", f"placement.{role}.resources={{}}"]
    # the start check counts Serve at its autoscaling maximum (8 replicas): 4 x 0.25 + 8 x 0.1 <= 2 CPUs
    sets.append("placement.serve.num_cpus=0.1")
    return sets


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_paper_config_runs_end_to_end_on_cpu(ray_local, tmp_path, monkeypatch):
    import requests
    from ray import serve

    from serve.launch import Endpoint, stop_server

    monkeypatch.delenv("FRFT_RAY_TOKEN", raising=False)  # serve.auth_token_env: the endpoint answers without auth

    data_path, model_dir = tmp_path / "train.jsonl.gz", tmp_path / "gpt2-small-hf"
    records = _hh_records(300)
    _write_hh(data_path, records)
    _save_hf_gpt2(model_dir, [r["chosen"] for r in records] + [r["rejected"] for r in records])
    shutil.rmtree(RUN_DIR, ignore_errors=True)
    port = _free_port()
    argv = ["run", "--config", str(CONFIG), "--out", str(RUN_DIR)]
    for s in _overrides(model_dir, data_path, port, tmp_path / "emb_cache"):
        argv += ["--set", s]
    try:
        assert main(argv) == 0
        summary = json.loads((RUN_DIR / "summary.json").read_text())
        assert summary["judge"] == "rm" and summary["eval_prompts"] == EVAL_PROMPTS
        assert summary["gold_reward"].keys() == {"sft", "vanilla", "frft"}  # judged by the initial RM
        assert set(summary["win_rate"]) >= {"frft_vs_vanilla", "frft_vs_sft", "vanilla_vs_sft"}
        assert summary["rm_records"]["vanilla"] > 0 and len(summary["rm_records"]["frft"]) == 1
        assert 0 < summary["rm_records"]["frft"][0] <= 64  # filter.budget
        sel = summary["selection"]["frft"][0]  # filter.random_share: a quarter of the refit is random pool pairs
        assert sel["count"] == summary["rm_records"]["frft"][0] == sum(sel["source_mix"].values())
        assert sel["random_share"] == 0.25 and sel["random_rows"] == round(0.25 * sel["count"]) > 0
        assert summary["score_scale"] == {"frft": [1.0]}  # ppo.score_scale=rm: PPO saw the refit RM's own scores
        assert summary["initial_rm"]["records"] > 0 and summary["initial_rm"]["heldout"] is not None
        log_text = (RUN_DIR / "run.log").read_text()  # filter.embed_early: the pool was embedded from the start
        assert "distinct texts in the background (filter.embed_early)" in log_text
        assert log_text.index("in the background (filter.embed_early)") < log_text.index("SFT: ")
        base = json.loads((RUN_DIR / "metrics.jsonl").read_text().splitlines()[0])
        assert base["phase"] == "base" and base["base/overlap"] is False
        assert summary["data"]["records"] == 300 and summary["data"]["skipped"] == {"no_assistant_turn": 1}
        # the run started from the HF folder, and gave its pad-less tokenizer a pad token (EOS, as for GPT-2)
        sft = RUN_DIR / "ckpt" / "sft"
        assert json.loads((sft / "config.json").read_text())["n_embd"] == 64
        saved_tok = json.loads((sft / "tokenizer_config.json").read_text())
        assert saved_tok["pad_token"] == saved_tok["eos_token"] == "<|endoftext|>" and saved_tok["padding_side"] == "left"
        state = json.loads((RUN_DIR / "ckpt" / "frft-iter-001" / "driver_state.json").read_text())
        assert state["published"] == {"path": "ckpt/frft-iter-001/rm", "version": 1}
        # the endpoint came up with the run and serves the refit RM (kept up after it: serve.keep_alive)
        url = f"http://127.0.0.1:{port}{Endpoint.for_folder(RUN_DIR).route_prefix}"
        r = requests.post(f"{url}/v1/score", timeout=30, json={
            "items": [{"prompt": "\n\nHuman: How do I fix a lamp?\n\nAssistant:", "response": " Unplug it first."}]})
        assert r.status_code == 200, r.text
        assert r.json()["model_version"] == 1 and len(r.json()["scores"]) == 1
        served = requests.get(f"{url}/v1/model", timeout=30).json()
        assert Path(served["checkpoint"]) == RUN_DIR / "ckpt" / "frft-iter-001" / "rm"
    finally:
        try:
            stop_server(Endpoint.for_folder(RUN_DIR).app_name)
        finally:
            serve.shutdown()
