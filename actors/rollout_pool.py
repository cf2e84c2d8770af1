"""A group of rollout workers with their own placement group, sized apart from the learner.

The driver calls `generate(prompts)`: prompts are sharded contiguously across workers and the
shards are gathered back in order, so N workers return exactly what one would, in the same order.

Weights: `attach_learner(learner)` chooses how the learner's weights reach the workers
(`rollout.weight_sync`, logged once; actors/weight_sync.py) and `sync_from_learner(version)` sends each
new version by it. `set_weights(state_dict_or_ref, version)` sends given weights through the object store.

A worker whose process dies (OOM, a lost node, `kill -9`) is restarted by Ray (`rollout.max_restarts`)
in its own placement-group bundle. The pool keeps the ObjectRef of the last weights it sent through the
object store (with a collective or CUDA IPC sync, it asks the learner for that version packed, once),
so it brings the new process to the current policy and weights version (`RolloutWorker.restore`); a
collective group is formed again, new process included, at the next sync. It asks the worker for its
share once more, logs it and counts it in `restarts` (logged per iteration as `rollout/restarts`). A
worker that cannot come back, or fails again, stops the run with `RolloutWorkerLost`.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from actors.rollout_worker import NeedsRestore, RolloutWorker
from actors.weight_sync import PoolSync
from frft_ray.config import RunConfig
from frft_ray.faults import RoleDiedError, first_line
from frft_ray.placement_check import ROLLOUT_STRATEGY

log = logging.getLogger("frft_ray")

# what a lost worker looks like to a caller: a task that died with the process, or a call that reached
# the restarted process before `restore` (it refuses rather than generate with its first weights)
WORKER_LOST = (ray.exceptions.RayActorError, NeedsRestore)


class RolloutWorkerLost(RoleDiedError):
    """A rollout worker died and could not be brought back (restarts used up, or it failed again)."""

    def __init__(self, detail: str, run_dir: str | None = None):
        super().__init__("rollout worker", detail, run_dir)


class RolloutPool:
    """`rollout.num_workers` workers, each placed by `placement.rollout` (one placement-group bundle each)."""

    def __init__(self, policy_path: str, cfg: RunConfig, pad_id: int, wait: bool = True):
        self.policy_path = policy_path
        self.cfg = cfg
        self.pad_id = pad_id
        self.workers: list = []
        self.pg = None
        self.version = 0
        self._weights_ref = None  # kept: a restarted worker is sent the same object
        self.sync: PoolSync | None = None  # the learner -> workers sync, once a learner is attached
        self.restarts = 0  # workers restored after their process died, over the pool's life
        self.resize(cfg.rollout.num_workers, wait)

    def resize(self, n: int, wait: bool = True) -> None:
        """(Re)create the pool with n workers; new workers get the current weights version. With
        `wait=False` the workers start in the background (`wait_ready()`, or the first call, waits)."""
        if n < 1:
            raise ValueError(f"rollout pool needs at least one worker, got {n}")
        self.shutdown()
        place = self.cfg.placement.rollout
        self.pg = placement_group([place.bundle()] * n, strategy=ROLLOUT_STRATEGY, name="frft_rollout")
        self.workers = [
            RolloutWorker.options(
                **place.ray_options(),
                max_restarts=self.cfg.rollout.max_restarts,
                max_task_retries=0,  # the pool retries, after it has re-sent the weights
                scheduling_strategy=PlacementGroupSchedulingStrategy(self.pg, placement_group_bundle_index=i),
            ).remote(self.policy_path, self.cfg, i)
            for i in range(n)
        ]
        if self._weights_ref is not None:
            self._on_all(lambda w: w.set_weights.remote(self._weights_ref, self.version))
        elif wait or (self.sync is not None and self.version):
            self.wait_ready()
        if self.sync is not None:  # the new workers may sit elsewhere: choose again, form a new group
            self.sync.plan_for(self.workers)
            if self._weights_ref is None and self.version:
                self.sync_from_learner(self.version)

    def wait_ready(self, timeout_s: float = 600.0) -> None:
        """Block until every worker has loaded its policy."""
        try:
            ray.get(self.pg.ready(), timeout=timeout_s)
        except ray.exceptions.GetTimeoutError:
            raise TimeoutError(f"{self.size} rollout worker(s) of {self.cfg.placement.rollout.bundle()} could not be "
                               f"placed within {timeout_s:.0f} s: check placement.rollout and the cluster's free "
                               "resources") from None
        self._on_all(lambda w: w.get_version.remote())

    @property
    def size(self) -> int:
        return len(self.workers)

    def load_checkpoint(self, policy_path: str) -> None:
        """Every worker starts over from a saved policy (weights version 0), as a new pool would."""
        self.policy_path = str(policy_path)
        self._weights_ref, self.version = None, 0
        self._on_all(lambda w: w.load_checkpoint.remote(self.policy_path))

    def attach_learner(self, learner) -> None:
        """Sync weights from `learner` from now on, by the method `rollout.weight_sync` gives (logged)."""
        self.sync = PoolSync(self.cfg.rollout.weight_sync, learner)
        self.sync.plan_for(self.workers)

    def set_weights(self, state_dict_or_ref, version: int) -> None:
        """One object in the store; every worker loads it; returns when all hold `version`."""
        ref = state_dict_or_ref if isinstance(state_dict_or_ref, ray.ObjectRef) else ray.put(state_dict_or_ref)
        self._weights_ref, self.version = ref, version  # what a worker restarted from now on is restored to
        got = self._on_all(lambda w: w.set_weights.remote(ref, version))
        assert all(v == version for v in got), f"rollout workers report versions {got}, expected {version}"

    def sync_from_learner(self, version: int) -> None:
        """The attached learner's weights at `version` to every worker; returns when all hold it."""
        if self.sync is None:
            raise RuntimeError("rollout pool: sync_from_learner before attach_learner")
        if self.sync.plan.method == "object_store":
            return self.set_weights(self.sync.packed_ref(version), version)
        self._weights_ref, self.version = None, version
        if self.sync.plan.method == "collective" and not self.sync.joined:
            # a new group forms: every worker leaves its old one, and a restarted worker is restored first
            self._on_all(lambda w: w.sync_close.remote())
        for attempt in range(2):
            lost = self.sync.push(self.workers, version)
            if not lost:
                return
            if attempt:
                raise RolloutWorkerLost(f"rollout worker(s) {[i for i, _ in lost]} lost again during the weight sync")
            for i, err in lost:
                self._restore(i, err)

    def check_weights(self) -> bool:
        """True when every worker holds the attached learner's weights bit for bit (see `PoolSync.check`)."""
        return self.sync is not None and self.sync.check(self.workers)

    def generate(self, prompts: list[str], greedy: bool = False, seed: int | None = None):
        from frft_ray.rollout import RolloutBatch

        n = len(self.workers)
        size = -(-len(prompts) // n)
        shards = [prompts[i * size : (i + 1) * size] for i in range(n)]
        calls = {i: (lambda w, s=s, i=i: w.generate.remote(s, greedy, None if seed is None else seed + i))
                 for i, s in enumerate(shards) if s}
        refs = {i: call(self.workers[i]) for i, call in calls.items()}
        return RolloutBatch.concat([self._get(i, ref, calls[i]) for i, ref in refs.items()], self.pad_id)

    # ------------------------------------------------------------ lost workers
    def _on_all(self, call: Callable) -> list:
        """`call(worker)` on every worker at once; the results in worker order (lost workers restored)."""
        refs = [call(w) for w in self.workers]
        return [self._get(i, ref, call) for i, ref in enumerate(refs)]

    def _get(self, i: int, ref, call: Callable):
        """The result of worker i's task `ref`; if the worker was lost, restore it and `call` it once more."""
        try:
            return ray.get(ref)
        except WORKER_LOST as e:
            self._restore(i, e)
        try:
            return ray.get(call(self.workers[i]))
        except WORKER_LOST as e:
            raise RolloutWorkerLost(f"rollout worker {i} failed again right after a restart: {first_line(e)}") from e

    def _restore(self, i: int, err: BaseException, timeout_s: float = 300.0) -> None:
        """Wait for Ray to restart worker i, then load the pool's current policy and weights into it."""
        log.warning("rollout worker %d lost (%s); restoring weights v%d and retrying its share once",
                    i, first_line(err), self.version)
        deadline, died = time.monotonic() + timeout_s, 0
        weights = self._weights_ref
        if self.sync is not None:
            self.sync.invalidate()  # the new process is in no group yet
            if weights is None and self.version:
                weights = self.sync.packed_ref(self.version)
        while True:
            try:
                ray.get(self.workers[i].restore.remote(self.policy_path, weights, self.version),
                        timeout=max(1.0, deadline - time.monotonic()))
                break
            except ray.exceptions.ActorUnavailableError:  # restarting: its new process is not up yet
                pass
            except ray.exceptions.ActorDiedError as e:  # for good once it says so twice (restarts used up)
                died += 1
                if died >= 2:
                    raise RolloutWorkerLost(
                        f"rollout worker {i} died and was not restarted (rollout.max_restarts="
                        f"{self.cfg.rollout.max_restarts}, {self.restarts} restart(s) so far): {first_line(e)}") from e
            except ray.exceptions.GetTimeoutError:
                pass
            if time.monotonic() > deadline:
                raise RolloutWorkerLost(f"rollout worker {i} did not come back within {timeout_s:.0f} s of its restart")
            time.sleep(0.2)
        self.restarts += 1
        log.warning("rollout worker %d restored at weights v%d (%d restart(s) in this pool)", i, self.version,
                    self.restarts)

    def __enter__(self) -> "RolloutPool":
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

    def shutdown(self) -> None:
        for w in self.workers:
            ray.kill(w)
        self.workers = []
        if self.sync is not None:
            self.sync.invalidate()
        if self.pg is not None:
            remove_placement_group(self.pg)
            self.pg = None
