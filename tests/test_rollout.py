"""Rollout log-probs gathered during `generate` equal a teacher-forced forward on the returned tokens."""

import pytest
import torch

from frft_ray.config import ModelsConfig, RolloutConfig, TinyModelConfig
from frft_ray.models import build_policy, position_ids_from_mask, train_tokenizer
from frft_ray.rollout import generate, inverse_cdf_sampler

pytestmark = pytest.mark.usefixtures("one_torch_thread")

WORDS = ["red", "blue", "cat", "dog", "runs", "sleeps", "under", "the", "big", "tree", "and", "a"]
PROMPTS = ["the cat", "a big dog runs under the", "red", "blue tree and the cat sleeps", "a", "the dog and"]


@pytest.fixture(scope="module")
def tok():
    import random

    rng = random.Random(0)
    return train_tokenizer([" ".join(rng.choice(WORDS) for _ in range(8)) for _ in range(2000)], 300, 128)


@pytest.fixture(scope="module")
def policy(tok):
    """A tiny GPT-2 whose EOS logit is scaled up, so that some responses stop early and get padded."""
    mcfg = ModelsConfig(tiny=TinyModelConfig(n_layer=2, n_embd=64, n_head=4, n_positions=128, vocab_size=300))
    pol = build_policy(mcfg, tok, seed=3)
    with torch.no_grad():
        pol.lm_head.weight[tok.eos_token_id] *= 4.0  # tied to the input embedding; EOS is never an input here
    return pol.eval()


def teacher_logits(pol, b) -> torch.Tensor:
    """[B, R, V] fp32 logits at each response position, from one forward over prompt + response."""
    ids = torch.cat([b.query_ids, b.response_ids], dim=1)
    mask = torch.cat([b.query_mask, b.response_mask], dim=1)
    P, R = b.query_ids.shape[1], b.response_ids.shape[1]
    with torch.no_grad():
        logits = pol(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask)).logits
    return logits[:, P - 1 : P - 1 + R].float()


def teacher_forced_logprobs(pol, b, temperature: float) -> torch.Tensor:
    """log_softmax(logits / T) at each response token."""
    lp = torch.log_softmax(teacher_logits(pol, b) / temperature, dim=-1)
    return lp.gather(-1, b.response_ids.unsqueeze(-1)).squeeze(-1) * b.response_mask


@pytest.mark.parametrize("greedy", [False, True])
def test_generate_logprobs_match_teacher_forced_forward(tok, policy, greedy):
    cfg = RolloutConfig(max_new_tokens=10, batch_size=4, temperature=0.7, top_k=20, top_p=0.9)
    b = generate(policy, tok, PROMPTS, cfg, 32, greedy=greedy, seed=1)
    lengths = b.response_mask.sum(1)
    assert lengths.min() < 10 and lengths.max() == 10, lengths  # some rows stopped at EOS and were padded
    assert (b.response_ids[b.response_mask == 0] == tok.pad_token_id).all()
    assert b.logprobs.device.type == "cpu" and b.logprobs.dtype == torch.float32
    expected = teacher_forced_logprobs(policy, b, 1.0 if greedy else cfg.temperature)
    torch.testing.assert_close(b.logprobs, expected, atol=1e-4, rtol=1e-4)
    assert (b.logprobs[b.response_mask == 0] == 0).all()
    if not greedy:  # top-k = 20: every sampled token is among the row's 20 likeliest
        lp = torch.log_softmax(teacher_logits(policy, b) / cfg.temperature, -1)
        rank = (lp > b.logprobs.unsqueeze(-1) + 1e-4).sum(-1)
        assert (rank[b.response_mask == 1] < cfg.top_k).all()
    if greedy:  # the argmax token: its log-prob is the row's largest
        best = torch.log_softmax(teacher_logits(policy, b), -1).max(-1).values * b.response_mask
        torch.testing.assert_close(b.logprobs, best, atol=1e-4, rtol=1e-4)


def test_bf16_policy_generates_with_finite_fp32_logprobs(tok, policy):
    """An inference-only bf16 copy (what a bf16 rollout worker holds) samples and reports fp32 log-probs."""
    import copy

    pol16 = copy.deepcopy(policy).to(torch.bfloat16)
    b = generate(pol16, tok, PROMPTS[:3], RolloutConfig(max_new_tokens=6, batch_size=3), 32, seed=0)
    assert b.logprobs.dtype == torch.float32 and torch.isfinite(b.logprobs).all()
    assert (b.logprobs[b.response_mask == 1] < 0).all()
    expected = teacher_forced_logprobs(pol16, b, 1.0)
    torch.testing.assert_close(b.logprobs, expected, atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("temperature, top_k, top_p", [(1.0, 0, 1.0), (0.7, 20, 0.9)])
def test_inverse_cdf_sampler_draws_from_the_warped_distribution(temperature, top_k, top_p):
    """The sampler `generate` runs with: 20,000 draws per row match softmax(transformers' own warpers),
    within 5 standard errors per token, and a token the warpers removed is never drawn."""
    from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    torch.manual_seed(0)
    logits = torch.randn(3, 60) * 2.0
    warp = LogitsProcessorList([TemperatureLogitsWarper(temperature)] + ([TopKLogitsWarper(top_k)] if top_k else [])
                               + ([TopPLogitsWarper(top_p)] if top_p < 1 else []))
    p = torch.softmax(warp(None, logits.clone()), -1)
    sampler, n = inverse_cdf_sampler(temperature, top_k, top_p), 20_000
    counts = torch.zeros_like(p)
    for _ in range(n):
        out = sampler(None, logits)
        assert (torch.isfinite(out).sum(-1) == 1).all()  # one finite score per row: generate's argmax takes it
        counts.scatter_add_(1, out.argmax(-1, keepdim=True), torch.ones(3, 1))
    freq = counts / n
    assert (freq[p == 0] == 0).all() and (p == 0).any() == bool(top_k or top_p < 1)
    assert ((freq - p).abs() <= 5 * (p * (1 - p) / n).sqrt() + 1e-4).all()
