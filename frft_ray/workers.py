"""The run's long-lived Ray roles, started once and kept until the run ends (part of the driver layer).

Starting a Ray worker costs seconds on a small machine (a process, torch and transformers imports, a
model load) and a Ray Train worker group 15-30 s, so nothing is started per iteration or per arm:

- the learner actor runs SFT, then every arm (`LearnerActor.reset` starts it over from the SFT
  policy, exactly as a new actor would);
- the rollout pool serves every arm and the final evaluation (`RolloutPool.load_checkpoint`);
- the RM trainer (a Ray Train worker group) fits the initial RM and every refit;
- the embedder actors (only when an arm filters) embed the pool once and each iteration's samples.

They start together as soon as Ray is up (the data is loaded and checked before Ray starts), while
the driver builds the base models, and the driver waits for all of them before SFT (timed as `overhead_start`). Before any of
them starts, `ensure_placement` checks that all of them (and the Serve replicas when serve.enabled)
can ever be placed on the cluster together, and fails in seconds naming the role if not.

If the learner or the RM trainer dies, leaving the `with RunWorkers(...)` block turns the error into
`faults.RoleDiedError`, naming the role and `frft-ray run --resume RUN_DIR` (rollout workers are
restarted by their pool instead).
"""

from __future__ import annotations

import logging
from pathlib import Path

import ray

from actors.embedder import EmbedderPool
from actors.learner import start_learner
from actors.reward_trainer import RewardTrainerGroup
from actors.rollout_pool import RolloutPool
from frft_ray import phases
from frft_ray.config import RunConfig
from frft_ray.faults import RoleDiedError, first_line
from frft_ray.placement_check import ensure_placement
from frft_ray.progress import ProgressBoard
from frft_ray.tracking import PhaseTimer

log = logging.getLogger("frft_ray")

class RunWorkers:
    """Start with `RunWorkers(cfg, run_dir, timer)` right after Ray is up (the learner, RM trainer and
    embedders need no checkpoint), then `start_policy(path)` once the first policy exists."""

    def __init__(self, cfg: RunConfig, run_dir: Path, timer: PhaseTimer):
        from frft_ray.arm import arms_of

        self.cfg, self.timer, self.run_dir = cfg, timer, run_dir
        self.pool = self.embedders = None
        ensure_placement(cfg)  # a run that can never be placed fails here, before any actor starts
        log.info("starting the run's roles: learner, RM trainer (Ray Train, %d worker(s)), %d rollout worker(s)%s; "
                 "each imports torch, ~5-10 s of CPU apiece", cfg.reward.num_workers, cfg.rollout.num_workers,
                 f", {cfg.filter.num_embedders} embedder(s)" if "frft" in arms_of(cfg) else "")
        with timer("overhead_start"):  # every role starts in the background
            self.board = ProgressBoard.remote()  # where SFT and RM fits post their steps (frft_ray/progress.py)
            self.learner = start_learner(cfg)
            self.rm_trainer = RewardTrainerGroup(cfg, run_dir / "ray_train", self.board).start()
            if "frft" in arms_of(cfg):
                self.embedders = EmbedderPool(cfg.filter, cfg.placement.embedder, cfg.resources.progress_every_s)

    def start_policy(self, policy_path: Path) -> None:
        """Start the rollout pool on `policy_path` (in the background) and load it into the learner."""
        with self.timer("overhead_start"):
            self.pool = RolloutPool(str(policy_path), self.cfg, phases.pad_id(policy_path), wait=False)
            ray.get(self.learner.reset.remote(str(policy_path), self.cfg.seed))
            # Wait for every role here rather than let them start during SFT: on a small node, processes
            # importing torch next to a multi-threaded SFT slowed it by half (2 cores, demo config).
            self.pool.wait_ready()
            self.pool.attach_learner(self.learner)  # chooses and logs the weight-sync method (rollout.weight_sync)
            self.rm_trainer.wait_ready()
            if self.embedders is not None:
                self.embedders.wait_ready()

    def __enter__(self) -> "RunWorkers":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        died = role_died(exc, {"learner": [self.learner], "rollout worker": self.pool.workers if self.pool else [],
                               "embedder": self.embedders.actors if self.embedders else [],
                               "RM trainer": [self.rm_trainer.channel]})
        self._stop()
        if died is not None:
            raise died.in_run(self.run_dir) from exc

    def _stop(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()
        if self.embedders is not None:
            self.embedders.shutdown()
        if self.learner is not None:
            ray.kill(self.learner)
        if self.rm_trainer is not None:
            self.rm_trainer.stop()


def role_died(err: BaseException | None, roles: dict[str, list]) -> RoleDiedError | None:
    """`err` as a RoleDiedError naming the role whose actor died (`roles`: role -> its actor handles),
    or None when `err` is no actor's death."""
    if isinstance(err, RoleDiedError):
        return err
    if not isinstance(err, ray.exceptions.RayActorError):
        return None
    for role, handles in roles.items():
        if any(h is not None and h._actor_id.hex() == err.actor_id for h in handles):
            return RoleDiedError(role, first_line(err))
    return RoleDiedError("a Ray actor of the run", first_line(err))
