"""Generation with Hugging Face `generate`, returning a typed `RolloutBatch`.

The rollout batch is the currency between rollout workers, the embedder and the PPO learner:
plain tensors and strings, never live models.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from frft_ray.config import RolloutConfig


@dataclass
class RolloutBatch:
    prompts: list[str]
    responses: list[str]
    query_ids: torch.Tensor  # [B, P] left-padded prompt tokens
    query_mask: torch.Tensor  # [B, P]
    response_ids: torch.Tensor  # [B, R] right-padded generated tokens (EOS included when produced)
    response_mask: torch.Tensor  # [B, R] 1 for generated tokens up to and including EOS
    logprobs: torch.Tensor  # [B, R] sampling-time log-probabilities (0 where masked)
    policy_version: int = 0
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.prompts)

    @staticmethod
    def concat(batches: list["RolloutBatch"], pad_id: int) -> "RolloutBatch":
        """Join shards in order. All shards must come from one policy version."""
        versions = {b.policy_version for b in batches}
        if len(versions) != 1:
            raise ValueError(f"rollout shards mix policy versions {sorted(versions)}")
        P = max(b.query_ids.shape[1] for b in batches)
        R = max(b.response_ids.shape[1] for b in batches)

        def lpad(t, n, v):
            return torch.nn.functional.pad(t, (n - t.shape[1], 0), value=v)

        def rpad(t, n, v):
            return torch.nn.functional.pad(t, (0, n - t.shape[1]), value=v)

        return RolloutBatch(
            prompts=[p for b in batches for p in b.prompts],
            responses=[r for b in batches for r in b.responses],
            query_ids=torch.cat([lpad(b.query_ids, P, pad_id) for b in batches]),
            query_mask=torch.cat([lpad(b.query_mask, P, 0) for b in batches]),
            response_ids=torch.cat([rpad(b.response_ids, R, pad_id) for b in batches]),
            response_mask=torch.cat([rpad(b.response_mask, R, 0) for b in batches]),
            logprobs=torch.cat([rpad(b.logprobs, R, 0.0) for b in batches]),
            policy_version=versions.pop(),
        )


def response_mask_from_ids(response_ids: torch.Tensor, eos_id: int) -> torch.Tensor:
    """1 up to and including the first EOS, 0 after it."""
    is_eos = response_ids == eos_id
    after_eos = (torch.cumsum(is_eos.long(), dim=1) - is_eos.long()) > 0
    return (~after_eos).long()


@torch.no_grad()
def generate(
    policy,
    tok,
    prompts: list[str],
    cfg: RolloutConfig,
    max_prompt_tokens: int,
    greedy: bool = False,
    policy_version: int = 0,
    seed: int | None = None,
) -> RolloutBatch:
    """Sample one response per prompt, batched and left-padded, with per-token logprobs."""
    if seed is not None:
        torch.manual_seed(seed)
    policy.eval()
    parts = []
    for i in range(0, len(prompts), cfg.batch_size):
        chunk = prompts[i : i + cfg.batch_size]
        enc = tok(chunk, return_tensors="pt", padding=True, truncation=True, max_length=max_prompt_tokens)
        enc = {k: v.to(policy.device) for k, v in enc.items()}
        out = policy.generate(
            **enc,
            do_sample=not greedy,
            temperature=cfg.temperature if not greedy else None,
            top_k=cfg.top_k if not greedy else None,
            top_p=cfg.top_p if not greedy else None,
            max_new_tokens=cfg.max_new_tokens,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
            return_dict_in_generate=True,
            output_logits=True,
        )
        enc = {k: v.cpu() for k, v in enc.items()}  # batches cross actor boundaries on the CPU
        resp = out.sequences[:, enc["input_ids"].shape[1] :].cpu()
        mask = response_mask_from_ids(resp, tok.eos_token_id)
        resp = torch.where(mask.bool(), resp, torch.full_like(resp, tok.pad_token_id))
        logits = torch.stack(out.logits, dim=1).float().cpu()  # [B, R, V], raw (before sampling warpers)
        if not greedy:
            logits = logits / cfg.temperature
        lp = torch.log_softmax(logits, dim=-1).gather(-1, resp.unsqueeze(-1)).squeeze(-1) * mask
        texts = tok.batch_decode(torch.where(resp == tok.eos_token_id, tok.pad_token_id, resp), skip_special_tokens=True)
        parts.append(
            RolloutBatch(
                prompts=list(chunk),
                responses=texts,
                query_ids=enc["input_ids"],
                query_mask=enc["attention_mask"],
                response_ids=resp,
                response_mask=mask,
                logprobs=lp,
                policy_version=policy_version,
            )
        )
    return RolloutBatch.concat(parts, tok.pad_token_id)
