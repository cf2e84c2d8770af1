"""Bradley-Terry loss/accuracy by hand, and fitting a real tiny reward model (in-process and under DDP)."""

import math
import random

import pytest
import torch

from frft_ray.algorithms.bt import bt_loss, evaluate_rm, fit_reward_model, pairwise_accuracy
from frft_ray.config import ModelsConfig, RewardConfig, TinyModelConfig
from frft_ray.data.records import PreferencePair
from frft_ray.models import build_reward_model, train_tokenizer

TOPICS = ["the garden", "my bike", "the weather", "a new book", "the market", "our trip", "the river", "dinner"]
GOOD = ["is lovely and kind", "is helpful and clear", "is calm and friendly", "is bright and useful"]
BAD = ["is rude and awful", "is useless and cruel", "is nasty and wrong", "is dull and broken"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def easy_pairs(n: int, seed: int) -> list[PreferencePair]:
    """The chosen reply uses friendly words, the rejected one hostile words: learnable from a few tokens."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        t = rng.choice(TOPICS)
        out.append(PreferencePair(f"s{seed}-{i}", f"Tell me about {t}.\nAnswer:", f" {t} {rng.choice(GOOD)}.", f" {t} {rng.choice(BAD)}.", "synthetic"))
    return out


@pytest.fixture(scope="module")
def tok():
    texts = [p.prompt + p.chosen for p in easy_pairs(800, 99)] + [p.prompt + p.rejected for p in easy_pairs(800, 98)]
    return train_tokenizer(texts, vocab_size=400, model_max_length=128)


def tiny_rm(tok, seed=0):
    mcfg = ModelsConfig(tiny=TinyModelConfig(n_layer=2, n_embd=64, n_head=4, n_positions=128, vocab_size=400))
    return build_reward_model(mcfg, tok, seed=seed)


def test_bt_loss_by_hand():
    c, r = torch.tensor([2.0, 0.0, -1.0]), torch.tensor([0.0, 0.0, 1.0])
    expected = (math.log1p(math.exp(-2)) + math.log(2) + math.log1p(math.exp(2))) / 3
    assert bt_loss(c, r).item() == pytest.approx(expected, rel=1e-6)
    # margin m: -log sigmoid(d - m); d = 2, 0, -2 and m = 1
    with_margin = (math.log1p(math.exp(-1)) + math.log1p(math.exp(1)) + math.log1p(math.exp(3))) / 3
    assert bt_loss(c, r, margin=1.0).item() == pytest.approx(with_margin, rel=1e-6)
    with pytest.raises(ValueError, match="differ"):
        bt_loss(torch.zeros(2), torch.zeros(3))


def test_pairwise_accuracy_counts_ties_half():
    assert pairwise_accuracy(torch.tensor([1.0, 2.0, 3.0, 5.0]), torch.tensor([0.0, 2.0, 4.0, 5.0])) == pytest.approx(0.5)
    assert pairwise_accuracy(torch.tensor([1.0]), torch.tensor([0.0])) == 1.0
    with pytest.raises(ValueError, match="no pairs"):
        pairwise_accuracy(torch.zeros(0), torch.zeros(0))


def test_fit_tiny_rm_learns_easy_pairs(tok):
    train, held = easy_pairs(256, 0), easy_pairs(128, 1)
    rm = tiny_rm(tok)
    before = evaluate_rm(rm, tok, held, max_length=64)
    seen = []
    out = fit_reward_model(rm, tok, train, held, RewardConfig(batch_size=16, margin=0.0), epochs=2, lr=2e-3,
                           max_length=64, seed=0, progress=False, log_fn=seen.append)
    assert out["steps"] == 32 and len(out["records"]) == 32 and seen == out["records"]
    assert out["eval_accuracy"] >= 0.95, out
    assert out["eval_loss"] < 0.3 < before["loss"]  # untrained: ~log 2
    assert out["train_accuracy"] >= 0.8
    assert not rm.training
    # the model is read where models.score reads it: a held-out chosen reply outscores its rejected one
    again = evaluate_rm(rm, tok, held, max_length=64, batch_size=7)
    assert again["accuracy"] == pytest.approx(out["eval_accuracy"])


def test_fractional_epochs_and_bad_input(tok):
    rm = tiny_rm(tok)
    out = fit_reward_model(rm, tok, easy_pairs(100, 2), None, RewardConfig(batch_size=16), epochs=0.5, lr=1e-3,
                           max_length=64, progress=False)
    assert out["steps"] == 4  # ceil(0.5 * ceil(100 / 16))
    assert out["eval_accuracy"] is None and math.isfinite(out["train_loss"])
    with pytest.raises(ValueError, match="train_pairs is empty"):
        fit_reward_model(rm, tok, [], None, RewardConfig(batch_size=4), epochs=1, lr=1e-3, max_length=64)
    bad = [PreferencePair("x", "p", None, "r")]
    with pytest.raises(ValueError, match=r"train_pairs\[0\]: field 'chosen'"):
        fit_reward_model(rm, tok, bad, None, RewardConfig(batch_size=4), epochs=1, lr=1e-3, max_length=64)
    with pytest.raises(ValueError, match="epochs > 0 and lr > 0"):
        fit_reward_model(rm, tok, easy_pairs(4, 2), None, RewardConfig(batch_size=4), epochs=0, lr=1e-3, max_length=64)


def test_fit_under_ddp_matches_plain_fit(tok, tmp_path):
    """The loop runs unchanged on a DDP-wrapped model (what Ray Train's prepare_model gives)."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    pairs, held = easy_pairs(64, 3), easy_pairs(32, 4)
    rcfg = RewardConfig(batch_size=16)
    kw = dict(epochs=1, lr=1e-3, max_length=64, seed=5, progress=False)
    plain = fit_reward_model(tiny_rm(tok), tok, pairs, held, rcfg, **kw)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    try:
        wrapped = DDP(tiny_rm(tok))
        ddp = fit_reward_model(wrapped, tok, pairs, held, rcfg, **kw)
    finally:
        dist.destroy_process_group()
    assert ddp["steps"] == plain["steps"] == 4
    assert [r["loss"] for r in ddp["records"]] == pytest.approx([r["loss"] for r in plain["records"]], rel=1e-4)
    assert ddp["eval_accuracy"] == pytest.approx(plain["eval_accuracy"])


def test_rm_on_gold_relabelled_benchmark_pairs_agrees_with_gold():
    """500 benchmark pairs oriented by the gold reward teach the default tiny RM to rank held-out pairs like gold."""
    from frft_ray.config import BenchmarkConfig
    from frft_ray.data.benchmark import gold_reward, make_benchmark, relabel_by_gold

    bm = make_benchmark(BenchmarkConfig(seed=0, sft_size=200, pool_size=1200, eval_prompts=10))
    texts = [d.prompt + d.response for d in bm.sft] + [p.prompt + p.chosen for p in bm.pool] + [p.prompt + p.rejected for p in bm.pool]
    btok = train_tokenizer(texts, vocab_size=2048, model_max_length=256)
    pairs = relabel_by_gold(bm.pool)
    train, held = pairs[:500], pairs[500:900]
    assert all(gold_reward(p.prompt, p.chosen) > gold_reward(p.prompt, p.rejected) for p in held)
    rm = build_reward_model(ModelsConfig(), btok, seed=0)  # the default tiny RM: GPT-2 L2 d128
    out = fit_reward_model(rm, btok, train, held, RewardConfig(batch_size=32), epochs=2, lr=2e-3, max_length=160, seed=0,
                           progress=False)
    # measured with the defaults (reward.dropout=0, reward.length_grouping=16, which sorts all 500 pairs by length
    # here): 0.715, 0.780, 0.735, 0.760 at seeds 0-3 (model and schedule seeded alike); plain shuffled batches
    # (length_grouping=1): 0.743, 0.745, 0.772, 0.748; with GPT-2's own dropout 0.1: 0.770, 0.752, 0.788, 0.738.
    # 500 pairs is near this model's limit here
    assert out["eval_accuracy"] >= 0.70, {k: v for k, v in out.items() if k != "records"}


def test_bf16_autocast_fit_keeps_fp32_weights_and_learns(tok):
    """precision bf16 on the CPU: forward/backward under bf16 autocast, fp32 master weights and optimizer state."""
    from frft_ray.devices import compute_dtype

    dtype = compute_dtype("bf16", torch.device("cpu"))
    rm = tiny_rm(tok)
    out = fit_reward_model(rm, tok, easy_pairs(256, 0), easy_pairs(128, 1), RewardConfig(batch_size=16), epochs=2,
                           lr=2e-3, max_length=64, seed=0, progress=False, dtype=dtype)
    assert out["device"] == "cpu/bf16"
    assert out["eval_accuracy"] >= 0.9, {k: v for k, v in out.items() if k != "records"}
    assert {p.dtype for p in rm.parameters()} == {torch.float32}
    assert all(math.isfinite(r["loss"]) for r in out["records"])


def test_gradient_checkpointing_fit_lowers_the_loss_then_switches_off(tok, tmp_path):
    """reward.gradient_checkpointing: on during the fit (also under DDP), off after it; the loss falls."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    rcfg = RewardConfig(batch_size=16, gradient_checkpointing=True)
    kw = dict(epochs=2, lr=2e-3, max_length=64, seed=0, progress=False)
    rm = tiny_rm(tok)
    seen = []
    out = fit_reward_model(rm, tok, easy_pairs(128, 0), easy_pairs(64, 1), rcfg,
                           log_fn=lambda rec: seen.append(rm.transformer.gradient_checkpointing), **kw)
    assert seen and all(seen) and not rm.transformer.gradient_checkpointing
    losses = [r["loss"] for r in out["records"]]
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4 - 0.1, losses
    assert out["eval_accuracy"] > 0.8 and out["device"] == "cpu/fp32"
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    try:  # non-reentrant checkpointing under DDP (what Ray Train's prepare_model gives)
        ddp = fit_reward_model(DDP(tiny_rm(tok)), tok, easy_pairs(64, 3), None, rcfg, **kw)
    finally:
        dist.destroy_process_group()
    assert ddp["records"][-1]["loss"] < ddp["records"][0]["loss"]


def test_reward_dropout_is_set_for_the_fit_only(tok):
    """reward.dropout: 0 (the default) turns every dropout layer off during the fit, so the training
    forward is deterministic; the model's own 0.1 is back afterwards. None keeps GPT-2's 0.1 on."""
    pairs = easy_pairs(64, 0)
    ids = tok(["Tell me about the garden.\nAnswer: the garden is calm."], return_tensors="pt")["input_ids"]

    def fit(dropout):
        rm = tiny_rm(tok)
        same = []

        def probe(rec):  # mid-fit, in train mode: do two forwards of one input agree?
            with torch.no_grad():
                same.append(torch.equal(rm(input_ids=ids).logits, rm(input_ids=ids).logits))

        out = fit_reward_model(rm, tok, pairs, None, RewardConfig(batch_size=16, dropout=dropout), epochs=1,
                               lr=2e-3, max_length=64, seed=0, progress=False, log_fn=probe)
        assert out["dropout"] == dropout and out["records"][-1]["loss"] < out["records"][0]["loss"] + 0.05
        assert rm.transformer.h[0].attn.attn_dropout.p == 0.1 and rm.transformer.drop.p == 0.1  # restored
        return same

    assert all(fit(0.0))
    assert not any(fit(None))


@pytest.mark.gpu
def test_fit_on_cuda_trains_in_bf16_autocast_with_fp32_weights(tok):
    from frft_ray.devices import compute_dtype

    device = torch.device("cuda")
    rm = tiny_rm(tok).to(device)
    out = fit_reward_model(rm, tok, easy_pairs(256, 0), easy_pairs(128, 1),
                           RewardConfig(batch_size=16, gradient_checkpointing=True), epochs=2, lr=2e-3, max_length=64,
                           progress=False, dtype=compute_dtype("auto", device))
    assert out["device"] == "cuda:0/bf16"
    assert out["eval_accuracy"] >= 0.9, {k: v for k, v in out.items() if k != "records"}
    assert {p.dtype for p in rm.parameters()} == {torch.float32}
