"""PPO for language models, the math: masked statistics, GAE, KL controllers, and the losses.

Written by hand because the TRL release this project pins (1.16) no longer ships a PPO trainer,
nor masked whitening or KL controllers; its `trl.trainer.utils` helpers (entropy, selective
log-softmax) are internal and have moved between releases, so the few lines each needs are written
out here (`entropy_from_logits`) and in `ppo_update.token_logprobs` (gather - logsumexp).
Conventions: every per-token tensor is [batch, response_len], right-padded, with a `mask` that is
1 on real response tokens (a prefix of each row) and 0 on padding. The learner that drives these
pieces over a rollout batch is `frft_ray.algorithms.ppo_update.PPOLearner`.
"""

from __future__ import annotations

import torch

from frft_ray.config import PPOConfig

# ---------------------------------------------------------------- masked statistics


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of `x` over positions where `mask` is 1 (0 when nothing is masked in)."""
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of `x` over masked-in positions (Bessel-corrected when `unbiased`)."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    if unbiased:
        n = mask.sum()
        if n > 1:
            var = var * n / (n - 1)
    return var


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """Scale `x` to unit variance over the mask (and zero mean if `shift_mean`); padding set to 0."""
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask.to(x.dtype)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the softmax distribution at each position: logsumexp(z) - sum(p * z)."""
    logits = logits.float()
    p = torch.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (p * logits).sum(-1)


# ---------------------------------------------------------------- advantages


@torch.no_grad()
def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation (Schulman et al. 2016), vectorized over the batch.

    The value after the last real token is 0 (the episode ends there). Returns (advantages,
    returns = advantages + values), both 0 on padding.
    """
    if not (rewards.shape == values.shape == mask.shape):
        raise ValueError(f"gae: shapes differ: rewards {tuple(rewards.shape)}, values {tuple(values.shape)}, mask {tuple(mask.shape)}")
    m = mask.to(rewards.dtype)
    rewards, values = rewards * m, values * m
    T = rewards.shape[1]
    adv = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(T)):
        next_v = values[:, t + 1] if t + 1 < T else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_v - values[:, t]
        last = delta + gamma * lam * last
        adv[:, t] = last
    adv = adv * m
    return adv, (adv + values) * m


# ---------------------------------------------------------------- KL penalty


class FixedKLController:
    """A constant KL coefficient."""

    def __init__(self, kl_coef: float):
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> None:
        pass

    def state_dict(self) -> dict:
        return {"kind": "fixed", "value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = float(state["value"])


class AdaptiveKLController:
    """Adaptive KL coefficient (Ziegler et al. 2019): steer the measured KL towards `target`.

    error = clip(KL / target - 1, -0.2, 0.2); value *= 1 + error * n_steps / horizon, where
    n_steps is how many samples (sequences) the KL was measured on.
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: int):
        if target <= 0 or horizon <= 0:
            raise ValueError(f"AdaptiveKLController: target ({target}) and horizon ({horizon}) must be > 0")
        self.value, self.target, self.horizon = float(init_kl_coef), float(target), int(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon

    def state_dict(self) -> dict:
        return {"kind": "adaptive", "value": self.value, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, state: dict) -> None:
        self.value = float(state["value"])
        self.target = float(state.get("target", self.target))
        self.horizon = int(state.get("horizon", self.horizon))


def make_kl_controller(cfg: PPOConfig) -> FixedKLController | AdaptiveKLController:
    if cfg.adaptive_kl:
        return AdaptiveKLController(cfg.kl_coef, cfg.target_kl, cfg.kl_horizon)
    return FixedKLController(cfg.kl_coef)


def kl_penalized_rewards(
    scores: torch.Tensor, logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor, kl_coef: float
) -> torch.Tensor:
    """Per-token rewards: -kl_coef * (logp - ref_logp) on every response token, plus the sequence's
    score on its last real token. Shape [B, R], 0 on padding."""
    if scores.shape != (logprobs.shape[0],):
        raise ValueError(f"kl_penalized_rewards: scores {tuple(scores.shape)} must be [batch={logprobs.shape[0]}]")
    m = mask.to(logprobs.dtype)
    if (m.sum(1) == 0).any():
        raise ValueError("kl_penalized_rewards: a response has no tokens (all-zero mask row)")
    rewards = -kl_coef * (logprobs - ref_logprobs) * m
    positions = torch.arange(m.shape[1], device=m.device).expand_as(m)
    last = (positions * m).argmax(1)  # index of the last real token of each row
    rewards[torch.arange(m.shape[0], device=m.device), last] += scores.to(rewards.dtype)
    return rewards


# ---------------------------------------------------------------- losses


def policy_loss(
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, clip_range: float
) -> tuple[torch.Tensor, dict]:
    """Clipped surrogate objective (as a loss to minimize), with its diagnostics.

    clipfrac: share of tokens where the clipped branch is the active one (no gradient there).
    approx_kl: mean of (r - 1) - log r, r = pi/pi_old (non-negative, low-variance KL estimate).
    """
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        stats = {
            "clipfrac": masked_mean((clipped > unclipped).float(), mask).item(),
            "approx_kl": masked_mean((ratio - 1.0) - log_ratio, mask).item(),
        }
    return loss, stats


def value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, clip_range_value: float
) -> tuple[torch.Tensor, dict]:
    """Clipped value loss: 0.5 * max((v - R)^2, (v_clipped - R)^2), v_clipped within +-clip of the old value."""
    v_clipped = old_values + torch.clamp(values - old_values, -clip_range_value, clip_range_value)
    l_unclipped = (values - returns) ** 2
    l_clipped = (v_clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(l_unclipped, l_clipped), mask)
    with torch.no_grad():
        stats = {"vf_clipfrac": masked_mean((l_clipped > l_unclipped).float(), mask).item()}
    return loss, stats
