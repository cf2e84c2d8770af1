"""One loaded reward-model version and the scoring of (prompt, response) pairs with it.

No HTTP and no Ray here: the deployment holds a `Snapshot` and swaps it whole, so every batch
scores with exactly one (model, tokenizer, version) and can say which version that was.

The forward itself is `frft_ray.models.rm_forward`, the same one `models.score` and RM training
use. Scores do not depend on what else is in the batch: GPT-2-style models number positions from
the first column, so with left padding a short text's reward would change with the longest
text it is batched with; `rm_forward` passes position ids counted from each text's first real
token (left out for a model whose forward takes none).

Device and dtype: a snapshot's weights live on the replica's device in its inference dtype
(`frft_ray.devices.serve_dtype`: under `precision: auto`, bf16 on a GPU and on a CPU with native
bf16 matmuls, else fp32); a hot swap loads the new version to the same place. Rewards are always
returned as fp32 Python floats.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from frft_ray.config import ModelsConfig
from frft_ray.devices import describe
from frft_ray.models import CONFIG_FILE, load_reward_checkpoint, rm_forward


@dataclass(frozen=True)
class Snapshot:
    """An immutable RM version; replaced, never mutated, on a hot swap."""

    model: object
    tokenizer: object
    version: int
    path: str
    meta: dict
    max_length: int
    loaded_at: float = field(default_factory=time.time)
    takes_position_ids: bool = True
    device: str = "cpu/fp32"  # where the weights live and their dtype (devices.describe)

    def info(self) -> dict:
        """What GET /v1/model reports."""
        return {
            "model_version": self.version,
            "iteration": self.meta.get("iteration"),
            "checkpoint": self.path,
            "loaded_at": self.loaded_at,
            "heldout_accuracy": self.meta.get("heldout_accuracy"),
            "max_length": self.max_length,
            "device": self.device,
        }


def checkpoint_max_length(path: str | Path) -> int:
    """Token budget the RM was trained with: models.max_length of the config saved beside it."""
    cfg_file = Path(path) / CONFIG_FILE
    if cfg_file.exists():
        from frft_ray.config import load_config

        return load_config(cfg_file).models.max_length
    return ModelsConfig().max_length


def load_snapshot(path: str | Path, version: int, meta: dict | None = None,
                  device: torch.device = torch.device("cpu"), dtype: torch.dtype = torch.float32) -> Snapshot:
    """Load a checkpoint folder written by `frft_ray.models.save_checkpoint` as version `version`,
    its weights on `device` in `dtype`."""
    loaded = load_reward_checkpoint(path)
    model = loaded.model.to(device=device, dtype=dtype).eval()
    takes_pos = "position_ids" in inspect.signature(model.forward).parameters
    return Snapshot(
        model=model,
        tokenizer=loaded.tokenizer,
        version=int(version),
        path=str(path),
        meta={**loaded.meta, **(meta or {})},
        max_length=checkpoint_max_length(path),
        takes_position_ids=takes_pos,
        device=describe(device, dtype),
    )


@torch.inference_mode()
def score_pairs(snap: Snapshot, prompts: list[str], responses: list[str], chunk: int = 32) -> list[float]:
    """Rewards for each (prompt, response), `chunk` sequences per forward pass; fp32 floats."""
    out: list[float] = []
    for i in range(0, len(prompts), chunk):
        r = rm_forward(snap.model, snap.tokenizer, prompts[i : i + chunk], responses[i : i + chunk], snap.max_length,
                       position_ids=snap.takes_position_ids)
        out.extend(r.float().cpu().tolist())
    return out
