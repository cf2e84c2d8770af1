"""Run-folder bookkeeping: metrics (JSONL + TensorBoard) and phase timers (state files: run_state.py)."""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger("frft_ray")


class PhaseTimer:
    """Accumulates wall seconds per phase; `with timer("ppo"): ...`."""

    def __init__(self):
        self.totals: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, phase: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.totals[phase] += time.perf_counter() - t0

    def as_metrics(self) -> dict[str, float]:
        return {f"timing/{k}": round(v, 3) for k, v in self.totals.items()}


class MetricsLogger:
    """Appends one JSON object per record to metrics.jsonl and mirrors numbers to TensorBoard."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / "metrics.jsonl"
        self._tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(run_dir / "tb"))
        except Exception as e:  # TensorBoard is optional at run time; the JSONL is the record
            log.warning("TensorBoard disabled: %s", e)

    def log(self, record: dict, step: int | None = None, prefix: str = "") -> None:
        record = {"time": round(time.time(), 3), **record}
        with self.path.open("a") as f:
            f.write(json.dumps(record, default=float) + "\n")
        if self._tb is not None and step is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("time", "step"):
                    self._tb.add_scalar(f"{prefix}{k}", v, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
