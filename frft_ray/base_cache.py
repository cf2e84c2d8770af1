"""SFT + initial RM, trained once and reused: by the cells of a sweep, and by runs with
`resources.base_cache_dir` set (the demo sets it).

SFT and the initial RM depend only on the seed, the data, the models, the `sft` section and the
`reward` settings of the initial fit (`base_key`), not on the RL arms, filter or refits; on one
machine, training them again gives the same checkpoints bit for bit. So a run whose base is in the
cache starts as a run stopped right after its initial RM: the cached `sft` and `rm-v0` folders are
put into its `ckpt/` and `latest` points at `ckpt/rm-v0`, whose state says both are done.

Run caches are keyed by `base_key` and by `code_fingerprint` (the project's own Python sources), so
a change to the code trains the base again. Sweep caches (`OUT/base-cache/`) use `base_key` alone:
a sweep's cells are compared with each other, within one code version.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from functools import lru_cache
from pathlib import Path

from frft_ray.config import RunConfig
from frft_ray.run_state import LATEST, STATE_FILE, atomic_write_text, read_latest, write_latest

log = logging.getLogger("frft_ray")

BASE_PARTS = ("sft", "rm-v0")  # the checkpoint folders SFT and the initial RM leave in ckpt/
BASE_TIMINGS = ("overhead_start", "sft", "rm_fit", "base")  # what the cached run's state timed for them
PACKAGES = ("frft_ray", "actors")  # the code a base depends on (serve/ never trains)


def base_key(cfg: RunConfig) -> str:
    """A hash of every setting SFT and the initial RM depend on (not the RL arms', filter's or refits')."""
    d = cfg.model_dump(mode="json")
    reward = {k: v for k, v in d["reward"].items() if not k.startswith("refit_")}
    deps = {"seed": d["seed"], "data": d["data"], "models": d["models"], "sft": d["sft"], "reward": reward,
            "precision": d.get("precision")}
    return hashlib.sha256(json.dumps(deps, sort_keys=True).encode()).hexdigest()[:16]


@lru_cache(maxsize=1)
def code_fingerprint(root: Path | None = None) -> str:
    """sha256 over the relative path and bytes of every .py file of the project's packages under `root`."""
    root = Path(root) if root else Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for pkg in PACKAGES:
        for f in sorted((root / pkg).rglob("*.py")):
            h.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def run_cache_entry(cfg: RunConfig) -> Path | None:
    """Where a run's base lives in `resources.base_cache_dir` (None: the run does not use one)."""
    root = cfg.resources.base_cache_dir
    return Path(root).expanduser().resolve() / f"{base_key(cfg)}-{code_fingerprint()}" if root else None


def seed_from_cache(run_dir: Path, cache: Path, link: bool = True) -> None:
    """Start a run folder as a run stopped right after its initial RM: the cached SFT policy and RM
    go into its ckpt/ (`link`: as symlinks, for sweep cells; else as hard links, or copies across
    filesystems, so the run folder stands alone), and `latest` points at the RM folder."""
    (run_dir / "ckpt").mkdir(parents=True, exist_ok=True)
    for part in BASE_PARTS:
        dest = run_dir / "ckpt" / part
        if dest.exists():
            continue
        if link:
            dest.symlink_to(cache / part)
        else:
            shutil.copytree(cache / part, dest, copy_function=_link_or_copy)
    atomic_write_text(run_dir / LATEST, "ckpt/rm-v0\n")


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)  # checkpoints are written to new folders, never in place, so a shared inode is safe
    except OSError:
        shutil.copy2(src, dst)


def save_to_cache(run_dir: Path, cache: Path) -> None:
    """Copy a run's SFT policy and initial RM (with the state written beside the RM) into the cache."""
    if cache.exists() or not all((run_dir / "ckpt" / p).is_dir() for p in BASE_PARTS):
        return
    tmp = cache.with_name(cache.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    for part in BASE_PARTS:
        shutil.copytree(run_dir / "ckpt" / part, tmp / part, symlinks=False)
    if not (tmp / "rm-v0" / STATE_FILE).exists():
        shutil.rmtree(tmp, ignore_errors=True)
        raise FileNotFoundError(f"{run_dir}/ckpt/rm-v0 has no {STATE_FILE}; it cannot seed other runs")
    try:
        tmp.rename(cache)
    except OSError:  # another run cached the same base first; theirs is equal
        shutil.rmtree(tmp, ignore_errors=True)


def reuse_base(cfg: RunConfig, run_dir: Path) -> Path | None:
    """For a new run with `resources.base_cache_dir`: when its base is cached, seed `run_dir` with it
    and return the cache entry (else None). The run's state starts at 0 s of wall time, with the
    cached run's base timings left out: this run did not spend them. It says where its base came
    from (`base_from`)."""
    cache = run_cache_entry(cfg)
    if cache is None or not (cache / "rm-v0" / STATE_FILE).exists():
        return None
    seed_from_cache(run_dir, cache, link=False)
    ckpt, state = read_latest(run_dir)
    state.wall_s = 0.0
    state.timing = {k: v for k, v in state.timing.items() if k not in BASE_TIMINGS}
    state.base_from = str(cache)
    write_latest(run_dir, ckpt, state)
    log.info("SFT + initial RM: reused from %s (an earlier run with the same seed, data, models, sft and reward "
             "settings, and the same code); resources.base_cache_dir=null trains them again", cache)
    return cache
