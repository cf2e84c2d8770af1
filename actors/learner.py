"""The learner role: the one actor that trains the policy (SFT, then PPO) and holds the current RM.

It holds policy + value head + frozen reference + the RM version it was given. It runs SFT on
demonstrations, scores each rollout batch with its RM, runs the PPO epochs, measures the RM's
accuracy on pairs (the driver's RM-vs-truth diagnostics), and hands out versioned weights
(`WeightSource`: packed for the object store, broadcast to a collective group, or CUDA IPC handles).
Checkpoints hold policy, value head, optimizer and KL-controller state. `start_learner` places it
by `placement.learner`; it computes on `devices.role_device` with fp32 master weights and runs
forward/backward (PPO, SFT) and RM scoring under autocast to `devices.compute_dtype(cfg.precision)`.
"""

from __future__ import annotations

from pathlib import Path

import ray

from actors.common import setup_process
from actors.weight_sync import WeightSource
from frft_ray.config import RunConfig

LEARNER_STATE = "learner_state.pt"


def start_learner(cfg: RunConfig) -> "ray.actor.ActorHandle":
    """A learner actor placed by `placement.learner`; it holds no policy until `reset(policy_path, seed)`."""
    return LearnerActor.options(**cfg.placement.learner.ray_options()).remote(cfg)


