"""PNG curves of a `benchmarks/scale.py --out` JSON: seconds against the grown quantity, log-log, with each
phase's fitted power law; one figure per quantity (pool pairs N, generations G, policy parameters).

    python benchmarks/scale_plot.py scale.json docs/img
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

TITLES = {"N": "pool pairs N", "G": "generations G (selection)", "params": "policy parameters"}


def plot(res: dict, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for x_name, title in TITLES.items():
        phases = [p for p, f in res["fits"].items() if f["x"] == x_name]
        if not phases:
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        for phase in phases:
            pts = sorted((r["x"], r["seconds"]) for r in res["rows"] if r["phase"] == phase)
            xs, ys = map(np.asarray, zip(*pts))
            b = res["fits"][phase]["exponent"]
            a = np.exp(np.mean(np.log(ys) - b * np.log(xs)))
            line = ax.plot(xs, ys, "o", label=f"{phase} (x^{b:.2f})")[0]
            grid = np.geomspace(xs.min(), xs.max(), 50)
            ax.plot(grid, a * grid**b, "-", color=line.get_color(), alpha=0.5)
        ax.set(xscale="log", yscale="log", xlabel=title, ylabel="seconds",
               title=f"{title}: grid {res['grid']} on {res['device']} ({res['cpus']} CPUs)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        path = out / f"scale-{x_name.lower()}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


if __name__ == "__main__":
    for p in plot(json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2])):
        print(p)
