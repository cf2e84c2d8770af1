"""Run-folder bookkeeping: metrics (JSONL + TensorBoard) and phase timers (state files: run_state.py)."""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

from frft_ray.run_state import atomic_write_text

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


class RunLog:
    """The run's `run.log`: every "frft_ray" log line at INFO and above from construction to `close()`,
    appended across resumes. The driver owns it, so runs started from the Python API or a sweep
    (several runs in one process) each log to their own folder only."""

    FORMAT = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")

    def __init__(self, run_dir: Path):
        self.handler = logging.FileHandler(run_dir / "run.log")
        self.handler.setFormatter(self.FORMAT)
        self.handler.setLevel(logging.INFO)
        self._level = log.level
        if log.getEffectiveLevel() > logging.INFO:
            log.setLevel(logging.INFO)
        log.addHandler(self.handler)

    def close(self) -> None:
        log.removeHandler(self.handler)
        self.handler.close()
        log.setLevel(self._level)


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

    def keep_completed(self, completed: dict[str, int]) -> int:
        """On a resume: drop the records of iterations that no checkpoint holds (a crash after some PPO
        steps logged them), and a line cut short by the crash, so each iteration is in metrics.jsonl
        once. `completed` is each arm's number of checkpointed iterations. Returns the lines dropped."""
        if not self.path.exists():
            return 0
        kept, dropped = [], 0
        for line in self.path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                dropped += 1
                continue
            arm, it = rec.get("arm"), rec.get("iteration")
            if arm is not None and it is not None and it > completed.get(arm, 0):
                dropped += 1
                continue
            kept.append(line)
        if dropped:
            atomic_write_text(self.path, "".join(f"{x}\n" for x in kept))
            log.info("metrics.jsonl: dropped %d record(s) of iterations the crash left unfinished", dropped)
        return dropped

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
