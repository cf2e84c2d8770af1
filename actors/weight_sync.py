"""Weight sync between the learner and the rollout pool, for every `rollout.weight_sync` method
(see frft_ray/weight_sync.py for the methods and how `auto` chooses).

- `WeightSource`: mixed into the learner actor (the sending side).
- `WeightSink`: mixed into the rollout worker (the receiving side).
- `PoolSync`: the driver's side, kept by the rollout pool: it asks every rank where it holds its
  weights, chooses the method (logged once per pool), forms the collective group when it is missing
  (first sync, after a resize, after a worker restart) and runs one sync per policy version.

The benchmark (benchmarks/weight_sync_bench.py) mixes the same two classes into bare actors.
"""

from __future__ import annotations

import logging

import ray
import torch

from frft_ray.weight_pack import PackedWeights, bucket_tensors, fill_bucket, fingerprint, layout, pack, unpack_into
from frft_ray.weight_sync import SYNC_TIMEOUT_S, SyncDevice, SyncGroup, SyncPlan, WeightSyncError, choose, \
    device_of, ipc_handles, open_ipc

log = logging.getLogger("frft_ray")


def _node() -> str:
    return ray.util.get_node_ip_address()


class WeightSource:
    """The learner's side. The actor provides `device`, `version` and `_sync_state(version)` (its policy's
    state dict, checked to be at `version` when one is given)."""

    _sync_store = _sync_group = _sync_layout = None
    _ipc_kept: dict | None = None

    def sync_device(self) -> SyncDevice:
        return device_of(_node(), self.device, torch.float32)

    def get_weights(self, dtype: torch.dtype = torch.float32, version: int | None = None) -> PackedWeights:
        """The policy's weights in `dtype` as byte buckets: the call's result is the one object-store copy."""
        return pack(self._sync_state(version), dtype, self.version)

    def weights_fingerprint(self, dtype: torch.dtype) -> tuple[int, int]:
        """(version, CRC32 of the weights in `dtype`): what every rollout worker should hold."""
        return self.version, fingerprint(self._sync_state(), dtype)

    # ---- collective
    def sync_listen(self, world: int, dtype: torch.dtype) -> tuple:
        """Open a fresh rendezvous for `world` ranks; returns (host, port, entries, bucket sizes)."""
        self.sync_close()
        host = _node()
        self._sync_store = SyncGroup.listen(host, world)
        self._sync_layout = layout(self._sync_state(), dtype)
        return host, self._sync_store.port, *self._sync_layout

    def sync_join(self, backend: str, world: int, generation: int) -> int:
        device = self.device if backend == "nccl" else torch.device("cpu")
        self._sync_group = SyncGroup(self._sync_store, 0, world, backend, _node(), device, generation)
        return 0

    def sync_send(self, version: int) -> int:
        self._sync_group.send(self._sync_state(version), *self._sync_layout)
        return version

    def sync_close(self) -> None:
        if self._sync_group is not None:
            self._sync_group.close()
        self._sync_store = self._sync_group = None

    # ---- CUDA IPC
    def sync_ipc(self, dtype: torch.dtype, version: int) -> tuple:
        """(entries, IPC handles) of CUDA buckets in `dtype`, kept alive until `sync_release(version)`."""
        state = self._sync_state(version)
        entries, sizes = layout(state, dtype)
        bufs = [fill_bucket(torch.empty(n, dtype=torch.uint8, device=self.device), state, entries, b)
                for b, n in enumerate(sizes)]
        torch.cuda.synchronize(self.device)
        self._ipc_kept = {version: bufs}
        return entries, ipc_handles(bufs)

    def sync_release(self, version: int) -> None:
        if self._ipc_kept:
            self._ipc_kept.pop(version, None)
            torch.cuda.ipc_collect()


class WeightSink:
    """A rollout worker's side. The worker provides `device`, `dtype`, `version`, `_accept(version)` (raises
    if it may not take `version`) and `_install(entries, buckets, version)` (copies them into its model)."""

    _sync_group = _sync_layout = None

    def sync_device(self) -> SyncDevice:
        return device_of(_node(), self.device, self.dtype)

    def set_weights(self, weights: PackedWeights | dict, version: int) -> int:
        """Weights from the object store: packed buckets (the learner's `get_weights`) or a plain state dict."""
        self._accept(version)
        if isinstance(weights, PackedWeights):
            self._install(weights.entries, bucket_tensors(weights), version)
        else:
            self._install_state_dict(weights, version)
        self.version = version
        return version

    def sync_join(self, host: str, port: int, rank: int, world: int, backend: str, generation: int,
                  entries: list, sizes: list[int]) -> int:
        self.sync_close()
        device = self.device if backend == "nccl" else torch.device("cpu")
        store = SyncGroup.connect(host, port, world)
        self._sync_group = SyncGroup(store, rank, world, backend, _node(), device, generation)
        self._sync_layout = (entries, sizes)
        return rank

    def sync_receive(self, version: int) -> int:
        self._accept(version)
        if self._sync_group is None:
            raise WeightSyncError(f"rollout worker {self.rank}: asked to receive v{version} but joined no group")
        entries, sizes = self._sync_layout
        target = self._sync_target()
        buckets = self._sync_group.receive(target, entries, sizes)
        if target is None:
            self._install(entries, buckets, version)
        self.version = version
        return version

    def sync_close(self) -> int:
        """Leave the current group (a new one is about to form). A restarted worker refuses (`_accept`),
        so the pool restores it first rather than let the others wait for it in vain."""
        self._accept(self.version)
        if self._sync_group is not None:
            self._sync_group.close()
        self._sync_group = None
        return self.version

    def sync_ipc(self, ipc: tuple, version: int) -> int:
        self._accept(version)
        entries, handles = ipc
        buckets = open_ipc(handles)
        self._install(entries, buckets, version)
        torch.cuda.synchronize(self.device)  # copied before the learner frees its buckets
        del buckets
        self.version = version
        return version

    def weights_fingerprint(self, dtype: torch.dtype) -> int | None:
        target = self._sync_target()
        return None if target is None else fingerprint(target, dtype)

    # ---- defaults for an HF-style worker holding `self.policy`
    def _sync_target(self) -> dict | None:
        """The tensors a sync copies into in place, or None when the engine loads whole state dicts."""
        return self.policy.state_dict()

    def _install(self, entries: list, buckets: list, version: int) -> None:
        unpack_into(self._sync_target(), entries, buckets)

    def _install_state_dict(self, state: dict, version: int) -> None:
        self.policy.load_state_dict(state)


