"""The PPO update: `PPOLearner.step(rollout_batch, scores)` is one PPO update of policy and value head.

What a step does, in order:
1. Forward passes on query+response (no grad) give the old log-probs and values under the current
   policy, and the reference log-probs. The learner recomputes these rather than trusting the
   sampler's log-probs, so a different sampling engine (vLLM) cannot bias the ratio; the gap is
   reported as "ppo/logprob_gap".
2. Per-token rewards = -kl_coef * (logp - ref_logp), plus the RM score on the last real token
   (minus the batch's mean score when `center_scores`); optionally whitened (scale only), then GAE
   and advantage whitening. Centering matters: the score lands on the last token, which is EOS
   for every response that ended; with GAE's lambda < 1 and a value head that starts near 0, a
   negative mean score makes EOS the token with the most negative advantage, so PPO learns to stop
   ending responses (length runs to the cap) whatever the reward ranks. A Bradley-Terry RM's offset
   is arbitrary, and the benchmark's gold reward averages about -2.5 on the micro SFT policy.
   The scores arrive in the units the learner actor was told (`ppo.score_scale`).
3. `cfg.epochs` passes of shuffled minibatches: clipped policy loss + vf_coef * clipped value
   loss - ent_coef * entropy; policy and value head share one AdamW; gradient norm clipped.
4. The KL controller is updated with the batch's mean sequence KL.

Prompts are left-padded and responses right-padded, so position ids are counted from each row's
first real token (`models.position_ids_from_mask`), which gives real tokens the positions HF
`generate` gave them when sampling. Dropout is switched off for the whole step (the policy runs
in eval mode while training) so that ratios are exactly 1 at the first minibatch.

Precision and memory: forward passes run under autocast to the learner's compute dtype (bf16 on
GPUs) over fp32 master weights; only the response positions go through the LM head; taken-token
log-probs are gather - logsumexp; the entropy carries a gradient only when `ent_coef > 0` (else it
is computed without grad, for the log). A minibatch is split into `micro_batch_size` chunks whose
gradients accumulate (token-weighted, so the update equals the whole minibatch's): backward then
keeps one chunk's activations, which is what bounds a GPU's peak memory. The math
(losses, GAE, KL controllers) is in `algorithms.ppo`; the Ray actor that holds a learner lives
outside this package.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import time

import torch
import torch.nn.functional as F

from frft_ray.algorithms.ppo import (
    entropy_from_logits,
    gae,
    kl_penalized_rewards,
    make_kl_controller,
    masked_mean,
    masked_whiten,
    policy_loss,
    value_loss,
)
from frft_ray.config import PPOConfig
from frft_ray.devices import autocast
from frft_ray.models import position_ids_from_mask
from frft_ray.rollout import RolloutBatch


def _trimmed_inputs(q_ids, q_mask, r_ids, r_mask):
    """query+response with all-padding columns cut away; returns (ids, mask, pos, n_query_cols, n_resp_cols)."""
    keep_q = q_mask.any(0).nonzero()
    left = int(keep_q[0]) if len(keep_q) else q_ids.shape[1]
    rt = max(int(r_mask.sum(1).max()), 1)
    ids = torch.cat([q_ids[:, left:], r_ids[:, :rt]], dim=1)
    mask = torch.cat([q_mask[:, left:], r_mask[:, :rt]], dim=1).long()
    pos = position_ids_from_mask(mask)
    return ids, mask, pos, q_ids.shape[1] - left, rt


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log_softmax(logits / T) at `tokens`, as gather - logsumexp in fp32: [..., V] -> [...].

    Autograd keeps only the fp32 logits for logsumexp's backward, not a second [.., V] log-softmax
    tensor as log_softmax-then-gather would.
    """
    z = logits.float()
    if temperature != 1.0:
        z = z / temperature
    return z.gather(-1, tokens.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(z, dim=-1)


def _accepts_logits_to_keep(model) -> bool:
    return "logits_to_keep" in inspect.signature(model.forward).parameters


def response_forward(
    model,
    q_ids,
    q_mask,
    r_ids,
    r_mask,
    temperature: float = 1.0,
    value_head=None,
    *,
    entropy: str = "grad",
    dtype: torch.dtype = torch.float32,
):
    """Log-probs of the response tokens (and entropy, values if `value_head`), each [B, R].

    The token at response position t is predicted by the logits at sequence position P-1+t, so only
    those rt+1 last positions go through the LM head (`logits_to_keep`, where the model takes it).
    `entropy`: "grad" (part of the loss), "no_grad" (logged only: no [B, R, V] softmax kept for
    backward) or "none". The model runs under autocast to `dtype` (a no-op for fp32); the log-probs,
    entropy and the value head (fp32 weights, autocast off) are computed in fp32.
    """
    ids, mask, pos, p, rt = _trimmed_inputs(q_ids, q_mask, r_ids, r_mask)
    kwargs = {"logits_to_keep": rt + 1} if _accepts_logits_to_keep(model) else {}
    with autocast(ids.device, dtype):
        out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False,
                    output_hidden_states=value_head is not None, **kwargs)
    logits = out.logits[:, -(rt + 1) : -1]  # positions p-1 .. p+rt-2 (the full logits when not trimmed)
    z = logits.float() if temperature == 1.0 else logits.float() / temperature
    pad = r_ids.shape[1] - rt
    result = {"logprobs": F.pad(token_logprobs(z, ids[:, p : p + rt]), (0, pad))}
    if entropy != "none":
        with torch.set_grad_enabled(entropy == "grad" and torch.is_grad_enabled()):
            result["entropy"] = F.pad(entropy_from_logits(z), (0, pad))
    if value_head is not None:  # outside autocast: the head computes in its own (fp32) weights' dtype
        hidden = out.hidden_states[-1][:, p - 1 : p - 1 + rt]
        head_dtype = next(value_head.parameters()).dtype
        result["values"] = F.pad(value_head(hidden.to(head_dtype)).float(), (0, pad))
    return result


