"""Rollout worker: a policy copy plus a generation engine, versioned weights in, batches out."""

from __future__ import annotations

import ray

from actors.common import setup_process
from frft_ray.config import RunConfig


@ray.remote
class RolloutWorker:
    """Generates with the HF engine (`engine: hf`) or vLLM (`engine: vllm`, see actors/vllm_engine.py).

    Weights arrive as a state dict through the object store with a version number; a worker never
    mixes versions inside one batch and refuses to go backwards. The HF engine holds its policy on
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
        if self.engine is not None:
            from actors.vllm_engine import checkpoint_state_dict

            self.engine.version = 0
            self.engine.load_weights(checkpoint_state_dict(policy_path), 0)
        else:
            self._load(policy_path)
        self.version = 0
        return 0

    def set_weights(self, state_dict: dict, version: int) -> int:
        if version < self.version:
            raise ValueError(f"rollout worker {self.rank}: refusing weights v{version} older than v{self.version}")
        if self.engine is not None:
            self.engine.load_weights(state_dict, version)
        else:
            self.policy.load_state_dict(state_dict)  # copies into the held tensors: device and dtype kept
        self.version = version
        return version

    def generate(self, prompts: list[str], greedy: bool = False, seed: int | None = None):
        if self.engine is not None:
            return self.engine.generate(prompts, greedy=greedy, seed=seed, policy_version=self.version)
        from frft_ray.rollout import generate

        return generate(self.policy, self.tok, prompts, self.cfg, self.max_prompt_tokens, greedy=greedy,
                        policy_version=self.version, seed=seed)

    def get_version(self) -> int:
        return self.version
