"""Rollout worker: a policy copy plus a generation engine, versioned weights in, batches out."""

from __future__ import annotations

import ray

from actors.common import setup_process
from actors.weight_sync import WeightSink
from frft_ray.config import RunConfig


class NeedsRestore(RuntimeError):
    """This worker was restarted by Ray and holds its first policy, not the pool's current weights."""


@ray.remote
class RolloutWorker(WeightSink):
    """Generates with the HF engine (`engine: hf`) or vLLM (`engine: vllm`, see actors/vllm_engine.py).

    Restarts: the pool (actors/rollout_pool.py) starts workers with Ray's `max_restarts`, so a worker
    whose process dies comes back in the same placement-group bundle, re-running `__init__` with its
    first policy path at weights version 0. Until the pool calls `restore` with the pool's current
    policy and weights, such a worker refuses to generate or take weights (`NeedsRestore`): a batch
    from a restarted worker can never carry stale weights under a current version number.

    Weights arrive with a version number by the pool's `rollout.weight_sync` method (packed buckets
    through the object store, a collective broadcast from the learner, or CUDA IPC handles; see
    actors/weight_sync.py); a worker never mixes versions inside one batch and refuses to go backwards.
    The HF engine holds its policy on
    `devices.role_device(placement.rollout.num_gpus)` in `devices.compute_dtype(precision)`: it only
    infers, so the weights themselves are cast (bf16 on GPUs); loaded weights keep that device and
    dtype. Batches leave the worker on the CPU.
    """

    def __init__(self, policy_path: str, cfg: RunConfig, rank: int):
        setup_process(cfg.resources.torch_threads)
        from frft_ray.devices import compute_dtype, role_device

        self.cfg = cfg.rollout
        self.max_prompt_tokens = cfg.models.max_prompt_tokens
        self.rank = rank
        self.engine = self.policy = self.tok = None
        if self.cfg.engine == "vllm":  # first: its own checks say what a vLLM worker is missing
            from actors.vllm_engine import VLLMEngine

            self.engine = VLLMEngine(policy_path, self.cfg, self.max_prompt_tokens,
                                     gpu_share=cfg.placement.rollout.num_gpus)
        self.device = role_device(cfg.placement.rollout.num_gpus, "rollout")
        self.dtype = compute_dtype(cfg.precision, self.device)
        if self.engine is None:
            self._load(policy_path)
        self.version = 0
        self.policy_path = policy_path
        self.restarted = ray.get_runtime_context().was_current_actor_reconstructed  # True after a restart

    def _check_restored(self) -> None:
        if self.restarted:
            raise NeedsRestore(f"rollout worker {self.rank} was restarted and has not been restored yet")

    def restore(self, policy_path: str, weights, version: int) -> int:
        """Bring a restarted worker to the pool's state: its current policy checkpoint, then (when the
        pool has sent weights since) those weights at `version` (`set_weights`: packed or a state dict).
        Returns the version it now holds."""
        self.restarted = False
        try:
            if policy_path != self.policy_path:
                self.load_checkpoint(policy_path)
            if weights is not None:
                self.set_weights(weights, version)
        except BaseException:
            self.restarted = True
            raise
        return self.version

    def pid(self) -> int:
        import os

        return os.getpid()

    def _load(self, policy_path: str) -> None:
        from frft_ray.models import load_policy_checkpoint

        loaded = load_policy_checkpoint(policy_path)
        self.policy, self.tok = loaded.model.to(device=self.device, dtype=self.dtype).eval(), loaded.tokenizer

    def device_info(self) -> str:
        """Where this worker generates, read from the weights it holds (HF): 'cuda:0/bf16', 'cpu/fp32'."""
        from frft_ray.devices import describe

        if self.policy is None:
            return describe(self.device, self.dtype)
        w = next(self.policy.parameters())
        return describe(w.device, w.dtype)

    def load_checkpoint(self, policy_path: str) -> int:
        """Start over from a saved policy (another arm, or a policy to evaluate): weights version 0."""
        self._check_restored()
        if self.engine is not None:
            from actors.vllm_engine import checkpoint_state_dict

            self.engine.version = 0
            self.engine.load_weights(checkpoint_state_dict(policy_path), 0)
        else:
            self._load(policy_path)
        self.policy_path, self.version = policy_path, 0
        return 0

    # ---- weight sync (actors/weight_sync.py, `WeightSink`: set_weights, sync_receive, sync_ipc)
    def _accept(self, version: int) -> None:
        self._check_restored()
        if version < self.version:
            raise ValueError(f"rollout worker {self.rank}: refusing weights v{version} older than v{self.version}")

    def _sync_target(self) -> dict | None:
        return None if self.engine is not None else self.policy.state_dict()

    def _install(self, entries: list, buckets: list, version: int) -> None:
        from frft_ray.weight_pack import unpack_into, views

        if self.engine is not None:
            self.engine.load_weights(views(entries, buckets), version)
        else:
            unpack_into(self.policy.state_dict(), entries, buckets)  # in place: device and dtype kept

    def _install_state_dict(self, state: dict, version: int) -> None:
        if self.engine is not None:
            self.engine.load_weights(state, version)
        else:
            self.policy.load_state_dict(state)  # copies into the held tensors: device and dtype kept

    def generate(self, prompts: list[str], greedy: bool = False, seed: int | None = None):
        self._check_restored()
        if self.engine is not None:
            return self.engine.generate(prompts, greedy=greedy, seed=seed, policy_version=self.version)
        from frft_ray.rollout import generate

        return generate(self.policy, self.tok, prompts, self.cfg, self.max_prompt_tokens, greedy=greedy,
                        policy_version=self.version, seed=seed)

    def get_version(self) -> int:
        return self.version
