"""The experiment runner: a grid of whole runs, each a folder, with SFT and the initial RM shared.

A grid file (YAML) names a base config, overrides for every cell, and axes; each axis lists values,
and a value is one `--set` override or a list of them. Cells are the product of the axes:

    name: ablation                 # optional; default: the file's stem
    base: sweep                    # a config file or packaged name, as `--config`
    set: ["frft.arms=[vanilla, frft]"]
    axes:
      seed: [[seed=0, data.benchmark.seed=0], [seed=1, data.benchmark.seed=1]]
      alpha: [frft.alpha=1, frft.alpha=3]

An axis named `seed` is what the report averages over (mean and 95% CI over seeds); every other
axis labels a group. A cell is `OUT/<grid>/<axis>-<label>__...`, a normal run folder:
- a cell whose `summary.json` exists is skipped (a finished run); one with a `latest` resumes;
- a finished cell's summary.json and cell.json are copied to `ARCHIVE/<grid>/<cell>/` (the CLI's
  `--archive`, docs/data/sweeps: committed, ~15 kB a cell). A cell found there counts as finished
  even when its run folder is gone, so the report regenerates from a clean checkout and
  `make report` there runs only the cells nobody has run;
- SFT and the initial RM depend only on `base_key(cfg)` (seed, data, models, sft, the initial RM's
  settings, precision). The first cell with a key trains them and copies `ckpt/sft` and `ckpt/rm-v0`
  to `OUT/base-cache/<key>/`; later cells link them into their folder and start as a resume after
  the initial RM (so their summary's wall time still counts the base, as a standalone run would).
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from frft_ray.base_cache import base_key, save_to_cache, seed_from_cache
from frft_ray.config import ConfigError, RunConfig, load_config
from frft_ray.config_loading import read_yaml_mapping
from frft_ray.run_state import LATEST, atomic_write_text, write_json

log = logging.getLogger("frft_ray")

SEED_AXIS = "seed"
SUMMARY_FILE = "summary.json"
CELL_FILE = "cell.json"  # what the runner knows of a cell: its axes, overrides, base reuse, wall time


@dataclass
class Cell:
    name: str  # the folder name: "<axis>-<label>" per axis, joined by "__"
    labels: dict[str, str]  # axis -> the value's label
    overrides: list[str]  # the grid's `set` then each axis value's overrides, in axis order

    @property
    def group(self) -> tuple[tuple[str, str], ...]:
        """The cell's labels on every axis but the seed: cells of one group differ only by seed."""
        return tuple((a, v) for a, v in self.labels.items() if a != SEED_AXIS)


@dataclass
class Grid:
    name: str
    base: str
    cells: list[Cell]
    axes: dict[str, list[str]] = field(default_factory=dict)  # axis -> the labels of its values

    def config(self, cell: Cell) -> RunConfig:
        return load_config(self.base, cell.overrides)


def load_grid(path: str | Path) -> Grid:
    """Read and check a grid file; every cell's config is loaded here, so a bad override fails
    before anything runs, naming the cell and the key."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"grid file {path} does not exist")
    raw = read_yaml_mapping(path, "grid keys (name, base, set, axes)")
    unknown = set(raw) - {"name", "base", "set", "axes"}
    if unknown:
        raise ConfigError(f"{path}: unknown grid key(s) {sorted(unknown)}; a grid has name, base, set, axes")
    if not isinstance(raw.get("base"), str):
        raise ConfigError(f"{path}: `base` must name a config file or packaged config (e.g. base: sweep)")
    common = _as_overrides(raw.get("set", []), f"{path}: set")
    axes_raw = raw.get("axes") or {}
    if not isinstance(axes_raw, dict) or not all(isinstance(v, list) and v for v in axes_raw.values()):
        raise ConfigError(f"{path}: `axes` must map each axis name to a non-empty list of values")
    axes = {a: [_as_overrides(v, f"{path}: axes.{a}[{i}]") for i, v in enumerate(vals)] for a, vals in axes_raw.items()}
    labels = {a: [_label(v) for v in vals] for a, vals in axes.items()}
    for a, ls in labels.items():
        if len(set(ls)) != len(ls):
            raise ConfigError(f"{path}: axes.{a} has two values with the same label: {ls}")
    cells = []
    for combo in itertools.product(*[range(len(v)) for v in axes.values()]):
        lab = {a: labels[a][i] for a, i in zip(axes, combo)}
        overrides = common + [o for a, i in zip(axes, combo) for o in axes[a][i]]
        name = "__".join(f"{a}-{v}" for a, v in lab.items()) or "base"
        cells.append(Cell(name=name, labels=lab, overrides=overrides))
    grid = Grid(name=str(raw.get("name") or path.stem), base=raw["base"], cells=cells, axes=labels)
    for cell in cells:
        try:
            grid.config(cell)
        except ConfigError as e:
            raise ConfigError(f"{path}: cell {cell.name}: {e}") from None
    return grid


def _as_overrides(value, where: str) -> list[str]:
    vals = [value] if isinstance(value, str) else value
    if not isinstance(vals, list) or not all(isinstance(v, str) and "=" in v for v in vals):
        raise ConfigError(f"{where}: expected a KEY=VALUE override or a list of them, got {value!r}")
    return list(vals)


def _label(overrides: list[str]) -> str:
    """A value's label: the right-hand sides of its overrides, made safe for a folder name."""
    text = "+".join(o.split("=", 1)[1] for o in overrides)
    return re.sub(r"[^A-Za-z0-9.+_-]+", "", text.replace(", ", "+").replace(",", "+")) or "x"


