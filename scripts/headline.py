"""The headline table (README, "Five seeds at demo size") from the archived cells of two grids:
configs/grids/refit_from.yaml (SFT, vanilla, FRFT refit from the current RM, FRFT refit from the
initial RM), configs/grids/baselines.yaml (random_refit, the oracle; the oracle reads no label,
so its adversarial cells stand for both presets) and configs/grids/random_share.yaml (FRFT with
filter.random_share = s, arm `frft_rs<s>`; adversarial only). Every arm of one seed starts from the same SFT
policy and initial RM, so the differences are paired seed by seed.

    python scripts/headline.py [--archive docs/data/sweeps]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from frft_ray.sweep import load_grid
from frft_ray.sweep_report import ci_text

REPO = Path(__file__).resolve().parent.parent
PRESETS = ("adversarial", "uniform")


def per_seed(archive: Path) -> dict:
    """{preset: {seed: {arm: gold, "<a>_vs_<b>": win rate}}}, arms: sft, vanilla, frft, frft_initial,
    random_refit, oracle, frft_rs<share>; win rates as each cell's summary has them (arms of one cell)."""
    out = {p: {} for p in PRESETS}
    for grid_file in ("refit_from", "baselines", "random_share"):
        grid = load_grid(REPO / "configs" / "grids" / f"{grid_file}.yaml")
        for cell in grid.cells:
            path = archive / grid.name / cell.name / "summary.json"
            if not path.exists():
                continue
            summary = json.loads(path.read_text())
            gold = summary["gold_reward"] | {k: w["estimate"] for k, w in summary["win_rate"].items()}
            preset = cell.labels["annotators"].split("+")[0] if "annotators" in cell.labels else "adversarial"
            row = out[preset].setdefault(cell.labels["seed"], {})
            if cell.labels.get("refit_from", "").startswith("initial"):
                gold = {k.replace("frft", "frft_initial"): v for k, v in gold.items() if "frft" in k}
            if "share" in cell.labels:
                gold = {k.replace("frft", f"frft_rs{cell.labels['share']}"): v for k, v in gold.items() if "frft" in k}
            row.update({k: v for k, v in gold.items() if k not in row})  # SFT: the first grid's cell
    for seed, row in out["adversarial"].items():  # the oracle never reads a label: one run per seed
        for key in ("oracle", "oracle_vs_sft"):
            if key in row:
                out["uniform"].setdefault(seed, {})[key] = row[key]
    return out


def table(rows: dict) -> list[str]:
    arms = ("sft", "vanilla", "frft", "frft_initial", "random_refit", "oracle", "frft_rs0.25", "frft_rs0.0")
    pairs = (("frft", "sft"), ("frft", "vanilla"), ("frft", "random_refit"), ("frft_initial", "frft"),
             ("frft_initial", "sft"), ("oracle", "sft"), ("frft_rs0.25", "frft_rs0.0"), ("frft_rs0.0", "frft"))
    lines = ["| preset | " + " | ".join(arms) + " |", "|---" * (len(arms) + 1) + "|"]
    diff_lines = ["| preset | " + " | ".join(f"{a} − {b}" for a, b in pairs) + " |", "|---" * (len(pairs) + 1) + "|"]
    for preset, seeds in rows.items():
        lines.append(f"| {preset} | " + " | ".join(ci_text([r[a] for r in seeds.values() if a in r]) for a in arms) + " |")
        diff_lines.append(f"| {preset} | " + " | ".join(
            ci_text([r[a] - r[b] for r in seeds.values() if a in r and b in r]) for a, b in pairs) + " |")
    wins = ("frft_vs_sft", "frft_vs_vanilla", "frft_initial_vs_sft", "vanilla_vs_sft", "random_refit_vs_sft",
            "oracle_vs_sft", "frft_rs0.25_vs_sft", "frft_rs0.0_vs_sft")
    win_lines = ["| preset | " + " | ".join(wins) + " |", "|---" * (len(wins) + 1) + "|"]
    for preset, seeds in rows.items():
        win_lines.append(f"| {preset} | " + " | ".join(ci_text([r[k] for r in seeds.values() if k in r]) for k in wins) + " |")
    return ["Mean gold reward on the 200 held-out prompts, mean ± half the 95% t-interval over seeds:", "",
            *lines, "", "Paired differences (same seed), mean ± half the 95% t-interval:", "", *diff_lines, "",
            "Win rates (each seed's cell, on its 200 prompts; ties one half), mean over seeds:", "", *win_lines]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--archive", default=str(REPO / "docs" / "data" / "sweeps"))
    rows = per_seed(Path(p.parse_args().archive))
    print("\n".join(table(rows)))
    for preset, seeds in rows.items():
        print(f"\n{preset}, per seed: " + "; ".join(
            f"{s}: " + ", ".join(f"{a} {v:.3f}" for a, v in r.items() if "_vs_" not in a)
            for s, r in sorted(seeds.items())))


if __name__ == "__main__":
    main()
