"""PPO math against hand-computed values and reference loops, and a few real PPO steps on a tiny GPT-2."""

import math
import random

import pytest
import torch

from frft_ray.algorithms.ppo import (
    AdaptiveKLController,
    FixedKLController,
    entropy_from_logits,
    gae,
    kl_penalized_rewards,
    make_kl_controller,
    masked_mean,
    masked_var,
    masked_whiten,
    policy_loss,
    value_loss,
)
from frft_ray.algorithms.ppo_update import PPOLearner, response_forward
from frft_ray.config import ModelsConfig, PPOConfig, RolloutConfig, TinyModelConfig
from frft_ray.models import ValueHead, build_policy, frozen_reference, hidden_size, train_tokenizer
from frft_ray.rollout import generate

SUBJ = ["the cat", "a dog", "my friend", "the teacher", "our robot", "a bird"]
VERB = ["likes", "sees", "paints", "finds", "wants", "hears"]
OBJ = ["red apples", "the sea", "green trees", "small boxes", "warm bread", "old books"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tok():
    rng = random.Random(0)
    texts = [f"{rng.choice(SUBJ)} {rng.choice(VERB)} {rng.choice(OBJ)}." for _ in range(3000)]
    return train_tokenizer(texts, vocab_size=300, model_max_length=128)


def tiny_policy(tok, seed=0):
    mcfg = ModelsConfig(tiny=TinyModelConfig(n_layer=2, n_embd=64, n_head=4, n_positions=128, vocab_size=300))
    return build_policy(mcfg, tok, seed=seed)


# ---------------------------------------------------------------- masked statistics


def test_masked_stats_ignore_padding():
    x = torch.tensor([[1.0, 2.0, 100.0], [3.0, 100.0, 100.0]])
    m = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert masked_mean(x, m).item() == pytest.approx(2.0)
    assert masked_var(x, m).item() == pytest.approx(1.0)  # values 1,2,3: unbiased variance 1
    assert masked_var(x, m, unbiased=False).item() == pytest.approx(2 / 3)
    w = masked_whiten(x, m)
    assert masked_mean(w, m).item() == pytest.approx(0.0, abs=1e-6)
    assert masked_var(w, m).item() == pytest.approx(1.0, abs=1e-5)
    assert w[0, 2] == 0 and w[1, 1] == 0
    s = masked_whiten(x, m, shift_mean=False)
    assert masked_mean(s, m).item() == pytest.approx(2.0, abs=1e-6)


def test_entropy_of_uniform_and_peaked_logits():
    assert entropy_from_logits(torch.zeros(2, 7)).tolist() == pytest.approx([math.log(7)] * 2)
    assert entropy_from_logits(torch.tensor([[100.0, 0.0, 0.0]])).item() == pytest.approx(0.0, abs=1e-6)


# ---------------------------------------------------------------- GAE


def gae_reference(rewards, values, lengths, gamma, lam):
    B, T = rewards.shape
    adv = torch.zeros(B, T)
    for b in range(B):
        last = 0.0
        for t in reversed(range(lengths[b])):
            next_v = values[b, t + 1].item() if t + 1 < lengths[b] else 0.0
            delta = rewards[b, t].item() + gamma * next_v - values[b, t].item()
            last = delta + gamma * lam * last
            adv[b, t] = last
    ret = adv + values * (adv != 0)
    for b in range(B):
        ret[b, : lengths[b]] = adv[b, : lengths[b]] + values[b, : lengths[b]]
    return adv, ret


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.9, 0.8), (1.0, 1.0)])
def test_gae_matches_reference_double_loop(gamma, lam):
    g = torch.Generator().manual_seed(1)
    B, T = 5, 9
    rewards, values = torch.randn(B, T, generator=g), torch.randn(B, T, generator=g)
    lengths = [9, 1, 4, 7, 2]
    mask = torch.tensor([[1] * n + [0] * (T - n) for n in lengths])
    adv, ret = gae(rewards, values, mask, gamma, lam)
    ref_adv, ref_ret = gae_reference(rewards, values, lengths, gamma, lam)
    torch.testing.assert_close(adv, ref_adv, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ret * mask, ref_ret * mask, atol=1e-5, rtol=1e-5)
    assert (adv[mask == 0] == 0).all() and (ret[mask == 0] == 0).all()


