"""The reward_trainer role: Bradley-Terry fits on a Ray Train worker group that lives for the whole run.

Not an actor class: a launcher for a Ray Train `TorchTrainer` (`reward.num_workers` workers, each
placed by `placement.reward_trainer`, DDP over them). A `TorchTrainer.fit()` blocks and returns one
result, and starting one costs 15-30 s of worker start-up against ~1 s of training on a refit's
few hundred pairs. So `RewardTrainerGroup` starts ONE fit whose train loop waits for fit requests:
the driver puts an `RMFitJob` into a `FitChannel` actor, every rank takes it, loads the RM from
`job.init_path`, trains on its equal-sized shard with `frft_ray.algorithms.bt.fit_reward_model`
(the `reward:` section as it is), and rank 0 writes the checkpoint to `job.out_path` (a temp folder
renamed into place; same format as every checkpoint: frft_ray.models.save_checkpoint) and posts
the metrics back. The process group is initialised once; the fit() runs in a driver thread until
`stop()`. (On a multi-node cluster the run folder must be shared storage.)

Device and precision: each worker computes on `frft_ray.devices.role_device(placement.reward_trainer
.num_gpus)` (the GPU Ray Train assigned it, `ray.train.torch.get_device()`, when the placement
reserves one) in `compute_dtype(precision)`: fp32 master weights and AdamW state, forward/backward
under bf16 autocast on GPUs (`precision: auto`). Checkpoints hold the fp32 weights, as always.
`reward.gradient_checkpointing` trades one more forward per step for activation memory. Each fit's
metrics say where it ran (`device`: "cuda:0/bf16", "cpu/fp32").

Sharing one GPU: on a one-GPU node every role (learner, rollout workers, embedders, Serve replicas,
these workers) holds a fraction of the same card. `ScalingConfig(use_gpu=True)` alone would ask a
whole GPU per worker and never be placed beside the others, so the placement's bundle (with its GPU
fraction, e.g. `placement.reward_trainer.num_gpus: 0.25`) goes in `resources_per_worker`. A fraction
is Ray's bookkeeping, not a memory cap: the workers live for the whole run, so between fits each
drops its model, gradients and optimizer state and returns the freed blocks of the CUDA cache
(`torch.cuda.empty_cache()`), keeping only its process and CUDA context; the memory a fit needs at
its peak must be free beside what the other roles hold at that moment. bf16 autocast and gradient
checkpointing lower that peak: at GPT-2-medium shape, batch 32 pairs x 512 tokens, one H200 measured
97.6 GiB fp32, 74.5 GiB bf16 and 11.0 GiB bf16 + checkpointing (benchmarks/rm_fit_precision.py).
Several workers on the same GPU are not possible with NCCL (one rank per GPU): on a one-GPU node
keep `reward.num_workers: 1`.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import ray

from frft_ray.config import RunConfig
from frft_ray.faults import RoleDiedError
from frft_ray.progress import ProgressBoard, board_lines

log = logging.getLogger("frft_ray")


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


@ray.remote(num_cpus=0)
class FitChannel:
    """Fit requests in, results out, numbered 0, 1, 2, ...; `None` as a request stops the workers.
    Every method is async, so all of them run on the actor's one event loop (no polling)."""

    def __init__(self):
        self.jobs: dict[int, object] = {}
        self.results: dict[int, dict] = {}
        self.events: dict[tuple[str, int], asyncio.Event] = {}
        self.ready: set[int] = set()

    def _event(self, kind: str, seq: int) -> asyncio.Event:
        return self.events.setdefault((kind, seq), asyncio.Event())

    async def mark_ready(self, rank: int) -> None:
        self.ready.add(rank)

    async def ready_count(self) -> int:
        return len(self.ready)

    async def submit(self, seq: int, request) -> None:
        self.jobs[seq] = request
        self._event("job", seq).set()

    async def next_job(self, seq: int):
        await self._event("job", seq).wait()
        return self.jobs[seq]

    async def finish(self, seq: int, metrics: dict) -> None:
        self.results[seq] = metrics
        self.jobs.pop(seq, None)
        self._event("result", seq).set()

    async def wait_result(self, seq: int, timeout_s: float) -> dict | None:
        """The fit's metrics, or None if it has not finished within `timeout_s`."""
        try:
            await asyncio.wait_for(self._event("result", seq).wait(), timeout_s)
        except asyncio.TimeoutError:
            return None
        for kind in ("job", "result"):
            self.events.pop((kind, seq), None)
        return self.results.pop(seq)


