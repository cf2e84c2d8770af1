"""What each RM endpoint replica is started with: the `serve:` section as it is, plus what the
launcher derives (the bearer token's hash, never the token; the registry poll interval; the GPUs
`placement.serve` reserves per replica and the run's `precision`, from which the replica picks its
device and the dtype of its weights: frft_ray/devices.py)."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from frft_ray.config import ServeConfig

POLL_S = 0.5


@dataclass(frozen=True)
class ReplicaSettings:
    serve: ServeConfig
    token_sha256: str | None = None  # SHA-256 of the bearer token; None = no auth
    poll_s: float = POLL_S  # how often a replica asks the version registry for a newer RM
    torch_threads: int = 1
    num_gpus: float = 0.0  # placement.serve.num_gpus: > 0 puts the replica's model on CUDA
    precision: str = "auto"  # the run's `precision`: auto = bf16 weights on a GPU, fp32 on the CPU

    @classmethod
    def from_config(cls, cfg: ServeConfig, torch_threads: int = 1, num_gpus: float = 0.0,
                    precision: str = "auto") -> "ReplicaSettings":
        """Reads the token from the environment variable `cfg.auth_token_env` names, here in the launcher."""
        token = os.environ.get(cfg.auth_token_env) or None
        return cls(cfg, hashlib.sha256(token.encode()).hexdigest() if token else None, POLL_S, torch_threads,
                   num_gpus, precision)