# ---------------------------------------------------------------- losses


def test_policy_loss_clipped_tokens_get_no_gradient():
    old = torch.zeros(1, 6)
    ratios = torch.tensor([[1.5, 0.5, 1.1, 0.9, 1.5, 0.5]])
    adv = torch.tensor([[1.0, -1.0, 1.0, -1.0, -1.0, 1.0]])
    lp = torch.log(ratios).clone().requires_grad_(True)
    mask = torch.ones(1, 6)
    loss, stats = policy_loss(lp, old, adv, mask, clip_range=0.2)
    loss.backward()
    g = lp.grad[0]
    # tokens 0, 1: ratio outside the range in the direction the advantage pushes -> clipped, zero gradient
    assert g[0] == 0 and g[1] == 0
    # inside the range, or outside but on the pessimistic side (4, 5): the unclipped term is active
    assert (g[2:] != 0).all()
    assert stats["clipfrac"] == pytest.approx(2 / 6)
    # loss = mean(max(-A r, -A clip(r))) computed by hand
    expected = (-1.2 + 0.8 - 1.1 + 0.9 + 1.5 - 0.5) / 6
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert stats["approx_kl"] > 0


def test_policy_loss_at_ratio_one_is_minus_mean_advantage():
    adv = torch.tensor([[0.5, -2.0, 3.0]])
    mask = torch.tensor([[1, 1, 0]])
    loss, stats = policy_loss(torch.zeros(1, 3), torch.zeros(1, 3), adv, mask, 0.2)
    assert loss.item() == pytest.approx(0.75)
    assert stats == {"clipfrac": 0.0, "approx_kl": 0.0}


def test_value_loss_clips_large_moves():
    old, ret = torch.zeros(1, 2), torch.tensor([[1.0, 1.0]])
    v = torch.tensor([[0.5, 2.0]], requires_grad=True)
    loss, stats = value_loss(v, old, ret, torch.ones(1, 2), clip_range_value=0.2)
    # token 0: unclipped (0.5-1)^2=0.25, clipped (0.2-1)^2=0.64 -> 0.64 (clipped, no grad)
    # token 1: unclipped (2-1)^2=1.0, clipped (0.2-1)^2=0.64 -> 1.0
    assert loss.item() == pytest.approx(0.5 * (0.64 + 1.0) / 2)
    assert stats["vf_clipfrac"] == pytest.approx(0.5)
    loss.backward()
    assert v.grad[0, 0] == 0 and v.grad[0, 1] != 0