@ray.remote
class LearnerActor(WeightSource):
    def __init__(self, cfg: RunConfig):
        setup_process(cfg.resources.torch_threads)
        import torch  # noqa: F401
        import transformers.models.gpt2.modeling_gpt2  # noqa: F401  (the slow imports, while the driver builds models)

        from frft_ray.devices import compute_dtype, role_device

        self.cfg = cfg
        self.device = role_device(cfg.placement.learner.num_gpus, "learner")
        self.dtype = compute_dtype(cfg.precision, self.device)
        self.policy = None
        self.score_scale = 1.0

    def device_info(self) -> str:
        """Where this learner computes: 'cuda:0/bf16', 'cpu/fp32'."""
        from frft_ray.devices import describe

        return describe(self.device, self.dtype)

    def _autocast(self):
        from frft_ray.devices import autocast

        return autocast(self.device, self.dtype)

    def reset(self, policy_path: str, seed: int) -> int:
        """Start over from a saved policy, exactly as a new learner with this seed would (the next arm)."""
        import torch

        torch.manual_seed(seed)
        self.seed = seed
        self._load_policy(policy_path)
        self.rm = self.rm_tok = None
        self.rm_version = -1
        self.version = 0
        return 0

    def _load_policy(self, path: str) -> None:
        from frft_ray.models import frozen_reference, load_policy_checkpoint

        loaded = load_policy_checkpoint(path, self.cfg.models.trust_remote_code, with_value_head=True)
        self.policy, self.tok = loaded.model.to(self.device), loaded.tokenizer
        self.value_head = loaded.meta.pop("value_head").to(self.device)
        self.ref = frozen_reference(self.policy)
        self.learner = self._make_learner()

    def _make_learner(self):
        from frft_ray.algorithms.ppo_update import PPOLearner

        return PPOLearner(self.policy, self.ref, self.value_head, self.tok, self.cfg.ppo,
                          temperature=self.cfg.rollout.temperature, seed=self.seed, dtype=self.dtype)

    # ------------------------------------------------------------ SFT
    def sft(self, prompts: list[str], responses: list[str], board=None) -> dict:
        """SFT on the demonstrations; its steps posted to `board` (a frft_ray.progress.ProgressBoard) as "sft"."""
        from frft_ray.algorithms.sft import train_sft
        from frft_ray.progress import reporter

        metrics = train_sft(self.policy, self.tok, prompts, responses, self.cfg.sft,
                            max_length=self.cfg.models.max_length, seed=self.seed, progress=False, dtype=self.dtype,
                            on_step=reporter(board, "sft"))
        # the reference for the KL penalty is the SFT policy
        from frft_ray.models import frozen_reference

        self.ref = frozen_reference(self.policy)
        self.learner = self._make_learner()
        return metrics

    # ------------------------------------------------------------ reward model
    def load_rm(self, path: str, version: int) -> int:
        from frft_ray.models import load_reward_checkpoint

        loaded = load_reward_checkpoint(path, self.cfg.models.trust_remote_code)
        self.rm, self.rm_tok, self.rm_version = loaded.model.to(self.device), loaded.tokenizer, version
        self.score_scale = 1.0  # a new RM is in its own units until told otherwise
        return version

    def set_score_scale(self, factor: float) -> None:
        """PPO sees the current RM's scores times `factor` (ppo.score_scale=initial_rm; the gold reward never)."""
        self.score_scale = float(factor)

    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        from frft_ray.models import score

        with self._autocast():
            return score(self.rm, self.rm_tok, prompts, responses, self.cfg.models.max_length).tolist()

    # ------------------------------------------------------------ PPO
    def train_step(self, batch, rewards: list[float] | None = None) -> dict:
        """One PPO update on `batch`, scored by the current RM, or by `rewards` when given (the oracle arm's gold)."""
        import torch

        if batch.policy_version != self.version:
            raise ValueError(f"rollout batch from policy v{batch.policy_version}, learner is at v{self.version}")
        if rewards is not None and len(rewards) != len(batch.prompts):
            raise ValueError(f"{len(rewards)} rewards for a batch of {len(batch.prompts)} responses")
        if rewards is None:
            scores = torch.tensor(self.score(batch.prompts, batch.responses), dtype=torch.float32) * self.score_scale
        else:
            scores = torch.tensor(list(rewards), dtype=torch.float32)
        stats = self.learner.step(batch, scores)
        stats["ppo/score_scale"] = self.score_scale if rewards is None else 1.0
        self.version += 1
        stats["rm_version"] = self.rm_version
        stats["policy_version"] = self.version
        return stats

    def _sync_state(self, version: int | None = None) -> dict:
        """The policy's state dict for a weight sync (actors/weight_sync.py, `WeightSource`); `version`, when
        given, must be the one this learner holds (a restored rollout worker asks for the pool's).

        Non-finite weights are refused here, naming the role and precision, rather than sent on to
        the rollout workers (where CUDA sampling would stop on a device-side assert)."""
        import torch

        from frft_ray.weight_sync import WeightSyncError

        if version is not None and version != self.version:
            raise WeightSyncError(f"learner: asked for policy weights v{version}, holds v{self.version}")
        state = self.policy.state_dict()
        bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            raise FloatingPointError(
                f"learner: policy weights v{self.version} hold NaN/inf in {len(bad)} tensor(s) (first: {bad[0]}), "
                f"precision={self.cfg.precision} on {self.device_info()}; try --set precision=fp32")
        return state

    def get_version(self) -> int:
        return self.version

    def rm_accuracy(self, pairs: list) -> dict:
        from frft_ray.algorithms.bt import evaluate_rm

        with self._autocast():
            return evaluate_rm(self.rm, self.rm_tok, pairs, self.cfg.models.max_length, 64)

    # ------------------------------------------------------------ checkpoints
    def save(self, path: str, meta: dict) -> str:
        import torch

        from frft_ray.models import save_checkpoint

        state = {"learner": self.learner.state_dict(), "version": self.version, "rng": torch.get_rng_state()}
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        # one folder, written whole or not at all (a temp folder renamed into place)
        save_checkpoint(path, self.policy, self.tok, self.cfg, {**meta, "policy_version": self.version},
                        value_head=self.value_head, write_extra=lambda folder: torch.save(state, folder / LEARNER_STATE))
        return path

    def restore(self, path: str) -> int:
        """Load policy, value head, optimizer, KL controller and RNG from a checkpoint folder.

        The state is read onto the CPU: RNG states must stay CPU ByteTensors (`set_rng_state` and
        `Generator.set_state` refuse CUDA ones), and `Optimizer.load_state_dict` itself moves each
        moment to its parameter's device and dtype.
        """
        import torch

        from frft_ray.models import load_policy_checkpoint

        loaded = load_policy_checkpoint(path, self.cfg.models.trust_remote_code, with_value_head=True)
        self.policy.load_state_dict(loaded.model.state_dict())
        self.value_head.load_state_dict(loaded.meta["value_head"].state_dict())
        state = torch.load(Path(path) / LEARNER_STATE, weights_only=False, map_location="cpu")
        self.learner.load_state_dict(state["learner"])
        torch.set_rng_state(state["rng"])
        if "cuda_rng" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        self.version = state["version"]
        return self.version

    def set_reference(self, path: str) -> None:
        """The KL reference is the SFT policy, also after a resume."""
        from frft_ray.models import frozen_reference, load_policy_checkpoint

        self.ref = frozen_reference(load_policy_checkpoint(path).model.to(self.device))
        self.learner = self._make_learner()
