"""Rollout worker: a policy copy plus a generation engine, versioned weights in, batches out."""

from __future__ import annotations

import ray

from actors.common import setup_process
from frft_ray.config import RunConfig


@ray.remote
class RolloutWorker:
    """Generates with the HF engine (`engine: hf`) or vLLM (`engine: vllm`, see actors/vllm_engine.py).

    Weights arrive as a state dict through the object store with a version number; a worker never
    mixes versions inside one batch and refuses to go backwards.
    """

    def __init__(self, policy_path: str, cfg: RunConfig, rank: int):
        setup_process(cfg.resources.torch_threads)
        from frft_ray.models import load_policy_checkpoint

        self.cfg = cfg.rollout
        self.max_prompt_tokens = cfg.models.max_prompt_tokens
        self.rank = rank
        if self.cfg.engine == "vllm":
            from actors.vllm_engine import VLLMEngine

            self.engine = VLLMEngine(policy_path, self.cfg, self.max_prompt_tokens,
                                     gpu_share=cfg.placement.rollout.num_gpus)
            self.policy = self.tok = None
        else:
            self.engine = None
            loaded = load_policy_checkpoint(policy_path)
            self.policy, self.tok = loaded.model.eval(), loaded.tokenizer
        self.version = 0

    def load_checkpoint(self, policy_path: str) -> int:
        """Start over from a saved policy (another arm, or a policy to evaluate): weights version 0."""
        from frft_ray.models import load_policy_checkpoint

        if self.engine is not None:
            from actors.vllm_engine import checkpoint_state_dict

            self.engine.version = 0
            self.engine.load_weights(checkpoint_state_dict(policy_path), 0)
        else:
            loaded = load_policy_checkpoint(policy_path)
            self.policy, self.tok = loaded.model.eval(), loaded.tokenizer
        self.version = 0
        return 0

    def set_weights(self, state_dict: dict, version: int) -> int:
        if version < self.version:
            raise ValueError(f"rollout worker {self.rank}: refusing weights v{version} older than v{self.version}")
        if self.engine is not None:
            self.engine.load_weights(state_dict, version)
        else:
            self.policy.load_state_dict(state_dict)
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
