"""The run's state, typed: what `driver_state.json` holds, what resume and the summary read.

`RunState` -> one `ArmState` per arm -> one `IterationRecord` per finished iteration. Every state
file (`driver_state.json`, `summary.json`, `latest`) is written to a temporary name in the same
folder and renamed over the old one, so a crash mid-write leaves the previous version whole.

Layout of a run folder: `RUN_DIR/latest` names the last complete checkpoint folder (relative to
RUN_DIR); that folder holds `driver_state.json`. `latest` is written last, so resume can trust it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

STATE_FORMAT = 2  # 1: the untyped dict of the first releases (same keys, no "format"); 2: these types
LATEST = "latest"
STATE_FILE = "driver_state.json"


class RunStateError(ValueError):
    """A run folder's state cannot be read by this version (damaged, or written by a newer one)."""


@dataclass
class IterationRecord:
    """One finished iteration of one arm."""

    arm: str
    iteration: int
    path: str  # the iteration's checkpoint folder, relative to the run folder
    rollout_workers: int
    samples: int  # generations from the frozen policy at the start (frft: to filter on; others: to measure the RM)
    records: int = 0  # pairs the RM of this iteration was (re)fit on
    selection: dict | None = None  # filtering.Selection.to_dict() of a refit arm
    rm_version: int = 0
    rm_heldout: float | None = None  # RM accuracy on held-out pairs (their own labels)
    rm_fit_loss: float | None = None  # last-epoch BT loss of this iteration's refit
    rm_on_policy: float | None = None  # RM accuracy on pairs of the policy's own samples (gold-judged)
    rm_heldout_gold: float | None = None  # ... on held-out pairs re-oriented by the gold reward
    rm_heldout_policy_like: float | None = None  # ... on the policy-like ones among them
    score_scale: float = 1.0  # PPO saw this RM's scores times this (ppo.score_scale; 1: its own units)
    score_first: float | None = None  # mean RM score of the first / last PPO batch
    score_last: float | None = None
    scores: list[float] = field(default_factory=list)  # mean RM score of every PPO batch
    kl: list[float] = field(default_factory=list)  # KL(pi || SFT) of every PPO batch (summed over tokens, mean over batch)
    gold: list[float] = field(default_factory=list)  # mean gold reward of every PPO batch (benchmark only; else empty)
    ppo_samples: int = 0
    timing: dict[str, float] = field(default_factory=dict)


@dataclass
class ArmState:
    iterations: list[IterationRecord] = field(default_factory=list)
    done: bool = False

    @property
    def last(self) -> IterationRecord | None:
        return self.iterations[-1] if self.iterations else None


@dataclass
class InitialRM:
    records: int  # pairs the initial RM was fit on
    heldout: float | None  # its held-out accuracy


@dataclass
class Published:
    """The RM version the endpoint serves (serve.enabled), so a resume republishes the same one."""

    path: str
    version: int


@dataclass
class RunState:
    format: int = STATE_FORMAT
    sft_path: str | None = None  # relative to the run folder
    rm0_path: str | None = None
    sft: dict = field(default_factory=dict)  # SFT metrics
    rm0: InitialRM | None = None
    arms: dict[str, ArmState] = field(default_factory=dict)
    timing: dict[str, float] = field(default_factory=dict)  # wall seconds per phase, all arms
    rm_version: int = 0  # the newest RM version made in this run
    published: Published | None = None
    wall_s: float = 0.0  # the run's wall time so far, across resumes
    base_from: str | None = None  # the base cache entry SFT and the initial RM were reused from (frft_ray/base_cache.py)

    @property
    def base_done(self) -> bool:
        """SFT and the initial RM are in the checkpoint."""
        return self.sft_path is not None

    def arm(self, name: str) -> ArmState:
        return self.arms.setdefault(name, ArmState())

    def add_timing(self, totals: dict[str, float]) -> None:
        for k, v in totals.items():
            self.timing[k] = round(self.timing.get(k, 0.0) + v, 3)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, origin: str = "state") -> "RunState":
        fmt = d.get("format", 1)
        if fmt > STATE_FORMAT:
            raise RunStateError(f"{origin} has state format {fmt}; this frft-ray reads formats 1-{STATE_FORMAT}: "
                                "upgrade frft-ray to resume it")
        try:
            d = {**d, "format": STATE_FORMAT}
            arms = {name: ArmState(iterations=[IterationRecord(**r) for r in a.get("iterations", [])],
                                   done=bool(a.get("done", False)))
                    for name, a in d.pop("arms", {}).items()}
            rm0, published = d.pop("rm0", None), d.pop("published", None)
            return cls(**d, arms=arms, rm0=InitialRM(**rm0) if rm0 else None,
                       published=Published(**published) if published else None)
        except TypeError as e:  # an unknown or missing key
            raise RunStateError(f"{origin}: not a run state this frft-ray can read (format {fmt}): {e}") from None


# ---------------------------------------------------------------- files


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to a temporary file beside `path`, flush it to disk, then rename it over `path`."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=float))


def write_latest(run_dir: Path, ckpt_dir: Path, state: RunState) -> None:
    """Write the checkpoint's driver state, then the `latest` pointer last (both atomically)."""
    write_json(ckpt_dir / STATE_FILE, state.to_dict())
    atomic_write_text(run_dir / LATEST, str(Path(ckpt_dir).relative_to(run_dir)) + "\n")


def read_latest(run_dir: Path) -> tuple[Path, RunState] | None:
    """The last complete checkpoint folder and its state, or None for a fresh run."""
    pointer = Path(run_dir) / LATEST
    if not pointer.exists():
        return None
    ckpt = Path(run_dir) / pointer.read_text().strip()
    state_file = ckpt / STATE_FILE
    if not state_file.exists():
        raise FileNotFoundError(f"{pointer} names {ckpt}, which has no {STATE_FILE}: the run folder is damaged")
    try:
        raw = json.loads(state_file.read_text())
    except json.JSONDecodeError as e:
        raise RunStateError(f"{state_file} is not valid JSON ({e}): the run folder is damaged") from None
    return ckpt, RunState.from_dict(raw, origin=str(state_file))