def _train_loop(config: dict) -> None:
    import ray.train
    import ray.train.torch
    import torch

    from actors.common import setup_process
    from frft_ray.algorithms.bt import fit_reward_model
    from frft_ray.devices import compute_dtype, role_device
    from frft_ray.models import load_reward_checkpoint, save_checkpoint
    from frft_ray.progress import reporter

    cfg: RunConfig = config["cfg"]
    channel = config["channel"]
    setup_process(cfg.resources.torch_threads)
    device = role_device(cfg.placement.reward_trainer.num_gpus, "reward_trainer")
    if device.type == "cuda":
        device = ray.train.torch.get_device()  # the GPU Ray Train gave this worker
    dtype = compute_dtype(cfg.precision, device)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    ray.get(channel.mark_ready.remote(rank))
    seq = 0
    while (request := ray.get(channel.next_job.remote(seq))) is not None:
        job, (pairs_ref,), (eval_ref,) = request
        pairs = ray.get(pairs_ref)
        per_rank = len(pairs) // world  # equal shards keep DDP's collective calls in step
        shard = pairs[rank * per_rank : (rank + 1) * per_rank]
        torch.manual_seed(job.seed + rank)
        loaded = load_reward_checkpoint(job.init_path)
        fp32 = loaded.model.to(device=device, dtype=torch.float32)  # master weights; autocast computes in dtype
        model = ray.train.torch.prepare_model(fp32)  # DDP when world > 1
        metrics = fit_reward_model(
            model, loaded.tokenizer, shard, ray.get(eval_ref) if rank == 0 else [], cfg.reward,
            epochs=job.epochs, lr=job.lr, max_length=cfg.models.max_length, seed=job.seed, progress=False,
            dtype=dtype, on_step=reporter(config["board"] if rank == 0 else None, f"rm-v{job.version}"),
        )
        metrics.pop("records", None)  # per-step log; too long for a report
        metrics["pairs"] = per_rank * world
        metrics["worker_pid"] = os.getpid()  # rank 0's process: the same for every fit of a run
        if rank == 0:
            core = model.module if hasattr(model, "module") else model
            # a temp folder, renamed into place; the run's config beside the weights tells whoever serves this RM
            # the token budget it was trained with (serve.scorer.checkpoint_max_length)
            save_checkpoint(job.out_path, core, loaded.tokenizer, cfg,
                            {**job.meta, **metrics, "heldout_accuracy": metrics.get("eval_accuracy")})
            ray.get(channel.finish.remote(seq, metrics))
        del model, fp32, loaded
        gc.collect()  # DDP and autograd leave reference cycles; free them before returning the cache
        if device.type == "cuda":
            torch.cuda.empty_cache()  # the blocks go back to the GPU the other roles share
        seq += 1


def scaling_config(cfg: RunConfig):
    """Ray Train's worker group: `reward.num_workers` workers, each `placement.reward_trainer`'s bundle.
    The bundle carries the GPU fraction: with `use_gpu=True` and no "GPU" key Ray Train asks 1 GPU."""
    from ray.train import ScalingConfig

    place = cfg.placement.reward_trainer
    return ScalingConfig(num_workers=cfg.reward.num_workers, use_gpu=place.num_gpus > 0,
                         resources_per_worker=place.bundle())


@dataclass(frozen=True)
class PendingFit:
    """A submitted fit (`RewardTrainerGroup.submit`): its place in the channel and its RM version."""

    seq: int
    version: int
    submitted: float  # time.monotonic()


