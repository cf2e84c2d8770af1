"""Process setup shared by every actor: offline hub, quiet progress bars, torch threads."""

from __future__ import annotations

import os

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "TQDM_DISABLE": "1",
}


def setup_process(torch_threads: int | None) -> None:
    for k, v in OFFLINE_ENV.items():
        os.environ.setdefault(k, v)
    if torch_threads:
        import torch

        torch.set_num_threads(torch_threads)
