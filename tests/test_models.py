"""Tiny models: offline tokenizer, save/load round trip with safetensors, RM scoring, rollout batches."""

import json

import pytest
import torch

from frft_ray.config import ModelsConfig, RolloutConfig, RunConfig
from frft_ray.models import (
    ValueHead,
    build_policy,
    build_reward_model,
    frozen_reference,
    fuse_activations,
    hidden_size,
    load_policy_checkpoint,
    load_reward_checkpoint,
    position_ids_from_mask,
    rm_collate,
    rm_forward,
    rm_inputs,
    rm_token_ids,
    save_checkpoint,
    score,
    train_tokenizer,
)
from frft_ray.rollout import RolloutBatch, generate, response_mask_from_ids

TEXTS = [f"\n\nHuman: How do I make item {i}?\n\nAssistant: Mix part {i % 7} with part {i % 5}, then wait." for i in range(300)]


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(TEXTS, 512, 128)


def test_tokenizer_is_left_padded_and_round_trips(tok, tmp_path):
    assert tok.padding_side == "left" and tok.pad_token_id != tok.eos_token_id
    enc = tok(["a", "a longer text here"], padding=True)
    assert enc["input_ids"][0][0] == tok.pad_token_id
    tok.save_pretrained(tmp_path)
    from frft_ray.models import load_tokenizer

    again = load_tokenizer(str(tmp_path))
    assert again(TEXTS[3])["input_ids"] == tok(TEXTS[3])["input_ids"]
    assert again.decode(again(TEXTS[3])["input_ids"]) == TEXTS[3]


