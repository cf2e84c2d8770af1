"""What each RM endpoint replica is started with: the `serve:` section as it is, plus what the
launcher derives (the bearer token's hash, never the token; the registry poll interval)."""

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

    @classmethod
    def from_config(cls, cfg: ServeConfig, torch_threads: int = 1) -> "ReplicaSettings":
        """Reads the token from the environment variable `cfg.auth_token_env` names, here in the launcher."""
        token = os.environ.get(cfg.auth_token_env) or None
        return cls(cfg, hashlib.sha256(token.encode()).hexdigest() if token else None, POLL_S, torch_threads)
