"""The sweep's report: docs/results.md (tables) and PNGs under docs/img/, from the cells' summary.json.

Every number is over seeds: a group is the cells that differ only by the `seed` axis, and each table
cell shows mean +- half of the 95% interval over those seeds (Student t, `evaluation.mean_ci`), with
n the number of finished seeds. A win rate is first taken per seed on that seed's held-out prompts
(summary.json's `win_rate`), then averaged over seeds the same way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from frft_ray.evaluation import mean_ci
from frft_ray.summary import PEAK_WINDOW, WIN_ORDER, peak_gold
from frft_ray.sweep import CELL_FILE, SEED_AXIS, SUMMARY_FILE, Grid, finished_dir

ARM_ORDER = ("sft", *WIN_ORDER)


@dataclass
class Finished:
    """One finished cell: its group labels, summary and what the runner recorded (cell.json)."""

    group: tuple[tuple[str, str], ...]
    summary: dict
    cell: dict
    seed: str = ""  # the cell's label on the seed axis


def collect(grid: Grid, out: Path, archive: Path | None = None) -> list[Finished]:
    """The finished cells of `grid`: each one's summary from its run folder under `out/<grid.name>/`,
    else from its copy under `archive/<grid.name>/`."""
    found = []
    for c in grid.cells:
        d = finished_dir(grid, c, out, archive)
        if d is not None:
            meta = json.loads((d / CELL_FILE).read_text()) if (d / CELL_FILE).exists() else {}
            found.append(Finished(c.group, json.loads((d / SUMMARY_FILE).read_text()), meta,
                                  c.labels.get(SEED_AXIS, "")))
    return found


def ci_text(values: list[float], digits: int = 3) -> str:
    """'mean ± half-width (n=k)' over seeds; a single value has no interval."""
    vals = [v for v in values if v is not None]
    if not vals:
        return "–"
    ci = mean_ci(vals, small_sample=True)
    if ci["n"] == 1:
        return f"{ci['mean']:.{digits}f} (n=1)"
    half = (ci["ci95"][1] - ci["ci95"][0]) / 2
    return f"{ci['mean']:.{digits}f} ± {half:.{digits}f} (n={ci['n']})"


def _groups(cells: list[Finished]) -> dict:
    groups: dict = {}
    for c in cells:
        groups.setdefault(c.group, []).append(c)
    return groups


def _group_name(group) -> str:
    return ", ".join(f"{a}={v}" for a, v in group) or "(all)"


def _arms(cells: list[Finished]) -> list[str]:
    present = {a for c in cells for a in c.summary["gold_reward"]}
    return [a for a in ARM_ORDER if a in present]


def _records(s: dict, arm: str):
    r = s["rm_records"].get(arm)
    return sum(r) if isinstance(r, list) else r


def _acc_per_refit(s: dict, arm: str, key: str) -> list:
    acc = s["rm_accuracy"].get(arm) or []
    return [a.get(key) for a in acc] if isinstance(acc, list) else [acc.get(key)]


def grid_section(grid: Grid, cells: list[Finished], img_dir: Path, img_rel: str) -> str:
    """The markdown section of one grid: four tables and four plots."""
    from frft_ray.sweep_plots import write_plots

    lines = [f"## Grid `{grid.name}`", "",
             f"Base config `{grid.base}`; {len(grid.cells)} cells, {len(cells)} finished; axes: "
             + ", ".join(f"{a} ({len(v)})" for a, v in grid.axes.items()) + ".", ""]
    if not cells:
        return "\n".join(lines + ["No cell has finished yet.", ""])
    groups = _groups(cells)
    judge = cells[0].summary["judge"]
    lines += [f"### Mean {judge} reward on held-out prompts, over seeds", "",
              f"| group | arm | mean reward | peak gold ({PEAK_WINDOW} PPO batches) | KL at the peak | RM records (all refits) |",
              "|---|---|---|---|---|---|"]
    for g, cs in groups.items():
        for arm in _arms(cs):
            peaks = [peak_gold(c.summary.get("curves", {})).get(arm) for c in cs]  # from the curves: one definition
            lines.append(f"| {_group_name(g)} | {arm} | {ci_text([c.summary['gold_reward'].get(arm) for c in cs])} | "
                         f"{ci_text([p and p['gold'] for p in peaks])} | {ci_text([p and p['kl'] for p in peaks])} | "
                         f"{_records_text([_records(c.summary, arm) for c in cs]) if arm != 'sft' else '–'} |")
    lines += ["", "### Win rates (per seed on its held-out prompts; mean over seeds)", "",
              "| group | pair | win rate |", "|---|---|---|"]
    for g, cs in groups.items():
        keys = [k for k in cs[0].summary["win_rate"]]
        for k in keys:
            lines.append(f"| {_group_name(g)} | {k} | "
                         f"{ci_text([c.summary['win_rate'][k]['estimate'] for c in cs if k in c.summary['win_rate']])} |")
    lines += _paired_lines(groups)
    lines += ["", "### RM accuracy against gold, per refit (vanilla: its one RM)", "",
              "| group | arm | refit | held-out pairs (gold labels) | on-policy pairs |", "|---|---|---|---|---|"]
    for g, cs in groups.items():
        for arm in _arms(cs):
            if arm in ("sft", "oracle"):
                continue
            n = max(len(_acc_per_refit(c.summary, arm, "heldout_gold")) for c in cs)
            for i in range(n):
                hg = [_at(_acc_per_refit(c.summary, arm, "heldout_gold"), i) for c in cs]
                op = [_at(_acc_per_refit(c.summary, arm, "on_policy"), i) for c in cs]
                lines.append(f"| {_group_name(g)} | {arm} | {i + 1 if arm != 'vanilla' else '–'} | "
                             f"{ci_text(hg)} | {ci_text(op)} |")
    lines += ["", "### Wall time per cell (s)", "",
              "| group | cells | as run (SFT + initial RM shared) | standalone (summary's total) |", "|---|---|---|---|"]
    for g, cs in groups.items():
        lines.append(f"| {_group_name(g)} | {len(cs)} | {ci_text([c.cell.get('wall_s') for c in cs], 0)} | "
                     f"{ci_text([c.summary['timing_s']['total'] for c in cs], 0)} |")
    total = sum(c.cell.get("wall_s") or 0 for c in cells)
    lines += ["", f"Sweep wall time, all finished cells as run: {total / 60:.1f} min.", ""]
    for title, name in write_plots(grid.name, cells, img_dir):
        lines += [f"![{title}]({img_rel}/{name})", ""]
    return "\n".join(lines)


def _paired_lines(groups: dict) -> list[str]:
    """Paired differences: for two groups that differ on one axis, an arm's gold reward in the second
    minus in the first, seed by seed (same seed: same data, SFT policy and initial RM), mean ± 95%
    interval over the seeds both have. Far tighter than comparing the two groups' means."""
    rows = []
    names = list(groups)
    for i, ga in enumerate(names):
        for gb in names[i + 1:]:
            differ = [(a, va, vb) for (a, va), (_, vb) in zip(ga, gb) if va != vb]
            if len(differ) != 1:
                continue
            axis, va, vb = differ[0]
            by_seed = [{c.seed: c.summary["gold_reward"] for c in groups[g]} for g in (ga, gb)]
            seeds = [sd for sd in by_seed[0] if sd in by_seed[1]]
            for arm in ARM_ORDER[1:]:
                diffs = [by_seed[1][sd][arm] - by_seed[0][sd][arm] for sd in seeds
                         if arm in by_seed[0][sd] and arm in by_seed[1][sd]]
                if diffs:
                    rest = _group_name(tuple(x for x in ga if x[0] != axis))
                    rows.append(f"| {rest} | {arm} | {axis}: {va} → {vb} | {ci_text(diffs)} |")
    if not rows:
        return []
    return ["", "### Paired differences over seeds (same seed: same data, SFT policy and initial RM)", "",
            "| other axes | arm | change | gold reward after − before |", "|---|---|---|---|", *rows]