def test_policy_checkpoint_round_trip_with_value_head_and_config(tok, tmp_path):
    m = ModelsConfig(tiny={"n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 128, "vocab_size": 512}, max_prompt_tokens=64, max_length=128)
    policy = build_policy(m, tok, seed=3)
    vh = ValueHead(hidden_size(policy))
    cfg = RunConfig(models=m, seed=3)
    save_checkpoint(tmp_path / "p", policy, tok, cfg, {"kind": "policy", "version": 7}, value_head=vh)
    assert (tmp_path / "p" / "model.safetensors").exists()
    assert json.loads((tmp_path / "p" / "meta.json").read_text())["version"] == 7
    assert "n_embd: 32" in (tmp_path / "p" / "frft_config.yaml").read_text()
    loaded = load_policy_checkpoint(tmp_path / "p", with_value_head=True)
    ids = tok(TEXTS[:2], return_tensors="pt", padding=True)
    with torch.no_grad():
        a = policy.eval()(**ids).logits
        b = loaded.model.eval()(**ids).logits
    assert torch.equal(a, b)
    h = torch.randn(2, 5, hidden_size(policy))
    assert torch.equal(vh(h), loaded.meta["value_head"](h))


def test_reward_model_scores_one_logit_and_round_trips(tok, tmp_path):
    m = ModelsConfig(tiny={"n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 128, "vocab_size": 512}, max_prompt_tokens=64, max_length=128)
    rm = build_reward_model(m, tok)
    s = score(rm, tok, ["\n\nHuman: hi\n\nAssistant:"] * 3, [" a", " bb bb", " c c c c"], 128)
    assert s.shape == (3,) and s.dtype == torch.float32
    save_checkpoint(tmp_path / "rm", rm, tok, None, {"kind": "rm", "version": 1})
    loaded = load_reward_checkpoint(tmp_path / "rm")
    s2 = score(loaded.model, loaded.tokenizer, ["\n\nHuman: hi\n\nAssistant:"] * 3, [" a", " bb bb", " c c c c"], 128)
    assert torch.allclose(s, s2, atol=1e-6)
    # left padding must not change a sequence's score
    alone = score(loaded.model, loaded.tokenizer, ["\n\nHuman: hi\n\nAssistant:"], [" a"], 128)
    assert torch.allclose(alone, s2[:1], atol=1e-5)


def test_rm_forward_is_the_scoring_path_and_positions_count_real_tokens(tok):
    m = ModelsConfig(tiny={"n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 128, "vocab_size": 512})
    rm = build_reward_model(m, tok).eval()
    prompts, responses = ["\n\nHuman: hi\n\nAssistant:"] * 3, [" a", " bb bb", " c c c c"]
    with torch.no_grad():
        assert torch.equal(rm_forward(rm, tok, prompts, responses, 128), score(rm, tok, prompts, responses, 128))
        assert rm_forward(rm, tok, prompts, responses, 128, position_ids=False).shape == (3,)
    with pytest.raises(ValueError, match="3 prompts but 2 responses"):
        rm_forward(rm, tok, prompts, responses[:2], 128)
    # a fit's path: tokenized once (here with left truncation at 6 tokens), padded per batch; the same tensors
    for limit in (128, 6):
        once = rm_collate(tok, rm_token_ids(tok, prompts, responses, limit))
        assert {k: v.tolist() for k, v in once.items()} == {k: v.tolist() for k, v in rm_inputs(tok, prompts, responses, limit).items()}
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 0, 0]])  # left- and right-padded rows
    assert position_ids_from_mask(mask).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 2, 2]]


def test_missing_rm_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_reward_checkpoint(tmp_path / "nothing")


def test_frozen_reference_has_no_grad(tok):
    ref = frozen_reference(build_policy(ModelsConfig(tiny={"n_layer": 1, "n_embd": 32, "n_head": 2}), tok))
    assert not any(p.requires_grad for p in ref.parameters())


def test_generate_returns_aligned_batch_and_concat_keeps_order(tok):
    m = ModelsConfig(tiny={"n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 128, "vocab_size": 512}, max_prompt_tokens=32, max_length=64)
    policy = build_policy(m, tok)
    prompts = [t.split("Assistant:")[0] + "Assistant:" for t in TEXTS[:5]]
    rc = RolloutConfig(batch_size=2, max_new_tokens=8)
    batch = generate(policy, tok, prompts, rc, 32, seed=0)
    assert len(batch) == 5 and batch.prompts == prompts
    assert batch.response_ids.shape == batch.logprobs.shape == batch.response_mask.shape
    assert (batch.logprobs <= 0).all() and (batch.logprobs[batch.response_mask == 0] == 0).all()
    again = generate(policy, tok, prompts, rc, 32, seed=0)
    assert again.responses == batch.responses  # seeded sampling is reproducible
    other = generate(policy, tok, prompts, rc, 32, policy_version=1)
    with pytest.raises(ValueError, match="mix policy versions"):
        RolloutBatch.concat([batch, other], tok.pad_token_id)


def test_response_mask_stops_after_first_eos():
    ids = torch.tensor([[5, 6, 1, 7, 1], [5, 5, 5, 5, 5]])
    assert response_mask_from_ids(ids, 1).tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]


def test_hf_model_shorter_than_max_length_is_a_config_error(tok, tmp_path):
    """An HF folder (not `tiny`) whose position table is shorter than models.max_length fails at build
    time, naming the keys, rather than with an index error inside an actor."""
    from frft_ray.config import ConfigError

    small = build_policy(ModelsConfig(tiny={"n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 64}), tok)
    small.save_pretrained(tmp_path / "hf")
    tok.save_pretrained(tmp_path / "hf")
    with pytest.raises(ConfigError, match=r"models.max_length \(96\) exceeds the 64 positions of models.policy"):
        build_policy(ModelsConfig(policy=str(tmp_path / "hf"), max_prompt_tokens=32, max_length=96), tok)
    with pytest.raises(ConfigError, match="models.reward"):
        build_reward_model(ModelsConfig(reward=str(tmp_path / "hf"), max_prompt_tokens=32, max_length=96), tok)
    fits = build_policy(ModelsConfig(policy=str(tmp_path / "hf"), max_prompt_tokens=32, max_length=64), tok)
    assert fits.config.n_positions == 64 and fits.config.pad_token_id == tok.pad_token_id


def test_fused_gelu_matches_gpt2s_gelu_new_and_survives_a_save(tok, tmp_path):
    """fuse_activations swaps gelu_new (eight tensor ops) for torch's fused tanh GELU: same outputs up to
    rounding, and the saved config loads fused."""
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.activations import NewGELUActivation

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=64, n_layer=2, n_embd=32, n_head=2)).eval()
    assert model.config.activation_function == "gelu_new"
    ids = torch.randint(0, len(tok), (2, 12))
    with torch.no_grad():
        before = model(input_ids=ids).logits
        fuse_activations(model)
        after = model(input_ids=ids).logits
    assert not any(isinstance(m, NewGELUActivation) for m in model.modules())
    assert model.config.activation_function == "gelu_pytorch_tanh"
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)
    save_checkpoint(tmp_path / "p", model, tok, None, {"kind": "policy"})
    loaded = load_policy_checkpoint(tmp_path / "p").model
    assert loaded.config.activation_function == "gelu_pytorch_tanh"
    assert not any(isinstance(m, NewGELUActivation) for m in loaded.modules())
