"""Process setup shared by every actor: offline hub, quiet progress bars, torch threads."""

from __future__ import annotations

from frft_ray.env import ACTOR_ENV, apply_offline_defaults


def setup_process(torch_threads: int | None) -> None:
    apply_offline_defaults(ACTOR_ENV)  # the one definition: frft_ray/env.py
    if torch_threads:
        import torch

        torch.set_num_threads(torch_threads)
