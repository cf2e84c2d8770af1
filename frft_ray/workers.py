"""The run's long-lived Ray roles, started once and kept until the run ends (part of the driver layer).

Starting a Ray worker costs seconds on a small machine (a process, torch and transformers imports, a
model load) and a Ray Train worker group 15-30 s, so nothing is started per iteration or per arm:

- the learner actor runs SFT, then every arm (`LearnerActor.reset` starts it over from the SFT
  policy, exactly as a new actor would);
- the rollout pool serves every arm and the final evaluation (`RolloutPool.load_checkpoint`);
- the RM trainer (a Ray Train worker group) fits the initial RM and every refit;
- the embedder actors (only when an arm filters) embed the pool once and each iteration's samples.

They start together, before SFT, so the RM trainer's and the embedders' start-up overlaps with SFT.
"""

from __future__ import annotations

from pathlib import Path

import ray

from actors.embedder import EmbedderPool
from actors.learner import start_learner
from actors.reward_trainer import RewardTrainerGroup
from actors.rollout_pool import RolloutPool
from frft_ray import phases
from frft_ray.config import RunConfig
from frft_ray.tracking import PhaseTimer


class RunWorkers:
    def __init__(self, cfg: RunConfig, run_dir: Path, policy_path: Path, timer: PhaseTimer):
        from frft_ray.arm import arms_of

        self.cfg, self.timer = cfg, timer
        self.learner = self.pool = self.rm_trainer = self.embedders = None
        with timer("overhead_start"):
            self.rm_trainer = RewardTrainerGroup(cfg, run_dir / "ray_train").start()  # comes up in the background
            if "frft" in arms_of(cfg):
                self.embedders = EmbedderPool(cfg.filter, cfg.placement.embedder)
            self.learner = start_learner(cfg, policy_path, cfg.seed)
            self.pool = RolloutPool(str(policy_path), cfg, phases.pad_id(policy_path))

    def __enter__(self) -> "RunWorkers":
        return self

    def __exit__(self, *exc) -> None:
        if self.pool is not None:
            self.pool.shutdown()
        if self.embedders is not None:
            self.embedders.shutdown()
        if self.learner is not None:
            ray.kill(self.learner)
        if self.rm_trainer is not None:
            self.rm_trainer.stop()