# ---------------------------------------------------------------- running


@dataclass
class CellResult:
    cell: Cell
    dir: Path
    status: str  # "ran", or "skipped" (finished before)
    base: str = ""  # SFT + initial RM: "trained" here, "cached" (another cell's), "resumed" (this cell's, earlier)
    wall_s: float = 0.0


def finished_dir(grid: Grid, cell: Cell, out: Path, archive: Path | None) -> Path | None:
    """Where the cell's finished summary lies: its run folder under `out`, else its copy in
    `archive`; None when it has not finished."""
    for root in (Path(out), archive):
        if root is not None and (root / grid.name / cell.name / SUMMARY_FILE).exists():
            return root / grid.name / cell.name
    return None


def check_same_settings(grid: Grid, cell: Cell, done: Path) -> None:
    """A finished cell counts only if the grid still asks for what it ran: its base config (recorded
    since grid_base was) and its overrides, from its cell.json. A grid edited since (same name, same
    cell names, other settings) is a ConfigError, not the old results under the new settings."""
    f = done / CELL_FILE
    if not f.exists():
        return
    ran = json.loads(f.read_text())
    was = {"base": ran.get("grid_base", grid.base), "overrides": ran.get("overrides", cell.overrides)}
    now = {"base": grid.base, "overrides": cell.overrides}
    if was != now:
        changed = "; ".join(f"{k}: {was[k]} then, {now[k]} now" for k in was if was[k] != now[k])
        raise ConfigError(f"sweep {grid.name}: cell {cell.name} finished in {done} with other settings ({changed}): "
                          "give the edited grid another name or --out (and --archive), or delete that cell to run it "
                          "again")


def archive_cell(cell_dir: Path, archive: Path, grid: Grid, cell: Cell) -> None:
    """Copy a finished cell's summary.json and cell.json to `archive/<grid>/<cell>/`."""
    dest = archive / grid.name / cell.name
    dest.mkdir(parents=True, exist_ok=True)
    for name in (SUMMARY_FILE, CELL_FILE):
        if (cell_dir / name).exists():
            atomic_write_text(dest / name, (cell_dir / name).read_text())


def run_grid(grid: Grid, out: Path, archive: Path | None = None) -> list[CellResult]:
    """Run every cell of `grid` under `out/<grid.name>/`, in order, skipping finished ones (in `out`
    or in `archive`); each finished cell's summary is copied to `archive`."""
    import ray

    from frft_ray import driver, phases

    results, started = [], False
    try:
        for i, cell in enumerate(grid.cells, 1):
            cfg = grid.config(cell)
            cfg.resources.base_cache_dir = None  # the sweep's own cache (OUT/base-cache) serves its cells
            cell_dir = (Path(out) / grid.name / cell.name).resolve()
            done = finished_dir(grid, cell, out, archive)
            if done is not None:
                check_same_settings(grid, cell, done)
                here = done.resolve() == cell_dir  # its run folder is here, not only its archived summary
                log.info("sweep %s [%d/%d] %s: finished before%s, skipped", grid.name, i, len(grid.cells),
                         cell.name, "" if here else f" (its summary in {archive})")
                if here and archive is not None:
                    archive_cell(cell_dir, archive, grid, cell)
                results.append(CellResult(cell, done, "skipped"))
                continue
            cache = Path(out).resolve() / "base-cache" / base_key(cfg)
            resume = (cell_dir / LATEST).exists()  # a cell stopped part way (a crash, Ctrl-C) continues
            base = "resumed" if resume else "cached" if cache.exists() else "trained"
            if base == "cached":
                seed_from_cache(cell_dir, cache)
            log.info("sweep %s [%d/%d] %s: running (SFT + initial RM %s)", grid.name, i, len(grid.cells),
                     cell.name, base)
            started = phases.ray_init(cfg) or started  # one Ray for the whole sweep
            t0 = time.time()
            summary = driver.run(cfg, cell_dir, resume=base != "trained")
            wall = time.time() - t0
            if summary is None:
                raise RuntimeError(f"cell {cell.name} stopped before its summary (frft.stop_after?); "
                                   "a sweep cell must run to the end")
            save_to_cache(cell_dir, cache)
            write_json(cell_dir / CELL_FILE, {"name": cell.name, "labels": cell.labels, "overrides": cell.overrides,
                                              "grid_base": grid.base, "base": base, "base_key": cache.name,
                                              "wall_s": round(wall, 2)})
            if archive is not None:
                archive_cell(cell_dir, archive, grid, cell)
            results.append(CellResult(cell, cell_dir, "ran", base, wall))
    finally:
        if started:
            ray.shutdown()
    return results