def _to_device(b: RolloutBatch, device) -> RolloutBatch:
    if b.query_ids.device == device:
        return b
    return dataclasses.replace(
        b,
        query_ids=b.query_ids.to(device),
        query_mask=b.query_mask.to(device),
        response_ids=b.response_ids.to(device),
        response_mask=b.response_mask.to(device),
        logprobs=b.logprobs.to(device),
    )


class PPOLearner:
    """Owns the optimizer and KL controller; `policy` and `value_head` are trained in place.

    `dtype` is the compute dtype (`devices.compute_dtype`): forward passes run under autocast to it,
    while weights, gradients and AdamW state stay in the parameters' own dtype (fp32 master weights).
    """

    def __init__(self, policy, ref, value_head, tok, cfg: PPOConfig, *, temperature: float = 1.0, seed: int = 0,
                 dtype: torch.dtype = torch.float32):
        self.policy, self.ref, self.value_head, self.tok, self.cfg = policy, ref, value_head, tok, cfg
        self.temperature = float(temperature)
        self.dtype = dtype
        if ref is not None:
            ref.eval()
        params = [p for p in policy.parameters() if p.requires_grad] + list(value_head.parameters())
        self.params = params
        on_cuda = params[0].device.type == "cuda"
        self.opt = torch.optim.AdamW(params, lr=cfg.lr, fused=on_cuda or None)  # one kernel per step on CUDA
        self.kl_ctl = make_kl_controller(cfg)
        self.gen = torch.Generator().manual_seed(seed)
        self.steps = 0

    # -- phase 1: what the batch looks like under the current and the reference policy
    @torch.no_grad()
    def _score_batch(self, b: RolloutBatch) -> dict:
        mb = self.cfg.minibatch_size
        parts = {"logprobs": [], "values": [], "ref_logprobs": []}
        for i in range(0, len(b), mb):
            sl = slice(i, i + mb)
            args = (b.query_ids[sl], b.query_mask[sl], b.response_ids[sl], b.response_mask[sl])
            cur = response_forward(self.policy, *args, temperature=self.temperature, value_head=self.value_head,
                                   entropy="none", dtype=self.dtype)
            parts["logprobs"].append(cur["logprobs"])
            parts["values"].append(cur["values"])
            if self.ref is not None:
                ref = response_forward(self.ref, *args, temperature=self.temperature, entropy="none", dtype=self.dtype)
                parts["ref_logprobs"].append(ref["logprobs"])
            else:
                parts["ref_logprobs"].append(cur["logprobs"])
        return {k: torch.cat(v) for k, v in parts.items()}

    def _accumulate_gradients(self, batch: RolloutBatch, idx, mask, old: dict, adv, returns) -> dict:
        """Gradients of one minibatch's loss, in chunks of `micro_batch_size` sequences.

        Each chunk's token-mean losses are weighted by its share of the minibatch's tokens, so the
        summed gradient is the whole minibatch's (up to float rounding) while backward keeps only one
        chunk's activations. Returns the minibatch's loss statistics, weighted the same way."""
        cfg = self.cfg
        micro = cfg.micro_batch_size or len(idx)
        n_tokens = mask[idx].sum().clamp(min=1)
        stats: dict[str, float] = {}
        for j in range(0, len(idx), micro):
            part = idx[j : j + micro]
            m = mask[part]
            cur = response_forward(
                self.policy, batch.query_ids[part], batch.query_mask[part], batch.response_ids[part],
                batch.response_mask[part], temperature=self.temperature, value_head=self.value_head,
                entropy="grad" if cfg.ent_coef > 0 else "no_grad", dtype=self.dtype,
            )
            pg, pg_stats = policy_loss(cur["logprobs"], old["logprobs"][part], adv[part], m, cfg.clip_range)
            vf, vf_stats = value_loss(cur["values"], old["values"][part], returns[part], m, cfg.clip_range_value)
            ent = masked_mean(cur["entropy"], m)
            share = m.sum() / n_tokens
            ((pg + cfg.vf_coef * vf - cfg.ent_coef * ent) * share).backward()
            w = share.item()
            for k, v in {"policy_loss": pg.item(), "value_loss": vf.item(), "entropy": ent.item(),
                         **pg_stats, **vf_stats}.items():
                stats[k] = stats.get(k, 0.0) + w * v
        return stats

    def _check(self, b: RolloutBatch, scores: torch.Tensor) -> None:
        if len(b) == 0:
            raise ValueError("PPO step: empty rollout batch")
        if scores.shape != (len(b),):
            raise ValueError(f"PPO step: scores has shape {tuple(scores.shape)}, expected [{len(b)}] (one per response)")
        if not torch.isfinite(scores).all():
            raise ValueError("PPO step: scores contain NaN or inf")
        if (b.query_mask.sum(1) == 0).any():
            raise ValueError("PPO step: a prompt has no tokens (every prompt needs at least one)")
        if (b.response_mask.sum(1) == 0).any():
            raise ValueError("PPO step: a response has no tokens")

    def step(self, batch: RolloutBatch, scores: torch.Tensor) -> dict:
        """One PPO update on `batch` scored by the RM (`scores`: [B]). Returns "ppo/..." stats."""
        t0 = time.perf_counter()
        scores = torch.as_tensor(scores, dtype=torch.float32).reshape(-1)
        self._check(batch, scores)
        cfg = self.cfg
        batch = _to_device(batch, next(self.policy.parameters()).device)
        scores = scores.to(batch.response_ids.device)
        was_training = self.policy.training
        self.policy.eval()  # no dropout: the ratio must be exactly 1 before the first update
        mask = batch.response_mask.float()

        old = self._score_batch(batch)
        kl_coef = self.kl_ctl.value
        token_kl = (old["logprobs"] - old["ref_logprobs"]) * mask
        seq_kl = token_kl.sum(1)
        baseline = scores.mean() if cfg.center_scores else torch.zeros((), device=scores.device)
        rewards = kl_penalized_rewards(scores - baseline, old["logprobs"], old["ref_logprobs"], mask, kl_coef)
        raw_rewards = rewards
        if cfg.whiten_rewards:
            rewards = masked_whiten(rewards, mask, shift_mean=False)
        adv, returns = gae(rewards, old["values"], mask, cfg.gamma, cfg.lam)
        adv = masked_whiten(adv, mask)

        acc = {k: [] for k in ("policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac", "vf_clipfrac", "grad_norm")}
        B = len(batch)
        skipped = 0
        for _ in range(cfg.epochs):
            perm = torch.randperm(B, generator=self.gen)
            for i in range(0, B, cfg.minibatch_size):
                self.opt.zero_grad(set_to_none=True)
                stats = self._accumulate_gradients(batch, perm[i : i + cfg.minibatch_size], mask, old, adv, returns)
                gn = torch.nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm)
                if torch.isfinite(gn):
                    self.opt.step()
                else:  # a NaN/inf loss or gradient never reaches the weights (as a loss scaler skips a step)
                    self.opt.zero_grad(set_to_none=True)
                    skipped += 1
                acc["grad_norm"].append(float(gn))
                for k, v in stats.items():
                    acc[k].append(v)

        if skipped:
            logging.getLogger("frft_ray").warning(
                "PPO step %d: %d of %d minibatch updates skipped: non-finite loss or gradient (compute dtype %s)",
                self.steps + 1, skipped, len(acc["grad_norm"]), self.dtype)
        mean_kl = seq_kl.mean().item()
        self.kl_ctl.update(mean_kl, n_steps=B)
        self.steps += 1
        self.policy.train(was_training)
        lp_gap = masked_mean((batch.logprobs.float() - old["logprobs"]).abs(), mask).item()
        stats = {f"ppo/{k}": sum(v) / len(v) for k, v in acc.items()}
        stats.update(
            {
                "ppo/kl_coef": kl_coef,
                "ppo/mean_kl": mean_kl,
                "ppo/score_mean": scores.mean().item(),
                "ppo/score_std": scores.std().item() if len(scores) > 1 else 0.0,
                "ppo/reward_mean": raw_rewards.sum(1).mean().item(),
                "ppo/return_mean": masked_mean(returns, mask).item(),
                "ppo/value_mean": masked_mean(old["values"], mask).item(),
                "ppo/response_len": mask.sum(1).mean().item(),
                "ppo/logprob_gap": lp_gap,
                "ppo/skipped_updates": skipped,
                "ppo/step": self.steps,
                "timing/ppo_step": time.perf_counter() - t0,
            }
        )
        return stats

    # -- resume
    def state_dict(self) -> dict:
        """Optimizer, KL controller, step count and shuffle RNG; model weights are saved separately."""
        return {
            "optimizer": self.opt.state_dict(),
            "kl_ctl": self.kl_ctl.state_dict(),
            "steps": self.steps,
            "rng": self.gen.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        missing = {"optimizer", "kl_ctl", "steps"} - set(state)
        if missing:
            raise ValueError(f"PPOLearner.load_state_dict: missing keys {sorted(missing)}")
        kind = state["kl_ctl"].get("kind")
        mine = self.kl_ctl.state_dict()["kind"]
        if kind is not None and kind != mine:
            raise ValueError(f"PPOLearner.load_state_dict: checkpoint has a {kind} KL controller, config asks for {mine}")
        self.opt.load_state_dict(state["optimizer"])
        self.kl_ctl.load_state_dict(state["kl_ctl"])
        self.steps = int(state["steps"])
        if "rng" in state:
            self.gen.set_state(state["rng"])
