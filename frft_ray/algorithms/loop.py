"""The shuffled-minibatch schedule shared by the SFT and reward-model loops, for fractional epochs.

`FractionalEpochs(n, batch_size, epochs, seed)` yields (step, epoch, indices) for
ceil(epochs * steps_per_epoch) steps, steps_per_epoch = ceil(n / batch_size): every epoch is a fresh
permutation of range(n) drawn from a `torch.Generator` seeded with `seed` (so the order does not
touch torch's global RNG, which the caller seeds for dropout), cut into consecutive batches; the
last batch of an epoch may be short, and a fractional last epoch stops part-way through. With a
`progress_desc` it drives a tqdm bar (closed when the loop ends, also on an exception).
"""

from __future__ import annotations

import math
from typing import Iterator

import torch


class FractionalEpochs:
    """Iterate to get (step, epoch, indices): step counts from 1, epoch = step / steps_per_epoch."""

    def __init__(self, n: int, batch_size: int, epochs: float, seed: int, progress_desc: str | None = None):
        if n < 1:
            raise ValueError(f"FractionalEpochs: need at least one item (got n={n})")
        if batch_size < 1 or epochs <= 0:
            raise ValueError(f"FractionalEpochs: need batch_size >= 1 and epochs > 0 (got {batch_size}, {epochs})")
        self.n, self.batch_size, self.seed, self.progress_desc = n, batch_size, seed, progress_desc
        self.steps_per_epoch = math.ceil(n / batch_size)
        self.total_steps = max(1, math.ceil(epochs * self.steps_per_epoch - 1e-9))
        self._bar = None

    def __len__(self) -> int:
        return self.total_steps

    def __iter__(self) -> Iterator[tuple[int, float, list[int]]]:
        gen = torch.Generator().manual_seed(self.seed)
        if self.progress_desc is not None:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.total_steps, desc=self.progress_desc, leave=False)
        step = 0
        try:
            while step < self.total_steps:
                perm = torch.randperm(self.n, generator=gen).tolist()
                for s in range(self.steps_per_epoch):
                    if step >= self.total_steps:
                        break
                    step += 1
                    yield step, step / self.steps_per_epoch, perm[s * self.batch_size : (s + 1) * self.batch_size]
                    if self._bar is not None:
                        self._bar.update(1)
        finally:
            if self._bar is not None:
                self._bar.close()
                self._bar = None

    def show(self, **values: float) -> None:
        """Show `values` (e.g. loss=...) beside the progress bar; a no-op without one."""
        if self._bar is not None:
            self._bar.set_postfix({k: f"{v:.3f}" for k, v in values.items()})