def test_kl_penalized_rewards_by_hand():
    lp = torch.tensor([[-1.0, -2.0, -3.0], [-1.0, -1.0, 0.0]])
    ref = torch.tensor([[-1.5, -1.0, -3.0], [-2.0, -1.0, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    r = kl_penalized_rewards(torch.tensor([2.0, -1.0]), lp, ref, mask, kl_coef=0.1)
    expected = torch.tensor([[-0.05, 0.1, 2.0], [-0.1, -1.0, 0.0]])
    torch.testing.assert_close(r, expected)
    with pytest.raises(ValueError, match="scores"):
        kl_penalized_rewards(torch.zeros(3), lp, ref, mask, 0.1)


# ---------------------------------------------------------------- KL controllers


def test_adaptive_kl_moves_towards_target_and_fixed_stays():
    up = AdaptiveKLController(0.1, target=6.0, horizon=10000)
    up.update(current_kl=60.0, n_steps=1000)  # error clipped to +0.2
    assert up.value == pytest.approx(0.1 * (1 + 0.2 * 0.1))
    down = AdaptiveKLController(0.1, target=6.0, horizon=10000)
    down.update(current_kl=3.0, n_steps=1000)  # error -0.5 clipped to -0.2
    assert down.value == pytest.approx(0.1 * (1 - 0.2 * 0.1))
    near = AdaptiveKLController(0.1, target=6.0, horizon=10000)
    near.update(current_kl=6.6, n_steps=10000)  # error +0.1, full horizon
    assert near.value == pytest.approx(0.11)
    fixed = FixedKLController(0.1)
    fixed.update(100.0, 1000)
    assert fixed.value == 0.1
    restored = AdaptiveKLController(0.5, target=1.0, horizon=5)
    restored.load_state_dict(up.state_dict())
    assert (restored.value, restored.target, restored.horizon) == (up.value, 6.0, 10000)
    assert isinstance(make_kl_controller(PPOConfig(adaptive_kl=False)), FixedKLController)


# ---------------------------------------------------------------- the learner on a real tiny GPT-2


def test_learner_logprobs_match_sampling_with_left_padding(tok):
    """Prompts of different lengths are left-padded; the learner's forward must see what generate saw."""
    pol = tiny_policy(tok)
    prompts = ["the cat", "a dog likes the sea and", "my"]
    b = generate(pol, tok, prompts, RolloutConfig(max_new_tokens=8, batch_size=3), 32, seed=0)
    assert b.query_mask.sum(1).unique().numel() > 1  # really left-padded
    with torch.no_grad():
        out = response_forward(pol.eval(), b.query_ids, b.query_mask, b.response_ids, b.response_mask)
    torch.testing.assert_close(out["logprobs"] * b.response_mask, b.logprobs, atol=1e-4, rtol=1e-4)


def token_share_score(batch, target: set[int], max_new: int) -> torch.Tensor:
    """Synthetic reward: share of the response budget spent on tokens from `target`."""
    out = []
    for ids, m in zip(batch.response_ids.tolist(), batch.response_mask.tolist()):
        out.append(sum(1 for t, k in zip(ids, m) if k and t in target) / max_new)
    return torch.tensor(out)


def test_ppo_steps_raise_the_score(tok):
    torch.manual_seed(0)
    pol = tiny_policy(tok)
    ref = frozen_reference(pol)
    vh = ValueHead(hidden_size(pol))
    B, max_new = 32, 12
    cfg = PPOConfig(lr=3e-3, batch_size=B, minibatch_size=16, epochs=2, kl_coef=0.01, adaptive_kl=True, target_kl=1.0)
    rcfg = RolloutConfig(max_new_tokens=max_new, batch_size=B)
    target = set(range(2, len(tok), 2))  # half the vocabulary (no special tokens)
    rng = random.Random(1)
    prompts = [f"{rng.choice(SUBJ)} {rng.choice(VERB)}" for _ in range(B)]
    learner = PPOLearner(pol, ref, vh, tok, cfg)

    def mean_score():
        return token_share_score(generate(pol, tok, prompts * 2, rcfg, 32, seed=123), target, max_new).mean().item()

    before = mean_score()
    stats = []
    for s in range(10):
        b = generate(pol, tok, prompts, rcfg, 32, seed=s)
        stats.append(learner.step(b, token_share_score(b, target, max_new)))
    after = mean_score()
    assert after > before + 0.15, (before, after)
    first = stats[0]
    for key in ("ppo/policy_loss", "ppo/value_loss", "ppo/entropy", "ppo/approx_kl", "ppo/clipfrac",
                "ppo/kl_coef", "ppo/mean_kl", "ppo/score_mean", "ppo/score_std", "ppo/reward_mean"):
        assert all(math.isfinite(s[key]) for s in stats), key
    assert first["ppo/score_std"] > 0
    assert first["ppo/mean_kl"] == pytest.approx(0.0, abs=1e-5)  # policy == reference at step 0
    assert first["ppo/logprob_gap"] < 1e-4  # recomputed log-probs equal the sampler's
    assert stats[-1]["ppo/mean_kl"] > 0
    assert stats[-1]["ppo/score_mean"] > first["ppo/score_mean"]

    # resume: a fresh learner loading the state has the same KL coefficient and optimizer moments
    again = PPOLearner(pol, ref, vh, tok, cfg)
    again.load_state_dict(learner.state_dict())
    assert again.kl_ctl.value == learner.kl_ctl.value and again.steps == 10
    a_state, b_state = again.opt.state_dict()["state"], learner.opt.state_dict()["state"]
    torch.testing.assert_close(a_state[0]["exp_avg"], b_state[0]["exp_avg"])
    with pytest.raises(ValueError, match="KL controller"):
        PPOLearner(pol, ref, vh, tok, cfg.model_copy(update={"adaptive_kl": False})).load_state_dict(learner.state_dict())


def test_ppo_step_rejects_bad_scores(tok):
    pol = tiny_policy(tok)
    learner = PPOLearner(pol, frozen_reference(pol), ValueHead(hidden_size(pol)), tok, PPOConfig(minibatch_size=2, batch_size=2))
    b = generate(pol, tok, ["the cat", "a dog"], RolloutConfig(max_new_tokens=4, batch_size=2), 32, seed=0)
    with pytest.raises(ValueError, match="scores has shape"):
        learner.step(b, torch.zeros(3))
    with pytest.raises(ValueError, match="NaN"):
        learner.step(b, torch.tensor([0.0, float("nan")]))


def test_entropy_carries_grad_only_when_it_is_in_the_loss(tok):
    pol = tiny_policy(tok)
    b = generate(pol, tok, ["the cat", "a dog likes"], RolloutConfig(max_new_tokens=6, batch_size=2), 32, seed=0)
    args = (b.query_ids, b.query_mask, b.response_ids, b.response_mask)
    logged = response_forward(pol, *args, entropy="no_grad")
    trained = response_forward(pol, *args, entropy="grad")
    assert logged["logprobs"].requires_grad and not logged["entropy"].requires_grad
    assert trained["entropy"].requires_grad
    torch.testing.assert_close(logged["entropy"], trained["entropy"].detach())
    assert "entropy" not in response_forward(pol, *args, entropy="none")


def test_bf16_ppo_step_keeps_fp32_master_weights(tok):
    """precision=bf16 on the CPU: autocast forward/backward, finite loss, fp32 weights and AdamW state move."""
    torch.manual_seed(0)
    pol = tiny_policy(tok)
    vh = ValueHead(hidden_size(pol))
    cfg = PPOConfig(lr=1e-3, batch_size=4, minibatch_size=2, epochs=1)
    learner = PPOLearner(pol, frozen_reference(pol), vh, tok, cfg, dtype=torch.bfloat16)
    b = generate(pol, tok, ["the cat", "a dog", "my friend sees", "our robot"], RolloutConfig(max_new_tokens=6, batch_size=4), 32, seed=0)
    before = [p.detach().clone() for p in learner.params]
    stats = learner.step(b, torch.tensor([1.0, -1.0, 0.5, 0.0]))
    assert all(math.isfinite(stats[k]) for k in ("ppo/policy_loss", "ppo/value_loss", "ppo/entropy", "ppo/grad_norm"))
    assert all(p.dtype == torch.float32 for p in learner.params)
    assert all(s["exp_avg"].dtype == torch.float32 for s in learner.opt.state.values())
    moved = [not torch.equal(a, p.detach()) for a, p in zip(before, learner.params)]
    assert all(moved[-2:]) and sum(moved) > len(moved) // 2  # value head and most of the policy changed
    assert 1e-5 < stats["ppo/logprob_gap"] < 0.05  # computed in bf16 (not fp32), close to the fp32 sampler


def test_non_finite_update_is_skipped_and_weights_stay_finite(tok):
    """A NaN loss (here: a value head with NaN weights) never reaches the policy weights: the update is skipped."""
    pol = tiny_policy(tok)
    vh = ValueHead(hidden_size(pol))
    with torch.no_grad():
        vh.summary.weight.fill_(float("nan"))
    learner = PPOLearner(pol, frozen_reference(pol), vh, tok, PPOConfig(lr=1e-3, batch_size=4, minibatch_size=2, epochs=1))
    b = generate(pol, tok, ["the cat", "a dog", "my friend", "our robot"], RolloutConfig(max_new_tokens=6, batch_size=4), 32, seed=0)
    before = [p.detach().clone() for p in pol.parameters()]
    stats = learner.step(b, torch.tensor([1.0, -1.0, 0.5, 0.0]))
    assert stats["ppo/skipped_updates"] == 2  # both minibatches
    assert all(torch.equal(a, p.detach()) for a, p in zip(before, pol.parameters()))


def _one_step_weights(tok, scores_shift: float, center: bool) -> torch.Tensor:
    torch.manual_seed(0)
    pol = tiny_policy(tok)
    vh = ValueHead(hidden_size(pol))
    cfg = PPOConfig(lr=1e-3, batch_size=8, minibatch_size=4, epochs=1, center_scores=center)
    learner = PPOLearner(pol, frozen_reference(pol), vh, tok, cfg)
    b = generate(pol, tok, [f"{s} likes" for s in SUBJ[:4]] * 2, RolloutConfig(max_new_tokens=6, batch_size=8), 32, seed=0)
    scores = torch.linspace(0.0, 1.0, 8) + scores_shift
    learner.step(b, scores)
    return torch.cat([p.detach().flatten() for p in pol.parameters()])


def test_centered_scores_make_the_update_blind_to_a_score_offset(tok):
    """A constant added to every score (an RM's arbitrary offset, the gold reward's negative mean) must not
    change the policy update; uncentered, it does (it lands on the EOS token: see PPOLearner)."""
    torch.testing.assert_close(_one_step_weights(tok, 0.0, True), _one_step_weights(tok, -3.0, True))
    assert not torch.allclose(_one_step_weights(tok, 0.0, False), _one_step_weights(tok, -3.0, False))


def test_micro_batches_accumulate_to_the_whole_minibatch_update(tok):
    """ppo.micro_batch_size splits each minibatch's forward/backward (less activation memory) and gives the
    same update: token-weighted gradient accumulation equals the whole minibatch's token-mean loss."""
    prompts = ["the cat", "a dog", "my friend sees", "our robot", "a tree", "the sun is", "one bird", "her cat"]
    results = []
    for micro in (None, 3):  # 3 does not divide the minibatch of 8: chunks of 3, 3, 2
        torch.manual_seed(0)
        pol = tiny_policy(tok)
        vh = ValueHead(hidden_size(pol))
        cfg = PPOConfig(lr=1e-3, batch_size=8, minibatch_size=8, micro_batch_size=micro, epochs=1)
        learner = PPOLearner(pol, frozen_reference(pol), vh, tok, cfg)
        b = generate(pol, tok, prompts, RolloutConfig(max_new_tokens=8, batch_size=8), 32, seed=0)
        stats = learner.step(b, torch.linspace(-1, 1, 8))
        results.append((torch.cat([p.detach().flatten() for p in learner.params]), stats))
    (whole, s_whole), (micro, s_micro) = results
    torch.manual_seed(0)
    start = torch.cat([p.detach().flatten() for p in [*tiny_policy(tok).parameters(), *ValueHead(hidden_size(pol)).parameters()]])
    assert (whole - start).abs().max() > 1e-4  # the step moved the weights
    torch.testing.assert_close(micro, whole, rtol=1e-4, atol=1e-5)  # AdamW's 1/sqrt(v) magnifies float rounding
    for k in ("ppo/policy_loss", "ppo/value_loss", "ppo/grad_norm", "ppo/clipfrac"):
        assert s_micro[k] == pytest.approx(s_whole[k], rel=1e-4, abs=1e-6), k
