"""The sweep report's PNGs: gold vs KL per arm, win rate vs alpha, RM on-policy accuracy per refit,
and the share of selected pairs by source. Each reads the finished cells' summary.json content."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from frft_ray.evaluation import mean_ci
from frft_ray.summary import WIN_ORDER


def write_plots(grid_name: str, cells: list, img_dir: Path) -> list[tuple[str, str]]:
    """Write the grid's plots into `img_dir`; returns (title, file name) for each one written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summaries = [c.summary for c in cells]
    written = []
    for title, suffix, draw in (("gold reward vs KL per arm", "gold-vs-kl", _gold_vs_kl),
                                ("win rate vs alpha", "winrate-vs-alpha", _winrate_vs_alpha),
                                ("RM on-policy accuracy per refit", "rm-onpolicy-per-refit", _rm_onpolicy),
                                ("selected-pair share by source", "selection-by-source", _selection_share)):
        fig, ax = plt.subplots(figsize=(6, 4))
        if draw(ax, summaries):
            ax.set_title(f"{grid_name}: {title}")
            fig.tight_layout()
            name = f"{grid_name}-{suffix}.png"
            fig.savefig(Path(img_dir) / name, dpi=100)
            written.append((title, name))
        plt.close(fig)
    return written


def _errorbar(ax, xs, groups: list[list[float]], label: str, **kw) -> None:
    cis = [mean_ci(g, small_sample=True) for g in groups]
    means = [c["mean"] for c in cis]
    err = [[m - c["ci95"][0] for m, c in zip(means, cis)], [c["ci95"][1] - m for m, c in zip(means, cis)]]
    ax.errorbar(xs, means, yerr=err, marker="o", capsize=3, label=label, **kw)


def _finish(ax, drawn: bool, **labels) -> bool:
    ax.set(**labels)
    if drawn:
        ax.legend()
    return drawn


def _gold_vs_kl(ax, summaries: list[dict]) -> bool:
    """Every PPO batch of every cell as a faint point; the line is the mean gold within KL bins."""
    drawn = False
    for arm in WIN_ORDER:
        kl = np.array([k for s in summaries for k in s.get("curves", {}).get(arm, {}).get("kl", [])
                       if s["curves"][arm]["gold"]])
        gold = np.array([g for s in summaries for g in s.get("curves", {}).get(arm, {}).get("gold", [])])
        if len(gold) == 0 or len(kl) != len(gold):
            continue
        pts = ax.scatter(kl, gold, s=6, alpha=0.25)
        edges = np.unique(np.quantile(kl, np.linspace(0, 1, min(10, len(kl)) + 1)))
        idx = np.clip(np.digitize(kl, edges[1:-1]), 0, len(edges) - 2)
        bins = [i for i in range(len(edges) - 1) if (idx == i).any()]
        ax.plot([kl[idx == i].mean() for i in bins], [gold[idx == i].mean() for i in bins],
                color=pts.get_facecolor()[0][:3], label=arm)
        drawn = True
    return _finish(ax, drawn, xlabel="KL(policy || SFT), nats per response", ylabel="mean gold reward of the PPO batch")


def _winrate_vs_alpha(ax, summaries: list[dict]) -> bool:
    """Mean win rate (over every cell at that alpha) of FRFT against each other policy."""
    alphas = sorted({s["config"]["frft"]["alpha"] for s in summaries})
    keys = sorted({k for s in summaries for k in s["win_rate"] if k.startswith("frft_vs_")})
    for k in keys:
        per = [[s["win_rate"][k]["estimate"] for s in summaries if s["config"]["frft"]["alpha"] == a
                and k in s["win_rate"]] for a in alphas]
        xs = [a for a, p in zip(alphas, per) if p]
        _errorbar(ax, xs, [p for p in per if p], k)
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    return _finish(ax, bool(keys), xlabel="alpha (RM refits)", ylabel="win rate (95% CI over cells)", xticks=alphas)


def _rm_onpolicy(ax, summaries: list[dict]) -> bool:
    drawn = False
    for arm in ("frft", "random_refit"):
        per_cell = [[a.get("on_policy") for a in s["rm_accuracy"].get(arm, [])] for s in summaries]
        n = max((len(p) for p in per_cell), default=0)
        cols = [[p[i] for p in per_cell if i < len(p) and p[i] is not None] for i in range(n)]
        xs = [i + 1 for i, c in enumerate(cols) if c]
        if xs:
            _errorbar(ax, xs, [c for c in cols if c], arm)
            drawn = True
    vanilla = [s["rm_accuracy"]["vanilla"].get("on_policy") for s in summaries
               if isinstance(s["rm_accuracy"].get("vanilla"), dict) and s["rm_accuracy"]["vanilla"].get("on_policy")
               is not None]
    if vanilla:
        ax.axhline(float(np.mean(vanilla)), color="grey", ls="--", label="vanilla (initial RM, last iteration)")
        drawn = True
    return _finish(ax, drawn, xlabel="refit", ylabel="RM accuracy on the policy's own pairs (gold)")


def _selection_share(ax, summaries: list[dict]) -> bool:
    """Of all pairs each refit arm selected (every refit, every cell), the share from each pool source."""
    totals: dict[str, dict[str, float]] = {}
    for s in summaries:
        for arm, sels in s.get("selection", {}).items():
            for sel in sels:
                for src, n in (sel or {}).get("source_mix", {}).items():
                    totals.setdefault(arm, {}).setdefault(src, 0.0)
                    totals[arm][src] += n
    if not totals:
        return False
    arms = [a for a in WIN_ORDER if a in totals]
    sources = sorted({src for t in totals.values() for src in t})
    bottom = np.zeros(len(arms))
    for src in sources:
        share = np.array([totals[a].get(src, 0.0) / max(1.0, sum(totals[a].values())) for a in arms])
        ax.bar(arms, share, bottom=bottom, label=src)
        bottom += share
    ax.set(ylabel="share of selected pairs", ylim=(0, 1))
    ax.legend(fontsize=7)
    return True
