"""How the learner's weights reach the rollout workers (`rollout.weight_sync`), and the collective group.

Methods (every one sends floating-point weights in the rollout side's dtype: bf16 on GPUs, fp32 on CPUs):
- `object_store`: the learner packs the weights into byte buckets (frft_ray/weight_pack.py) and
  returns them as its call's result: one object in Ray's store, read by every worker without a copy.
  The pool keeps that ObjectRef to restore a restarted worker. Works everywhere.
- `collective`: a torch.distributed group of the learner (rank 0) and the workers, built once per pool
  (again after a resize or a worker restart), broadcasting each bucket from the learner. NCCL when
  every rank is on its own CUDA device (NCCL refuses two ranks on one GPU), gloo when any rank is on
  the CPU. Built from `ProcessGroupGloo`/`ProcessGroupNCCL` directly on a TCPStore that the learner
  opens on a free port: no default process group, so nothing clashes with what else the process runs
  (vLLM sets up its own), and a fresh group per generation.
- `cuda_ipc`: learner and workers share one CUDA device (fractional GPUs on one card); the learner
  hands out CUDA IPC handles of bf16 buckets it keeps alive until every worker has copied them.
- `auto`: cuda_ipc when every worker shares the learner's GPU, collective (NCCL) when learner and
  workers each hold a different GPU, object_store otherwise (always on CPU-only runs).

Every collective carries a timeout (`SYNC_TIMEOUT_S`): a rank that died makes the others fail with an
error, never hang.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

import torch

from frft_ray.weight_pack import Entry, fill_bucket, unpack_into

METHODS = ("auto", "object_store", "collective", "cuda_ipc")
SYNC_TIMEOUT_S = 120.0


class WeightSyncError(RuntimeError):
    """A weight sync that cannot run as configured, or that failed or disagreed on the way."""


@dataclass(frozen=True)
class SyncDevice:
    """Where one rank holds its weights: the node, the GPU (its UUID; None on the CPU) and the dtype."""

    node: str
    gpu: str | None
    dtype: torch.dtype


def device_of(node: str, device: torch.device, dtype: torch.dtype) -> SyncDevice:
    gpu = str(torch.cuda.get_device_properties(device).uuid) if device.type == "cuda" else None
    return SyncDevice(node, gpu, dtype)


@dataclass(frozen=True)
class SyncPlan:
    method: str  # object_store | collective | cuda_ipc
    backend: str | None  # nccl | gloo for collective
    dtype: torch.dtype  # what floating-point weights travel in: the rollout workers' dtype
    reason: str

    def describe(self) -> str:
        how = f"{self.method} ({self.backend})" if self.backend else self.method
        return f"{how}, {str(self.dtype).removeprefix('torch.')}: {self.reason}"


def choose(setting: str, learner: SyncDevice, workers: list[SyncDevice]) -> SyncPlan:
    """The plan for `rollout.weight_sync=setting`; a setting that cannot work here fails naming the key."""
    if setting not in METHODS:
        raise WeightSyncError(f"rollout.weight_sync must be one of {METHODS}, got {setting!r}")
    dtype = workers[0].dtype
    gpus = [(d.node, d.gpu) for d in [learner, *workers]]
    on_gpu = all(g is not None for _, g in gpus)
    shared = on_gpu and all(g == gpus[0] for g in gpus[1:])
    distinct = on_gpu and len(set(gpus)) == len(gpus)
    if setting == "auto":
        if shared:
            return SyncPlan("cuda_ipc", None, dtype, "auto: the learner and every rollout worker share one GPU")
        if distinct:
            return SyncPlan("collective", "nccl", dtype, "auto: the learner and each rollout worker hold their own GPU")
        why = "a role computes on the CPU" if not on_gpu else "some GPUs are shared, but not all by every rank"
        return SyncPlan("object_store", None, dtype, f"auto: {why}")
    if setting == "object_store":
        return SyncPlan(setting, None, dtype, "rollout.weight_sync=object_store")
    if setting == "cuda_ipc":
        if not shared:
            raise WeightSyncError("rollout.weight_sync=cuda_ipc needs the learner and every rollout worker on one "
                                  f"CUDA device; they are on {_where(learner, workers)}: use collective or auto")
        return SyncPlan(setting, None, dtype, "rollout.weight_sync=cuda_ipc")
    if on_gpu and not distinct:
        raise WeightSyncError("rollout.weight_sync=collective over NCCL needs one GPU per rank (NCCL refuses two "
                              f"ranks on one GPU); they are on {_where(learner, workers)}: use cuda_ipc or auto")
    backend = "nccl" if on_gpu else "gloo"
    return SyncPlan(setting, backend, dtype, f"rollout.weight_sync=collective over {backend}")


def _where(learner: SyncDevice, workers: list[SyncDevice]) -> str:
    name = lambda d: f"{d.node}/{'cpu' if d.gpu is None else 'GPU ' + d.gpu[:13]}"  # noqa: E731
    return f"learner {name(learner)}, workers " + ", ".join(name(w) for w in workers)


class SyncGroup:
    """One rank of a weight-sync group: rank 0 (the learner) broadcasts, the others receive.

    The learner opens the rendezvous first (`SyncGroup.listen`, a TCPStore on a free port), every rank
    then joins (`join`, blocking until all have) and the buckets flow with `send` / `receive`.
    """

    def __init__(self, store, rank: int, world: int, backend: str, host: str, device: torch.device,
                 generation: int, timeout_s: float = SYNC_TIMEOUT_S):
        import torch.distributed as dist

        self.rank, self.world, self.backend, self.device = rank, world, backend, device
        self.timeout = datetime.timedelta(seconds=timeout_s)
        self.store = store  # kept: the group lives on it
        prefixed = dist.PrefixStore(f"frft_sync/{generation}", store)
        if backend == "gloo":
            opts = dist.ProcessGroupGloo._Options()
            opts._timeout = self.timeout
            opts._devices = [dist.ProcessGroupGloo.create_device(hostname=host)]
            self.pg = dist.ProcessGroupGloo(prefixed, rank, world, opts)
        elif backend == "nccl":
            torch.cuda.set_device(device)
            opts = dist.ProcessGroupNCCL.Options()
            opts._timeout = self.timeout
            self.pg = dist.ProcessGroupNCCL(prefixed, rank, world, opts)
        else:
            raise WeightSyncError(f"unknown collective backend {backend!r}")

    @staticmethod
    def listen(host: str, world: int, timeout_s: float = SYNC_TIMEOUT_S):
        """The learner's rendezvous: a TCPStore on `host` and a free port (returned as `store.port`)."""
        import torch.distributed as dist

        return dist.TCPStore(host, 0, world, True, timeout=datetime.timedelta(seconds=timeout_s),
                             wait_for_workers=False)

    @staticmethod
    def connect(host: str, port: int, world: int, timeout_s: float = SYNC_TIMEOUT_S):
        import torch.distributed as dist

        return dist.TCPStore(host, port, world, False, timeout=datetime.timedelta(seconds=timeout_s))

    def _broadcast(self, buf: torch.Tensor) -> None:
        import torch.distributed as dist

        opts = dist.BroadcastOptions()
        opts.rootRank, opts.timeout = 0, self.timeout
        self.pg.broadcast([buf], opts).wait()

    def send(self, state: dict[str, torch.Tensor], entries: list[Entry], sizes: list[int]) -> None:
        """Rank 0: every bucket of `state`, one after another (one bucket's extra memory at a time)."""
        for b, n in enumerate(sizes):
            self._broadcast(fill_bucket(torch.empty(n, dtype=torch.uint8, device=self.device), state, entries, b))
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def receive(self, target: dict[str, torch.Tensor] | None, entries: list[Entry],
                sizes: list[int]) -> list[torch.Tensor]:
        """Other ranks: each bucket, copied into `target`'s tensors when given; returns the buckets when not."""
        kept = []
        for b, n in enumerate(sizes):
            buf = torch.empty(n, dtype=torch.uint8, device=self.device)
            self._broadcast(buf)
            if target is None:
                kept.append(buf)
            else:
                unpack_into(target, entries, {b: buf}, bucket=b)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return kept

    def close(self) -> None:
        try:
            self.pg.abort() if self.backend == "nccl" else self.pg.shutdown()
        except Exception:  # a peer already gone: nothing left to tear down cleanly
            pass


# ------------------------------------------------------------ CUDA IPC
def ipc_handles(buckets: list[torch.Tensor]) -> list[tuple]:
    """Picklable handles of CUDA buckets; the caller keeps the buckets alive until every reader is done."""
    from torch.multiprocessing.reductions import reduce_tensor

    return [reduce_tensor(b) for b in buckets]


def open_ipc(handles: list[tuple]) -> list[torch.Tensor]:
    """The sender's CUDA buckets, opened in this process (same device, no copy)."""
    return [rebuild(*args) for rebuild, args in handles]
