"""The end-of-run summary: summary.json's content, the terminal table and report.png.

Every arm that ran is in it. `win_rate` holds each arm against SFT (`<arm>_vs_sft`) and each pair of
arms (`<a>_vs_<b>`, a before b in WIN_ORDER: frft_vs_vanilla, oracle_vs_frft, frft_vs_random_refit, ...).
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from frft_ray.config import RunConfig
from frft_ray.data.records import LoadReport
from frft_ray.devices import machine
from frft_ray.run_state import RunState

log = logging.getLogger("frft_ray")

WIN_ORDER = ("oracle", "frft", "random_refit", "vanilla")  # a pair's key names the earlier arm first
REWARD_OF = {"vanilla": "initial RM", "frft": "RM refit on filtered pairs", "random_refit": "RM refit on random pairs",
             "oracle": "gold reward"}


def build_summary(cfg: RunConfig, state: RunState, prompts: list[str], judged: dict, wall_s: float,
                  data_report: LoadReport | None = None) -> dict:
    """`data_report`: what the loader kept and skipped (data.on_bad_record: skip counts, never hides)."""
    from frft_ray.evaluation import win_rate

    arms = state.arms
    gold = {name: float(np.mean(j["scores"])) for name, j in judged.items()}
    summary: dict = {
        "judge": "gold" if cfg.data.format == "benchmark" and cfg.eval.judge == "gold" else "rm",
        "eval_prompts": len(prompts),
        "gold_reward": gold,
        "win_rate": {},
        "reward": {arm: REWARD_OF[arm] for arm in arms},  # what each arm's PPO was rewarded by
        "rm_records": {},
        "rm_accuracy": {},
        "rm_score": {},
        "curves": {},  # per arm, per PPO step: KL(pi || SFT) and the batch's mean gold reward (benchmark)
        "timing_s": {k: round(v, 2) for k, v in state.timing.items()} | {"total": round(wall_s, 2)},
        "sft": state.sft,
        "initial_rm": dataclasses.asdict(state.rm0) if state.rm0 else {},
        "base_from": state.base_from,  # SFT + initial RM reused from this cache entry (None: trained by this run)
        "machine": machine(),  # the driver's: CPU model, cores, GPU, library versions
        "config": cfg.model_dump(mode="json"),
    }
    if data_report is not None:
        summary["data"] = dataclasses.asdict(data_report)
    for arm, a in arms.items():
        its = a.iterations
        acc = [{"heldout": r.rm_heldout, "on_policy": r.rm_on_policy,
                "heldout_gold": r.rm_heldout_gold, "heldout_policy_like": r.rm_heldout_policy_like}
               for r in its]
        if arm == "oracle":  # no RM: PPO against the gold reward
            summary["rm_records"][arm] = 0
            summary["rm_accuracy"][arm] = {}
        elif arm == "vanilla":
            summary["rm_records"][arm] = int(its[0].records) if its else 0
            summary["rm_accuracy"][arm] = acc[-1] if acc else {}
        else:
            summary["rm_records"][arm] = [int(r.records) for r in its]
            summary["rm_accuracy"][arm] = acc
            summary.setdefault("selection", {})[arm] = [r.selection for r in its]
            summary.setdefault("score_scale", {})[arm] = [r.score_scale for r in its]
        summary["rm_score"][arm] = [s for r in its for s in r.scores]
        summary["curves"][arm] = {"kl": [k for r in its for k in r.kl], "gold": [g for r in its for g in r.gold]}
    summary["peak_gold"] = peak_gold(summary["curves"])
    if not summary["peak_gold"]:
        summary["curves_note"] = "no gold reward on this data (HH-style): the curves hold KL only"
    if "random_refit" in arms:  # how many pairs its refits drew: frft's count per iteration, or filter.budget
        froms = {(r.selection or {}).get("size_from") for r in arms["random_refit"].iterations}
        summary["random_refit_size_from"] = froms.pop() if len(froms) == 1 else sorted(map(str, froms))
    ranked = [a for a in WIN_ORDER if a in judged]
    for i, a in enumerate(ranked):
        for b in ranked[i + 1:]:
            summary["win_rate"][f"{a}_vs_{b}"] = win_rate(judged[a]["scores"], judged[b]["scores"])
    for arm in arms:
        if arm in judged:
            summary["win_rate"][f"{arm}_vs_sft"] = win_rate(judged[arm]["scores"], judged["sft"]["scores"])
    summary["samples"] = {name: j["responses"][:3] for name, j in judged.items()}
    summary["eval_prompts_sample"] = prompts[:3]
    return summary


PEAK_WINDOW = 5  # PPO batches averaged for the peak: one demo batch's mean gold has a standard error of ~0.2


def peak_gold(curves: dict, window: int = PEAK_WINDOW) -> dict:
    """{arm: {"gold", "kl", "step", "window", "raw"}}: each arm's highest mean gold reward over `window`
    consecutive PPO batches, the mean KL(pi || SFT) over the same batches, the middle batch's step
    (1-based) and `raw`, the highest single batch. The single highest batch of tens is the noise's
    maximum (about two standard errors above the curve), so it is reported beside the peak, not as
    it. Curves shorter than `window` are averaged whole. Arms without a gold curve (HH-style data)
    are left out."""
    out = {}
    for arm, c in curves.items():
        if c["gold"]:
            w = min(window, len(c["gold"]))
            kernel = np.ones(w) / w
            gold, kl = np.convolve(c["gold"], kernel, "valid"), np.convolve(c["kl"], kernel, "valid")
            i = int(np.argmax(gold))
            out[arm] = {"gold": float(gold[i]), "kl": float(kl[i]), "step": i + w // 2 + 1, "window": w,
                        "raw": float(max(c["gold"]))}
    return out


def print_summary(s: dict) -> None:
    judge = s["judge"]
    print(f"\n== frft-ray summary ({s['eval_prompts']} held-out prompts, judge: {judge}) ==")
    print(f"{'policy':<14}{'mean ' + judge + ' reward':>20}{'RM records':>16}{'RM held-out acc':>18}{'RM on-policy acc':>18}")
    for name, g in s["gold_reward"].items():
        recs = s["rm_records"].get(name, "")
        acc = s["rm_accuracy"].get(name, {})
        if isinstance(acc, list):
            acc = acc[-1] if acc else {}
        if isinstance(recs, list):
            recs = "+".join(str(r) for r in recs)
        print(f"{name:<14}{g:>20.3f}{str(recs):>16}{_f(acc.get('heldout')):>18}{_f(acc.get('on_policy')):>18}")
    for key, w in s["win_rate"].items():
        lo, hi = w["ci95"]
        print(f"win rate {key}: {w['estimate']:.3f} (95% CI {lo:.3f}-{hi:.3f})")
    for arm, p in s.get("peak_gold", {}).items():
        print(f"peak gold {arm} (mean of {p.get('window', 1)} PPO batches): {p['gold']:.3f} at KL {p['kl']:.3f} "
              f"(PPO step {p['step']}; highest single batch {p.get('raw', p['gold']):.3f})")
    print("wall time per phase (s): " + ", ".join(f"{k}={v}" for k, v in s["timing_s"].items()))


def _f(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def write_report(s: dict, path) -> bool:
    """report.png: RM score of policy samples over PPO steps per arm, the judge's reward per policy, and
    gold reward against KL(pi || SFT) per arm (the over-optimisation picture; benchmark data only).
    Where matplotlib cannot be imported (a node set up by hand, docs/gpu.md) the run still ends well:
    a warning, no picture, False; summary.json holds every number it would plot."""
    try:
        import matplotlib
    except ImportError as e:
        log.warning("report.png not written: matplotlib cannot be imported (%s); summary.json holds its numbers", e)
        return False

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b, c) = plt.subplots(1, 3, figsize=(16, 4))
    plot_gold_vs_kl(c, s.get("curves", {}))
    for arm, scores in s["rm_score"].items():
        a.plot(range(1, len(scores) + 1), scores, label=f"{arm} ({s.get('reward', {}).get(arm, 'RM')})")
    a.set(title="reward of policy samples (each arm's own reward)", xlabel="PPO step", ylabel="mean reward")
    a.legend()
    names = list(s["gold_reward"])
    colors = ["grey", "tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple"]
    b.bar(names, [s["gold_reward"][n] for n in names], color=[colors[i % len(colors)] for i in range(len(names))])
    b.set(title=f"held-out prompts: mean {s['judge']} reward", ylabel="reward")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_gold_vs_kl(ax, curves: dict) -> None:
    """One line per arm: the rollout batch's mean gold reward against KL(pi || SFT), step by step."""
    drawn = False
    for arm, c in curves.items():
        if c["gold"]:
            ax.plot(c["kl"], c["gold"], marker=".", label=arm)
            drawn = True
    ax.set(title="gold reward vs KL(policy || SFT)", xlabel="KL (nats per response)", ylabel="mean gold reward")
    if drawn:
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no gold reward on this data", ha="center", va="center", transform=ax.transAxes)
