"""A group of rollout workers with their own placement group, sized apart from the learner.

The driver calls `generate(prompts)`: prompts are sharded contiguously across workers and the
shards are gathered back in order, so N workers return exactly what one would, in the same order.
"""

from __future__ import annotations

import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from actors.rollout_worker import RolloutWorker
from frft_ray.config import RunConfig
from frft_ray.placement_check import ROLLOUT_STRATEGY


class RolloutPool:
    """`rollout.num_workers` workers, each placed by `placement.rollout` (one placement-group bundle each)."""

    def __init__(self, policy_path: str, cfg: RunConfig, pad_id: int, wait: bool = True):
        self.policy_path = policy_path
        self.cfg = cfg
        self.pad_id = pad_id
        self.workers: list = []
        self.pg = None
        self.version = 0
        self._weights_ref = None
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
                scheduling_strategy=PlacementGroupSchedulingStrategy(self.pg, placement_group_bundle_index=i),
            ).remote(self.policy_path, self.cfg, i)
            for i in range(n)
        ]
        if self._weights_ref is not None:
            ray.get([w.set_weights.remote(self._weights_ref, self.version) for w in self.workers])
        elif wait:
            self.wait_ready()

    def wait_ready(self, timeout_s: float = 600.0) -> None:
        """Block until every worker has loaded its policy."""
        try:
            ray.get(self.pg.ready(), timeout=timeout_s)
        except ray.exceptions.GetTimeoutError:
            raise TimeoutError(f"{self.size} rollout worker(s) of {self.cfg.placement.rollout.bundle()} could not be "
                               f"placed within {timeout_s:.0f} s: check placement.rollout and the cluster's free "
                               "resources") from None
        ray.get([w.get_version.remote() for w in self.workers])

    @property
    def size(self) -> int:
        return len(self.workers)

    def load_checkpoint(self, policy_path: str) -> None:
        """Every worker starts over from a saved policy (weights version 0), as a new pool would."""
        self.policy_path = str(policy_path)
        ray.get([w.load_checkpoint.remote(self.policy_path) for w in self.workers])
        self._weights_ref, self.version = None, 0

    def set_weights(self, state_dict_or_ref, version: int) -> None:
        """One object in the store; every worker loads it; returns when all hold `version`."""
        ref = state_dict_or_ref if isinstance(state_dict_or_ref, ray.ObjectRef) else ray.put(state_dict_or_ref)
        got = ray.get([w.set_weights.remote(ref, version) for w in self.workers])
        assert all(v == version for v in got), f"rollout workers report versions {got}, expected {version}"
        self._weights_ref, self.version = ref, version

    def generate(self, prompts: list[str], greedy: bool = False, seed: int | None = None):
        from frft_ray.rollout import RolloutBatch

        n = len(self.workers)
        size = -(-len(prompts) // n)
        shards = [prompts[i * size : (i + 1) * size] for i in range(n)]
        refs = [
            w.generate.remote(s, greedy, None if seed is None else seed + i)
            for i, (w, s) in enumerate(zip(self.workers, shards))
            if s
        ]
        return RolloutBatch.concat(ray.get(refs), self.pad_id)

    def __enter__(self) -> "RolloutPool":
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

    def shutdown(self) -> None:
        for w in self.workers:
            ray.kill(w)
        self.workers = []
        if self.pg is not None:
            remove_placement_group(self.pg)
            self.pg = None
