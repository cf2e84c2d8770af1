"""RM trainer: Bradley-Terry fine-tuning through Ray Train (`TorchTrainer`, DDP over N workers).

Each worker loads the RM from `init_path`, takes its equal-sized shard of the training pairs, and runs
`frft_ray.algorithms.bt.fit_reward_model` on the DDP-wrapped model. Rank 0 reports the metrics with a
checkpoint; Ray Train persists it under `storage_path`, and we copy it to `out_path` with a meta.json
carrying the RM version. (On a multi-node cluster `storage_path` must be shared storage.)
"""

from __future__ import annotations

import tempfile
import time
import uuid
from pathlib import Path


def _train_loop(config: dict) -> None:
    import ray
    import ray.train
    import ray.train.torch
    import torch

    from actors.common import setup_process
    from frft_ray.algorithms.bt import fit_reward_model
    from frft_ray.models import load_reward_checkpoint, save_checkpoint

    setup_process(config["torch_threads"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    pairs = ray.get(config["train_ref"])
    eval_pairs = ray.get(config["eval_ref"])
    per_rank = len(pairs) // world  # equal shards keep DDP's collective calls in step
    shard = pairs[rank * per_rank : (rank + 1) * per_rank]
    torch.manual_seed(config["seed"] + rank)
    loaded = load_reward_checkpoint(config["init_path"])
    model = ray.train.torch.prepare_model(loaded.model)  # DDP when world > 1
    metrics = fit_reward_model(
        model, loaded.tokenizer, shard, eval_pairs if rank == 0 else [],
        epochs=config["epochs"], lr=config["lr"], batch_size=config["batch_size"], margin=config["margin"],
        max_length=config["max_length"], seed=config["seed"], progress=False,
    )
    metrics.pop("records", None)  # per-step log; too long for a report
    metrics["pairs"] = per_rank * world
    if rank == 0:
        with tempfile.TemporaryDirectory() as tmp:
            core = model.module if hasattr(model, "module") else model
            meta = {**config["meta"], **metrics, "heldout_accuracy": metrics.get("eval_accuracy")}
            save_checkpoint(tmp, core, loaded.tokenizer, None, meta)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
    else:
        ray.train.report(metrics)


def fit_reward_model_ray(
    init_path: str,
    out_path: str,
    train_pairs: list,
    eval_pairs: list,
    *,
    epochs: float,
    lr: float,
    batch_size: int,
    margin: float,
    max_length: int,
    num_workers: int,
    cpus_per_worker: float,
    use_gpu: bool,
    storage_path: str,
    seed: int,
    meta: dict,
    torch_threads: int | None = None,
) -> dict:
    """Fit the RM on `train_pairs` with Ray Train; write the new checkpoint to `out_path`; return metrics."""
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    if len(train_pairs) < num_workers:
        raise ValueError(f"RM fit needs at least {num_workers} pairs (one per worker), got {len(train_pairs)}")
    t0 = time.time()
    trainer = TorchTrainer(
        _train_loop,
        train_loop_config={
            "train_ref": ray.put(list(train_pairs)), "eval_ref": ray.put(list(eval_pairs)),
            "init_path": str(init_path), "epochs": epochs, "lr": lr, "batch_size": batch_size,
            "margin": margin, "max_length": max_length, "seed": seed, "meta": meta,
            "torch_threads": torch_threads,
        },
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu,
                                     resources_per_worker={"CPU": cpus_per_worker}),
        run_config=RunConfig(name=f"rm-{meta.get('version', 0)}-{uuid.uuid4().hex[:8]}",
                             storage_path=str(Path(storage_path).resolve())),
    )
    result = trainer.fit()
    if result.error:
        raise RuntimeError(f"RM fit failed: {result.error}") from result.error
    if result.checkpoint is None:
        raise RuntimeError("RM fit finished without a checkpoint from rank 0")
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    result.checkpoint.to_directory(str(out_path))
    metrics = dict(result.metrics or {})
    metrics["wall_s"] = time.time() - t0
    return metrics