class RewardTrainerGroup:
    """The run's RM trainer: `start()` once (workers come up in the background), `fit()` per RM
    version, `stop()` at the end. Also a context manager."""

    def __init__(self, cfg: RunConfig, storage_path: str | Path, board=None):
        """`board`: the run's frft_ray.progress.ProgressBoard, where rank 0 posts each fit's steps as
        "rm-v<version>" (None: the group makes its own)."""
        self.cfg, self.storage_path, self.board = cfg, str(Path(storage_path).resolve()), board
        self.channel = None
        self._thread: threading.Thread | None = None
        self._outcome: dict = {}
        self._seq = 0

    def start(self) -> "RewardTrainerGroup":
        from ray.train import RunConfig as TrainRunConfig
        from ray.train.torch import TorchTrainer

        self.channel = FitChannel.remote()
        self.board = self.board or ProgressBoard.remote()
        trainer = TorchTrainer(
            _train_loop,
            train_loop_config={"cfg": self.cfg, "channel": self.channel, "board": self.board},
            scaling_config=scaling_config(self.cfg),
            run_config=TrainRunConfig(name=f"rm-trainer-{uuid.uuid4().hex[:8]}", storage_path=self.storage_path),
        )

        def run() -> None:
            try:
                self._outcome["error"] = trainer.fit().error
            except Exception as e:  # the controller itself failed
                self._outcome["error"] = e

        self._thread = threading.Thread(target=run, name="rm-trainer", daemon=True)
        self._thread.start()
        return self

    def wait_ready(self, timeout_s: float = 600.0) -> None:
        """Block until every worker is up and waiting for fits (the start-up a first fit would pay)."""
        if self._thread is None:
            self.start()
        deadline = time.monotonic() + timeout_s
        while ray.get(self.channel.ready_count.remote()) < self.cfg.reward.num_workers:
            self._check_alive("starting")
            if time.monotonic() > deadline:
                raise TimeoutError(f"RM trainer workers not up after {timeout_s:.0f} s: does the cluster have "
                                   f"{self.cfg.reward.num_workers} x {self.cfg.placement.reward_trainer.bundle()} free?")
            time.sleep(0.05)

    def _check_alive(self, what: str) -> None:
        if not self._thread.is_alive():
            err = self._outcome.get("error")
            raise RoleDiedError("RM trainer", f"stopped while {what}: {err!r}") from err

    def fit(self, job: RMFitJob, train_pairs: list, eval_pairs: list) -> dict:
        """Fit the RM on `train_pairs`; the new checkpoint is at `job.out_path` when this returns."""
        return self.result(self.submit(job, train_pairs, eval_pairs))

    def submit(self, job: RMFitJob, train_pairs: list, eval_pairs: list) -> "PendingFit":
        """Queue a fit and return at once (the workers take it as soon as they are up); `result()` waits."""
        workers = self.cfg.reward.num_workers
        if len(train_pairs) < workers:
            raise ValueError(f"RM fit needs at least {workers} pairs (one per worker), got {len(train_pairs)}")
        if self._thread is None:
            self.start()
        pending = PendingFit(self._seq, job.version, time.monotonic())
        self._seq += 1
        refs = ([ray.put(list(train_pairs))], [ray.put(list(eval_pairs))])  # nested: workers fetch them
        ray.get(self.channel.submit.remote(pending.seq, (job, *refs)))
        return pending

    def result(self, pending: "PendingFit") -> dict:
        """The metrics of a submitted fit, once its checkpoint is written."""
        label, logged = {f"rm-v{pending.version}": f"RM v{pending.version} fit steps"}, time.monotonic()
        while (metrics := ray.get(self.channel.wait_result.remote(pending.seq, 0.5))) is None:
            self._check_alive(f"fitting RM v{pending.version}")
            if time.monotonic() - logged >= self.cfg.resources.progress_every_s:
                logged = time.monotonic()
                for text in board_lines(self.board, label, pending.submitted):
                    log.info("  %s", text)
        metrics["wall_s"] = time.monotonic() - pending.submitted
        return metrics

    def stop(self, timeout_s: float = 60.0) -> None:
        if self._thread is None:
            return
        if self._thread.is_alive():
            ray.get(self.channel.submit.remote(self._seq, None))
            self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.warning("RM trainer did not stop within %.0f s; its workers end with the Ray session", timeout_s)
        ray.kill(self.channel)
        self._thread = None

    def __enter__(self) -> "RewardTrainerGroup":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def fit_reward_model_ray(cfg: RunConfig, job: RMFitJob, train_pairs: list, eval_pairs: list, storage_path: str) -> dict:
    """One fit on a group started for it (the `frft-ray train-rm` command)."""
    with RewardTrainerGroup(cfg, storage_path) as group:
        return group.fit(job, train_pairs, eval_pairs)
