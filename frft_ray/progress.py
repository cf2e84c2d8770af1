"""Progress of the long phases that run inside Ray roles (SFT, RM fits, embedding the pool), in the
driver's log: the roles' own output goes to their Ray log files, so a user watching `frft-ray run`
would otherwise see nothing for minutes.

A role posts its step count to the run's `ProgressBoard` (`reporter`: at most every 2 s, fire and
forget, so a step never waits on it); the driver, while it waits on the role, logs a line per phase
every `resources.progress_every_s` seconds (`wait`), e.g. `SFT steps: 120/504 (24%), 13 s`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import ray

log = logging.getLogger("frft_ray")
POST_EVERY_S = 2.0  # how often a role posts; the driver logs less often


@ray.remote(num_cpus=0)
class ProgressBoard:
    """{phase key: (steps done, total steps)}, as the roles last posted them."""

    def __init__(self):
        self.steps: dict[str, tuple[int, int]] = {}

    def post(self, key: str, done: int, total: int) -> None:
        self.steps[key] = (done, total)

    def read(self) -> dict[str, tuple[int, int]]:
        return dict(self.steps)


def reporter(board, key: str) -> Callable[[int, int], None] | None:
    """In a role: `on_step(done, total)` posting to `board` under `key` (throttled); None without a board."""
    if board is None:
        return None
    last = [0.0]

    def on_step(done: int, total: int) -> None:
        now = time.monotonic()
        if done == total or now - last[0] >= POST_EVERY_S:
            last[0] = now
            board.post.remote(key, done, total)

    return on_step


def line(label: str, done: int, total: int, started: float) -> str:
    """`label: done/total (pct%), seconds since started` (time.monotonic)."""
    return f"{label}: {done}/{total} ({100 * done / max(total, 1):.0f}%), {time.monotonic() - started:.0f} s"


def board_lines(board, labels: dict[str, str], started: float) -> list[str]:
    """One `line` per phase in `labels` ({key: label}) that has posted to `board`."""
    steps = ray.get(board.read.remote())
    return [line(label, *steps[key], started) for key, label in labels.items() if key in steps]


def wait(refs: list, describe: Callable[[list], list[str]], every_s: float) -> list:
    """`ray.get(refs)`, logging `describe(ready refs)`'s lines every `every_s` seconds until all are ready."""
    pending = list(refs)
    while pending:
        ready, pending = ray.wait(pending, num_returns=len(pending), timeout=every_s)
        if pending:
            for text in describe([r for r in refs if r not in pending]):
                log.info("  %s", text)
    return ray.get(refs)
