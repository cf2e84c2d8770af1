"""Supervised fine-tuning of the policy on demonstrations, loss on the response tokens only.

The shared tokenizer pads on the left (for generation). SFT builds its own right-padded batches
instead, with prompt and response tokenized separately -- exactly the token boundary the policy
sees when it generates a response after a prompt -- and an EOS appended so the policy learns to
stop. Prompt and padding positions get label -100 and do not count in the loss. The batch
schedule (shuffled, fractional epochs) is `algorithms.loop.FractionalEpochs`, shared with the RM
fit; epochs, lr and batch size come from the `sft` config section.
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from frft_ray.algorithms.loop import FractionalEpochs
from frft_ray.config import SFTConfig
from frft_ray.devices import autocast
from frft_ray.models import position_ids_from_mask

IGNORE = -100


def sft_tokens(tok, prompts: Sequence[str], responses: Sequence[str]) -> tuple[list[list[int]], list[list[int]]]:
    """Prompt ids (with the tokenizer's special tokens) and response ids + EOS, each side in one
    batched call; `train_sft` tokenizes its demonstrations once, not once per epoch."""
    if len(prompts) != len(responses):
        raise ValueError(f"sft: {len(prompts)} prompts but {len(responses)} responses")
    if not prompts:
        raise ValueError("sft: empty batch")
    r_ids = tok(list(responses), add_special_tokens=False)["input_ids"]
    return tok(list(prompts))["input_ids"], [r + [tok.eos_token_id] for r in r_ids]


def sft_collate(p_ids: Sequence[list[int]], r_ids: Sequence[list[int]], max_length: int, pad_id: int) -> dict:
    """Right-padded input_ids / attention_mask / position_ids / labels for tokenized prompt+response+EOS.

    Too long: the response is kept (cut on the right only if it alone exceeds `max_length`) and
    the prompt is cut on the left, like generation cuts prompts.
    """
    rows, labels = [], []
    for p, r in zip(p_ids, r_ids):
        r = r[:max_length]
        p = p[len(p) - (max_length - len(r)) :] if len(p) + len(r) > max_length else p
        rows.append(p + r)
        labels.append([IGNORE] * len(p) + r)
    width = max(len(x) for x in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    lab = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (x, y) in enumerate(zip(rows, labels)):
        ids[i, : len(x)] = torch.tensor(x)
        lab[i, : len(y)] = torch.tensor(y)
        mask[i, : len(x)] = 1
    pos = position_ids_from_mask(mask)
    return {"input_ids": ids, "attention_mask": mask, "position_ids": pos, "labels": lab}


def sft_batch(tok, prompts: Sequence[str], responses: Sequence[str], max_length: int) -> dict:
    """`sft_collate` of `sft_tokens`: one batch from texts."""
    return sft_collate(*sft_tokens(tok, prompts, responses), max_length, tok.pad_token_id)


def head_on_hidden_states(model, tok) -> bool:
    """Whether `model`'s logits are its output embedding (LM head) applied to its base model's last
    hidden state, as in GPT-2, Llama, Qwen2 or OPT; models that scale or cap logits after the head
    (Gemma 2's soft cap) are not. Checked once on a short batch, in eval mode and fp32, with the
    head's weights scaled up for the check (then restored bit for bit) so that logits are large
    enough for a soft cap to show even in a freshly initialised model. Where it holds, `sft_loss`
    runs the LM head on the response positions only (ours): on the demo's SFT batches 37% of the
    positions, the same loss."""
    head, base = model.get_output_embeddings(), getattr(model, "base_model", model)
    if head is None or base is model or not isinstance(getattr(head, "weight", None), torch.Tensor):
        return False
    b = sft_batch(tok, ["a b c", "a"], [" d e", " b c d e f"], 32)
    device = next(model.parameters()).device
    inputs = {k: b[k].to(device) for k in ("input_ids", "attention_mask", "position_ids")}
    was_training = model.training
    saved = head.weight.detach().clone()
    model.eval()
    try:
        with torch.no_grad():
            head.weight.mul_(1000.0 / head.weight.abs().max().clamp(min=1e-6))
            full = model(**inputs, use_cache=False).logits
            hidden = base(**inputs, use_cache=False).last_hidden_state
            same_shape = full.shape == (*hidden.shape[:2], full.shape[-1])
            return same_shape and torch.allclose(head(hidden), full, atol=1e-4, rtol=1e-4)
    except (TypeError, AttributeError, ValueError):  # a base model without these inputs or outputs
        return False
    finally:
        with torch.no_grad():
            head.weight.copy_(saved)
        model.train(was_training)


def sft_loss(model, tok, prompts: Sequence[str], responses: Sequence[str], max_length: int,
             dtype: torch.dtype = torch.float32, head_only: bool = False) -> torch.Tensor:
    """Mean next-token cross-entropy over response tokens (+EOS); prompt tokens are masked out.

    The forward runs under autocast to `dtype` (a no-op for fp32); the loss is computed in fp32.
    `head_only` (where `head_on_hidden_states` holds): the LM head runs on the hidden states
    that predict a response token only, not on prompt and padding positions; the same loss.
    """
    return batch_loss(model, sft_batch(tok, prompts, responses, max_length), dtype, head_only)


def batch_loss(model, batch: dict, dtype: torch.dtype = torch.float32, head_only: bool = False) -> torch.Tensor:
    """`sft_loss` of a batch from `sft_collate`."""
    device = next(model.parameters()).device
    b = {k: v.to(device) for k, v in batch.items()}
    inputs = {k: b[k] for k in ("input_ids", "attention_mask", "position_ids")}
    targets = b["labels"][:, 1:]
    keep = targets != IGNORE
    if not keep.any():
        raise ValueError("sft: no response token left to learn from (max_length too small?)")
    with autocast(device, dtype):
        if head_only:
            hidden = model.base_model(**inputs, use_cache=False).last_hidden_state
            logits = model.get_output_embeddings()(hidden[:, :-1][keep])
            return F.cross_entropy(logits.float(), targets[keep])
        logits = model(**inputs, use_cache=False).logits
    return F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE)


@torch.no_grad()
def _mean_loss(model, collate, n: int, batch_size: int, dtype, head_only) -> float:
    """Mean over the first n demonstrations of each batch's loss, weighted by its size; eval mode."""
    was_training = model.training
    model.eval()
    total = 0.0
    for i in range(0, n, batch_size):
        idx = list(range(i, min(i + batch_size, n)))
        total += batch_loss(model, collate(idx), dtype, head_only).item() * len(idx)
    model.train(was_training)
    return total / n


def train_sft(
    model,
    tok,
    prompts: Sequence[str],
    responses: Sequence[str],
    scfg: SFTConfig,
    *,
    max_length: int,
    seed: int = 0,
    progress: bool = True,
    probe_size: int = 256,
    dtype: torch.dtype = torch.float32,
    head_only: bool | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> dict:
    """Fine-tune `model` on demonstrations with AdamW over shuffled batches.

    From `scfg` (the `sft` config section): `epochs` (may be fractional), `lr`, `batch_size` and
    `length_grouping` (batches of similar character length, `FractionalEpochs`).
    "loss_start"/"loss_end" are the mean response-token loss, in eval mode, on the same fixed
    probe (the first `probe_size` demonstrations) before and after training, so they compare.
    Also returns "steps", "seconds" and "head_only" (`sft_loss`'s; None: `head_on_hidden_states`).
    The model is left in eval mode. `dtype`: the compute dtype of forward passes (autocast); weights
    and AdamW state stay fp32. The demonstrations are tokenized once (`sft_tokens`). `on_step(step,
    total)` is called after each step (`frft_ray.progress.reporter`).
    """
    if len(prompts) != len(responses):
        raise ValueError(f"train_sft: {len(prompts)} prompts but {len(responses)} responses")
    if not prompts:
        raise ValueError("train_sft: no demonstrations")
    t0 = time.perf_counter()
    prompts, responses = list(prompts), list(responses)
    lengths = [len(p) + len(r) for p, r in zip(prompts, responses)]
    batches = FractionalEpochs(len(prompts), scfg.batch_size, scfg.epochs, seed, "sft" if progress else None,
                               lengths=lengths, group=scfg.length_grouping, on_step=on_step)
    p_ids, r_ids = sft_tokens(tok, prompts, responses)

    def collate(idx):
        return sft_collate([p_ids[j] for j in idx], [r_ids[j] for j in idx], max_length, tok.pad_token_id)

    probe = min(probe_size, len(prompts))
    head_only = head_on_hidden_states(model, tok) if head_only is None else head_only
    loss_start = _mean_loss(model, collate, probe, scfg.batch_size, dtype, head_only)

    torch.manual_seed(seed)  # dropout
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=scfg.lr)
    model.train()
    for _, _, idx in batches:
        loss = batch_loss(model, collate(idx), dtype, head_only)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if progress:
            batches.show(loss=loss.item())
    loss_end = _mean_loss(model, collate, probe, scfg.batch_size, dtype, head_only)
    model.eval()
    return {"loss_start": loss_start, "loss_end": loss_end, "steps": batches.total_steps,
            "seconds": time.perf_counter() - t0, "head_only": head_only}