class PoolSync:
    """The driver's side of the learner -> rollout pool sync."""

    def __init__(self, setting: str, learner):
        self.setting, self.learner = setting, learner
        self.plan: SyncPlan | None = None
        self.generation, self.joined = 0, False

    def plan_for(self, workers: list) -> SyncPlan:
        """Ask every rank where it holds its weights and choose the method; logged when it changes."""
        devices = ray.get([self.learner.sync_device.remote(), *[w.sync_device.remote() for w in workers]])
        plan = choose(self.setting, devices[0], devices[1:])
        if plan != self.plan:
            log.info("weight sync (rollout.weight_sync=%s, %d worker(s)): %s", self.setting, len(workers),
                     plan.describe())
        self.plan = plan
        self.invalidate()
        return plan

    def invalidate(self) -> None:
        """The collective group no longer matches the pool (a resize, a restarted worker): form it again."""
        self.joined = False

    def packed_ref(self, version: int):
        """The learner's weights at `version`, packed in the rollout dtype, as one object in the store."""
        return self.learner.get_weights.remote(self.plan.dtype, version)

    def push(self, workers: list, version: int) -> list[tuple[int, BaseException]]:
        """One collective or CUDA IPC sync of `version` to every worker. Returns the workers lost on the
        way as (index, error); raises WeightSyncError when the sync failed otherwise."""
        from actors.rollout_pool import WORKER_LOST

        if self.plan.method == "collective":
            if not self.joined:
                self._form_group(workers)
            sender = self.learner.sync_send.remote(version)
            refs = [w.sync_receive.remote(version) for w in workers]
        elif self.plan.method == "cuda_ipc":
            sender = self.learner.sync_ipc.remote(self.plan.dtype, version)
            refs = [w.sync_ipc.remote(sender, version) for w in workers]
        else:
            raise WeightSyncError(f"push is for collective and cuda_ipc, not {self.plan.method}")
        lost, failed = [], []
        for i, ref in enumerate(refs):
            try:
                got = ray.get(ref, timeout=SYNC_TIMEOUT_S + 30)
                if got != version:
                    failed.append(f"worker {i} reports v{got}")
            except WORKER_LOST as e:
                lost.append((i, e))
            except ray.exceptions.GetTimeoutError:
                failed.append(f"worker {i} did not answer within {SYNC_TIMEOUT_S + 30:.0f} s")
            except ray.exceptions.RayTaskError as e:
                failed.append(f"worker {i}: {str(e).strip().splitlines()[-1]}")
        try:
            ray.get(sender, timeout=SYNC_TIMEOUT_S + 30)
        except (ray.exceptions.RayTaskError, ray.exceptions.GetTimeoutError) as e:
            if not lost:  # with a worker lost the sender fails too; the pool restores it and syncs again
                failed.append(f"learner: {str(e).strip().splitlines()[-1]}")
        if self.plan.method == "cuda_ipc":
            ray.get(self.learner.sync_release.remote(version))
        if lost or failed:
            self.invalidate()
        if failed:
            raise WeightSyncError(f"weight sync v{version} by {self.plan.describe()} failed: " + "; ".join(failed))
        return lost

    def _form_group(self, workers: list) -> None:
        self.generation += 1
        world = len(workers) + 1
        host, port, entries, sizes = ray.get(self.learner.sync_listen.remote(world, self.plan.dtype))
        refs = [self.learner.sync_join.remote(self.plan.backend, world, self.generation)]
        refs += [w.sync_join.remote(host, port, i + 1, world, self.plan.backend, self.generation, entries, sizes)
                 for i, w in enumerate(workers)]
        try:
            ray.get(refs, timeout=SYNC_TIMEOUT_S + 30)
        except ray.exceptions.GetTimeoutError:
            raise WeightSyncError(f"weight-sync group {self.generation} ({self.plan.backend}, {world} ranks at "
                                  f"{host}:{port}) did not form within {SYNC_TIMEOUT_S + 30:.0f} s") from None
        self.joined = True
        log.info("weight-sync group %d formed: %s, %d ranks, rendezvous %s:%d", self.generation, self.plan.backend,
                 world, host, port)

    def check(self, workers: list) -> bool:
        """True when every worker holds the learner's weights bit for bit (workers that cannot say are
        skipped: vLLM); raises WeightSyncError naming the workers that differ."""
        (version, want), *got = ray.get([self.learner.weights_fingerprint.remote(self.plan.dtype),
                                          *[w.weights_fingerprint.remote(self.plan.dtype) for w in workers]])
        bad = [i for i, g in enumerate(got) if g is not None and g != want]
        if bad:
            raise WeightSyncError(f"rollout worker(s) {bad} hold weights that differ from the learner's v{version} "
                                  f"(sync by {self.plan.describe()})")
        return any(g is not None for g in got)