def _at(xs: list, i: int):
    return xs[i] if i < len(xs) else None


def _records_text(values: list) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "–"
    lo, hi = min(vals), max(vals)
    return f"{lo}" if lo == hi else f"{int(np.mean(vals))} ({lo}–{hi})"


GRID_HEADING = "## Grid `"


def write_results(sections: list[tuple[Grid, list[Finished]]], md_path: Path, img_dir: Path) -> Path:
    """docs/results.md: one section per grid, with its plots under `img_dir` (linked relative to the page).
    The sections of these grids are written anew; those of other grids already on the page stay as
    they are, in their place (a sweep of one grid updates its own section only), and so does the
    section of a grid none of whose cells is found (its run folders and archive are elsewhere)."""
    import os

    md_path, img_dir = Path(md_path), Path(img_dir)
    md_path.parent.mkdir(parents=True, exist_ok=True)
    img_dir.mkdir(parents=True, exist_ok=True)
    img_rel = os.path.relpath(img_dir, md_path.parent)
    head = ["# Results", "",
            "Written by `frft-ray sweep` (frft_ray/sweep.py) from the cells' summary.json; regenerate with",
            "`make report` or `frft-ray sweep --grid FILE`. Each entry is mean ± half of the 95% interval over",
            "seeds (Student t), n = finished seeds; a win rate counts ties as one half. Peak gold and its KL",
            "come from the PPO rollout batches (KL(policy ‖ SFT) in nats per response): the best mean over",
            f"{PEAK_WINDOW} consecutive batches (`summary.peak_gold`). Sections whose table says \"peak gold during",
            "PPO\" were written before 2026-12-02 and show the single best batch instead, 0.24-0.35 above the",
            f"{PEAK_WINDOW}-batch peak on the first six demo-size curves measured both ways: mostly the batches' noise.", ""]
    kept = _grid_sections(md_path.read_text()) if md_path.exists() else {}
    for g, cells in sections:
        if cells or g.name not in kept:  # a grid with no finished cell here (a clean checkout) keeps its section
            kept[g.name] = grid_section(g, cells, img_dir, img_rel)
    md_path.write_text("\n".join(head + list(kept.values())))
    return md_path


def _grid_sections(md: str) -> dict[str, str]:
    """The page's grid sections by grid name, in page order (each from its heading to the next)."""
    found, name, lines = {}, None, []
    for line in md.split("\n"):
        if line.startswith(GRID_HEADING):
            if name is not None:
                found[name] = "\n".join(lines)
            name, lines = line[len(GRID_HEADING):].split("`", 1)[0], []
        if name is not None:
            lines.append(line)
    if name is not None:
        found[name] = "\n".join(lines)
    return found
