"""Bradley-Terry reward-model fitting: loss, pairwise accuracy, and one plain training loop.

Why not TRL's `RewardTrainer`: it works here, but it brings the HF Trainer's own device, precision
(bf16 by default) and checkpoint policies, and needs a separate wrapper to run under Ray Train.
This loop is short, runs identically in-process and in a Ray Train worker (where `prepare_model`
wraps the model in DDP and each rank passes its own shard of the pairs), and scores with the RM
forward that `models.score` and the serve scorer use too (`models.rm_forward_encoded`, which
`models.rm_forward` calls). It tokenizes its pairs once (`models.rm_token_ids`) and pads each batch
(`models.rm_collate`): the same tensors as `models.rm_inputs`, which left-truncates, so the end of
the response (where the reward is read) is always kept. The batch schedule (shuffled, fractional
epochs, length-grouped by `length_grouping`) is `algorithms.loop.FractionalEpochs`,
shared with SFT. Batch size, margin and gradient checkpointing are fixed for a run and come from
the `reward` config section; epochs and lr differ between the initial fit and refits, so they are
arguments.

Precision: the caller puts the model on its device in fp32 (the master weights; AdamW's state
follows them) and passes the compute dtype (`frft_ray.devices.compute_dtype`); forward passes run
under `devices.autocast` (a no-op for fp32) and rewards are read as fp32, so the loss and its
gradients stay fp32. Gradient checkpointing uses the non-reentrant variant, which works under DDP
(Ray Train's `prepare_model`) with no extra flags.

The same loop runs inside the run's persistent RM trainer workers (actors/reward_trainer.py): a
fit there is a function call on a live DDP process group, where a TRL trainer would be rebuilt
(and its Accelerator set up) per refit. What TRL would add, FSDP/DeepSpeed for RMs that outgrow
one GPU, is not needed at the paper's scale (GPT-2-medium RM) and is left to the scale work;
the project therefore does not depend on TRL.
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from frft_ray.algorithms.loop import FractionalEpochs
from frft_ray.config import RewardConfig
from frft_ray.data.records import PreferencePair
from frft_ray.devices import autocast, describe
from frft_ray.models import rm_collate, rm_forward_encoded, rm_token_ids


def bt_loss(chosen_r: torch.Tensor, rejected_r: torch.Tensor, margin: float = 0.0) -> torch.Tensor:
    """Mean of -log sigmoid(r_chosen - r_rejected - margin): the Bradley-Terry negative log-likelihood."""
    if chosen_r.shape != rejected_r.shape:
        raise ValueError(f"bt_loss: chosen {tuple(chosen_r.shape)} and rejected {tuple(rejected_r.shape)} differ")
    return -F.logsigmoid(chosen_r - rejected_r - margin).mean()


def pairwise_accuracy(chosen_r: torch.Tensor, rejected_r: torch.Tensor) -> float:
    """Share of pairs where the chosen response scores higher; a tie counts one half."""
    if chosen_r.shape != rejected_r.shape:
        raise ValueError(f"pairwise_accuracy: chosen {tuple(chosen_r.shape)} and rejected {tuple(rejected_r.shape)} differ")
    if chosen_r.numel() == 0:
        raise ValueError("pairwise_accuracy: no pairs")
    wins = (chosen_r > rejected_r).float() + 0.5 * (chosen_r == rejected_r).float()
    return wins.mean().item()


def _unwrap(model):
    """The module inside a DDP wrapper (Ray Train's `prepare_model`), else the model itself."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def _device(model) -> torch.device:
    return next(model.parameters()).device


def _set_dropout(model, p: float | None) -> list:
    """Set every dropout layer's probability to `p` (None: leave them); returns what `_restore_dropout` needs."""
    if p is None:
        return []
    layers = [m for m in _unwrap(model).modules() if isinstance(m, torch.nn.Dropout)]
    saved = [(m, m.p) for m in layers]
    for m in layers:
        m.p = p
    return saved


def _restore_dropout(saved: list) -> None:
    for m, p in saved:
        m.p = p


def _set_checkpointing(model, on: bool) -> None:
    """HF gradient (activation) checkpointing, non-reentrant; named `activation_*` from transformers 5.2x."""
    m = _unwrap(model)
    if not on:
        (getattr(m, "activation_checkpointing_disable", None) or m.gradient_checkpointing_disable)()
    elif hasattr(m, "activation_checkpointing_enable"):
        m.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:  # transformers before the rename (e.g. 5.17 on the GPU image)
        m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def _pair_token_ids(tok, pairs: Sequence[PreferencePair], max_length: int) -> list[list[int]]:
    """Token ids of every pair's chosen row, then every pair's rejected row (`models.rm_token_ids`),
    in one tokenizer call: row j is pair j's chosen, row n + j its rejected."""
    prompts = [p.prompt for p in pairs]
    return rm_token_ids(tok, prompts + prompts, [p.chosen for p in pairs] + [p.rejected for p in pairs], max_length)


def _pair_rewards(model, tok, ids: list[list[int]], idx: Sequence[int],
                  dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Chosen and rejected rewards of pairs `idx` (rows of `_pair_token_ids`) in one forward pass of
    the concatenated batch (2 x len(idx) rows); the forward runs under autocast to `dtype`, the
    rewards come back fp32."""
    n = len(ids) // 2
    with autocast(_device(model), dtype):
        r = rm_forward_encoded(model, rm_collate(tok, [ids[j] for j in idx] + [ids[n + j] for j in idx]))
    return r[: len(idx)], r[len(idx) :]


@torch.no_grad()
def evaluate_rm(model, tok, pairs: Sequence[PreferencePair], max_length: int, batch_size: int = 64,
                dtype: torch.dtype = torch.float32) -> dict:
    """Pairwise accuracy and plain BT loss (margin 0) over `pairs`, in eval mode.

    Runs on the unwrapped module so that, under DDP, no collective is issued (ranks may evaluate
    different numbers of batches).
    """
    if not pairs:
        raise ValueError("evaluate_rm: no pairs to evaluate")
    m = _unwrap(model)
    was_training = m.training
    m.eval()
    ids = _pair_token_ids(tok, pairs, max_length)
    cs, rs = [], []
    for i in range(0, len(pairs), batch_size):
        c, r = _pair_rewards(m, tok, ids, range(i, min(i + batch_size, len(pairs))), dtype)
        cs.append(c)
        rs.append(r)
    m.train(was_training)
    c, r = torch.cat(cs), torch.cat(rs)
    return {"accuracy": pairwise_accuracy(c, r), "loss": bt_loss(c, r).item()}


def pair_chars(pair: PreferencePair) -> int:
    """A pair's padded width in characters (both responses share one batch): the length key of
    length-grouped batches, a cheap stand-in for tokens."""
    return len(pair.prompt) + max(len(pair.chosen), len(pair.rejected))


def _check_pairs(pairs, what: str) -> None:
    for i, p in enumerate(pairs):
        for f in ("prompt", "chosen", "rejected"):
            if not isinstance(getattr(p, f, None), str):
                raise ValueError(f"{what}[{i}]: field {f!r} must be a string (got {type(getattr(p, f, None)).__name__})")


def fit_reward_model(
    model,
    tok,
    train_pairs: Sequence[PreferencePair],
    eval_pairs: Sequence[PreferencePair] | None,
    rcfg: RewardConfig,
    *,
    epochs: float,
    lr: float,
    max_length: int,
    seed: int = 0,
    progress: bool = True,
    log_fn: Callable[[dict], None] | None = None,
    dtype: torch.dtype = torch.float32,
    on_step: Callable[[int, int], None] | None = None,
) -> dict:
    """Fit `model` (one logit per sequence) on `train_pairs` with the BT loss; AdamW, shuffled batches.

    From `rcfg` (the `reward` config section): `batch_size` (pairs per step), `margin` (of the
    BT loss), `gradient_checkpointing` (on for this fit only) and `length_grouping` (batches of
    pairs of similar character length, `FractionalEpochs`). `dtype` is the compute dtype of
    the forward passes (autocast); the model's own weights should be fp32. `epochs` may be
    fractional (0.5 = half the shuffled pairs). Steps per epoch are
    ceil(len(train_pairs) / batch_size), so under DDP every rank must pass the same number of pairs
    (they then take the same number of steps and the gradient all-reduces line up).

    Returns {"train_loss", "train_accuracy"} (means over the last epoch's worth of steps),
    {"eval_loss", "eval_accuracy"} (None without eval pairs), "steps", "seconds" and "records"
    (one dict per step: step, epoch, loss, accuracy) and "device" (e.g. "cpu/fp32", "cuda:0/bf16").
    `log_fn`, if given, receives each record; `on_step(step, total)` is called after each step
    (`frft_ray.progress.reporter`).
    The model is left in eval mode.
    """
    if not train_pairs:
        raise ValueError("fit_reward_model: train_pairs is empty")
    if epochs <= 0 or lr <= 0:
        raise ValueError(f"fit_reward_model: need epochs > 0 and lr > 0 (got epochs={epochs}, lr={lr})")
    _check_pairs(train_pairs, "train_pairs")
    t0 = time.perf_counter()
    ids = _pair_token_ids(tok, train_pairs, max_length)
    batch_size = rcfg.batch_size
    batches = FractionalEpochs(len(train_pairs), batch_size, epochs, seed, "rm_fit" if progress else None,
                               lengths=[pair_chars(p) for p in train_pairs], group=rcfg.length_grouping,
                               on_step=on_step)
    torch.manual_seed(seed)  # dropout
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    if rcfg.gradient_checkpointing:
        _set_checkpointing(model, True)
    saved_dropout = _set_dropout(model, rcfg.dropout)

    records: list[dict] = []
    try:
        for step, epoch, idx in batches:
            c, r = _pair_rewards(model, tok, ids, idx, dtype)
            loss = bt_loss(c, r, rcfg.margin)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            rec = {"step": step, "epoch": epoch, "loss": loss.item(),
                   "accuracy": pairwise_accuracy(c.detach(), r.detach())}
            records.append(rec)
            if log_fn is not None:
                log_fn(rec)
            batches.show(loss=rec["loss"])
    finally:
        if rcfg.gradient_checkpointing:
            _set_checkpointing(model, False)
        _restore_dropout(saved_dropout)

    last = records[-min(batches.steps_per_epoch, len(records)) :]
    out = {
        "train_loss": sum(r["loss"] for r in last) / len(last),
        "train_accuracy": sum(r["accuracy"] for r in last) / len(last),
        "eval_loss": None,
        "eval_accuracy": None,
        "steps": len(records),
        "records": records,
        "device": describe(_device(model), dtype),
        "dropout": rcfg.dropout,
    }
    if eval_pairs:
        ev = evaluate_rm(model, tok, eval_pairs, max_length, batch_size=max(batch_size, 64), dtype=dtype)
        out["eval_loss"], out["eval_accuracy"] = ev["loss"], ev["accuracy"]
    model.eval()
    out["seconds"] = time.perf_counter() - t0
    return out
