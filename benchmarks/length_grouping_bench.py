"""Length-grouped batches (`sft.length_grouping`, `reward.length_grouping`) against plain shuffled
batches (grouping 1): the demo's SFT and initial RM fit, same data, tokenizer and seeds, in one
process, the two settings taking turns.

For each setting and seed it prints the padded tokens the schedule feeds (exact, from the batches),
the fit's seconds (wall and this process's CPU time; wall drifts with this VM's neighbours) and
its quality: SFT's probe loss after training, the RM's held-out pairwise accuracy and BT loss.
Summaries: means with a 95% t-interval over seeds, and grouped/plain ratios.

    python benchmarks/length_grouping_bench.py [--config demo] [--seeds 0,1,2] [--group 16] [--threads 2]
    python benchmarks/length_grouping_bench.py --quick     # 2 SFT epochs, 4,000 RM pairs, one seed
    python benchmarks/length_grouping_bench.py --parts sft --set sft.epochs=4
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def padded_tokens(tok, batches, rows_of, max_length: int) -> tuple[int, int]:
    """(real, padded) tokens over the schedule's batches; `rows_of(idx)` gives a batch's texts."""
    real = padded = 0
    for *_, idx in batches:
        rows = rows_of(idx)
        lens = [min(max_length, len(ids)) for ids in tok(rows)["input_ids"]]
        real += sum(lens)
        padded += max(lens) * len(lens)
    return real, padded


def ci95(xs: list[float]) -> str:
    """Mean (Student-t 95% interval over seeds), or the value alone for one seed."""
    from frft_ray.evaluation import mean_ci

    m = mean_ci(xs, small_sample=True)
    return f"{m['mean']:.4f}" if len(xs) < 2 else f"{m['mean']:.4f} ({m['ci95'][0]:.4f}-{m['ci95'][1]:.4f})"


def run_sft(cfg, data, tok, group: int, seed: int) -> dict:
    from frft_ray.algorithms.loop import FractionalEpochs
    from frft_ray.algorithms.sft import train_sft
    from frft_ray.models import build_policy

    scfg = cfg.sft.model_copy(update={"length_grouping": group})
    lengths = [len(p) + len(r) for p, r in zip(data.sft_prompts, data.sft_responses)]
    sched = FractionalEpochs(len(lengths), scfg.batch_size, scfg.epochs, seed, lengths=lengths, group=group)
    real, padded = padded_tokens(tok, sched, lambda idx: [data.sft_prompts[j] + data.sft_responses[j] for j in idx],
                                 cfg.models.max_length)
    policy = build_policy(cfg.models, tok, seed)
    c0, t0 = time.process_time(), time.perf_counter()
    m = train_sft(policy, tok, data.sft_prompts, data.sft_responses, scfg, max_length=cfg.models.max_length,
                  seed=seed, progress=False)
    return {"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0, "real": real, "padded": padded,
            "quality": m["loss_end"]}


def run_rm(cfg, pairs, heldout, tok, group: int, seed: int) -> dict:
    from frft_ray.algorithms.bt import fit_reward_model, pair_chars
    from frft_ray.algorithms.loop import FractionalEpochs
    from frft_ray.models import build_reward_model

    rcfg = cfg.reward.model_copy(update={"length_grouping": group})
    sched = FractionalEpochs(len(pairs), rcfg.batch_size, rcfg.init_epochs, seed,
                             lengths=[pair_chars(p) for p in pairs], group=group)

    def rows(idx):
        ps = [pairs[j] for j in idx]
        return [p.prompt + p.chosen for p in ps] + [p.prompt + p.rejected for p in ps]

    real, padded = padded_tokens(tok, sched, rows, cfg.models.max_length)
    rm = build_reward_model(cfg.models, tok, seed)
    c0, t0 = time.process_time(), time.perf_counter()
    m = fit_reward_model(rm, tok, pairs, heldout, rcfg, epochs=rcfg.init_epochs, lr=rcfg.lr,
                         max_length=cfg.models.max_length, seed=seed, progress=False)
    return {"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0, "real": real, "padded": padded,
            "quality": m["eval_accuracy"], "eval_loss": m["eval_loss"]}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=None, help="run config (default: the demo)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--group", type=int, default=16, help="the grouped setting's length_grouping")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="2 SFT epochs, 4,000 RM pairs, seed 0 only")
    ap.add_argument("--pairs", type=int, default=None, help="the first N of the initial RM's pairs (default: all)")
    ap.add_argument("--parts", default="sft,rm")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a config override for both settings, e.g. --set sft.epochs=4")
    a = ap.parse_args(argv)

    from frft_ray.config import load_config
    from frft_ray.models import train_tokenizer
    from frft_ray.phases import initial_rm_pairs
    from frft_ray.run_data import prepare_run_data

    torch.set_num_threads(a.threads)
    seeds = [0] if a.quick else [int(s) for s in a.seeds.split(",")]
    cfg = load_config(a.config, (["sft.epochs=2"] if a.quick else []) + a.set)
    data = prepare_run_data(cfg)
    tok = train_tokenizer(data.tokenizer_corpus(), cfg.models.tiny.vocab_size, cfg.models.max_length)
    pairs = initial_rm_pairs(cfg, data)[: a.pairs or (4000 if a.quick else None)]
    print(f"threads {a.threads}, seeds {seeds}, grouped = length_grouping {a.group}; SFT {len(data.sft_prompts)} "
          f"demos x {cfg.sft.epochs} epochs, RM {len(pairs)} pairs x {cfg.reward.init_epochs} epoch, "
          f"{len(data.heldout)} held out", flush=True)
    parts = {"sft": ("SFT", "probe loss", lambda g, s: run_sft(cfg, data, tok, g, s)),
             "rm": ("RM", "held-out accuracy", lambda g, s: run_rm(cfg, pairs, data.heldout, tok, g, s))}
    for part in a.parts.split(","):
        name, quality, fn = parts[part]
        res: dict[int, list[dict]] = {1: [], a.group: []}
        for seed in seeds:
            for group in (1, a.group):  # taking turns, so a slow spell of the VM hits both
                r = fn(group, seed)
                res[group].append(r)
                print(f"{name} seed {seed} grouping {group:>3}: padded tokens {r['padded']:>9,} "
                      f"({r['real'] / r['padded']:.0%} real)  wall {r['wall']:6.1f} s  cpu {r['cpu']:6.1f} s  "
                      f"{quality} {r['quality']:.4f}", flush=True)
        for group, rs in res.items():
            print(f"{name} grouping {group:>3}: {quality} {ci95([r['quality'] for r in rs])}; "
                  f"wall {statistics.mean(r['wall'] for r in rs):.1f} s, cpu {statistics.mean(r['cpu'] for r in rs):.1f} s")
        plain, grouped = res[1], res[a.group]
        ratio = lambda k: sum(r[k] for r in grouped) / sum(r[k] for r in plain)  # noqa: E731
        print(f"{name} grouped/plain: padded tokens x{ratio('padded'):.3f}, wall x{ratio('wall'):.3f}, "
              f"cpu x{ratio('cpu'):.3f}  (speed-up {1 / ratio('wall'):.2f}x wall)", flush=True)


if __name__ == "__main__":
    main()
