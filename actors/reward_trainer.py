"""The reward_trainer role: Bradley-Terry fine-tuning through Ray Train (`TorchTrainer`, DDP over N workers).

Not an actor class: a launcher for a Ray Train worker group (`reward.num_workers` workers, each
placed by `placement.reward_trainer`). Each worker loads the RM from `job.init_path`, takes its
equal-sized shard of the training pairs, and runs `frft_ray.algorithms.bt.fit_reward_model` on the
DDP-wrapped model with the `reward:` section as it is. Rank 0 reports the metrics with a
checkpoint; Ray Train persists it under `storage_path`, and we copy it to `job.out_path` with a
meta.json carrying the RM version. (On a multi-node cluster `storage_path` must be shared storage.)
"""

from __future__ import annotations

import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from frft_ray.config import RunConfig


@dataclass(frozen=True)
class RMFitJob:
    """One RM fit: where it starts and ends, and what differs between the initial fit and a refit.
    Every other hyperparameter comes from the `reward:` section of the run config."""

    init_path: str
    out_path: str
    epochs: float
    lr: float
    version: int
    seed: int
    meta: dict = field(default_factory=dict)


def _train_loop(config: dict) -> None:
    import ray
    import ray.train
    import ray.train.torch
    import torch

    from actors.common import setup_process
    from frft_ray.algorithms.bt import fit_reward_model
    from frft_ray.models import load_reward_checkpoint, save_checkpoint

    cfg: RunConfig = config["cfg"]
    job: RMFitJob = config["job"]
    setup_process(cfg.resources.torch_threads)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    pairs = ray.get(config["train_ref"])
    eval_pairs = ray.get(config["eval_ref"])
    per_rank = len(pairs) // world  # equal shards keep DDP's collective calls in step
    shard = pairs[rank * per_rank : (rank + 1) * per_rank]
    torch.manual_seed(job.seed + rank)
    loaded = load_reward_checkpoint(job.init_path)
    model = ray.train.torch.prepare_model(loaded.model)  # DDP when world > 1
    metrics = fit_reward_model(
        model, loaded.tokenizer, shard, eval_pairs if rank == 0 else [], cfg.reward,
        epochs=job.epochs, lr=job.lr, max_length=cfg.models.max_length, seed=job.seed, progress=False,
    )
    metrics.pop("records", None)  # per-step log; too long for a report
    metrics["pairs"] = per_rank * world
    if rank == 0:
        with tempfile.TemporaryDirectory() as tmp:
            core = model.module if hasattr(model, "module") else model
            meta = {**job.meta, **metrics, "heldout_accuracy": metrics.get("eval_accuracy")}
            save_checkpoint(tmp, core, loaded.tokenizer, None, meta)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
    else:
        ray.train.report(metrics)


def fit_reward_model_ray(cfg: RunConfig, job: RMFitJob, train_pairs: list, eval_pairs: list, storage_path: str) -> dict:
    """Fit the RM on `train_pairs` with Ray Train; write the new checkpoint to `job.out_path`; return metrics."""
    import ray
    from ray.train import RunConfig as TrainRunConfig
    from ray.train import ScalingConfig
    from ray.train.torch import TorchTrainer

    workers, place = cfg.reward.num_workers, cfg.placement.reward_trainer
    if len(train_pairs) < workers:
        raise ValueError(f"RM fit needs at least {workers} pairs (one per worker), got {len(train_pairs)}")
    t0 = time.time()
    trainer = TorchTrainer(
        _train_loop,
        train_loop_config={"train_ref": ray.put(list(train_pairs)), "eval_ref": ray.put(list(eval_pairs)),
                           "cfg": cfg, "job": job},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=place.num_gpus > 0,
                                     resources_per_worker=place.bundle()),
        run_config=TrainRunConfig(name=f"rm-{job.version}-{uuid.uuid4().hex[:8]}",
                                  storage_path=str(Path(storage_path).resolve())),
    )
    result = trainer.fit()
    if result.error:
        raise RuntimeError(f"RM fit failed: {result.error}") from result.error
    if result.checkpoint is None:
        raise RuntimeError("RM fit finished without a checkpoint from rank 0")
    Path(job.out_path).parent.mkdir(parents=True, exist_ok=True)
    result.checkpoint.to_directory(str(job.out_path))
    metrics = dict(result.metrics or {})
    metrics["wall_s"] = time.time() - t0
    return metrics
