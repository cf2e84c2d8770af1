"""SFT with the LM head on response positions only (`sft_loss(head_only=True)`, what `train_sft`
uses where `head_on_hidden_states` holds) against logits at every position, the demo's SFT (same
data, tokenizer, seed) in one process, the two taking turns.

Prints each run's seconds (wall and this process's CPU time) and probe loss after training, the
share of positions that predict a response token, and the ratio. The losses should agree to
float rounding: both paths compute the same function.

    python benchmarks/sft_head_bench.py [--config demo] [--epochs 8] [--rounds 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=None, help="run config (default: the demo)")
    ap.add_argument("--epochs", type=float, default=None, help="SFT epochs (default: the config's)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)

    from frft_ray.algorithms.sft import IGNORE, sft_batch, train_sft
    from frft_ray.config import load_config
    from frft_ray.models import build_policy, train_tokenizer
    from frft_ray.run_data import prepare_run_data

    torch.set_num_threads(a.threads)
    cfg = load_config(a.config, [f"sft.epochs={a.epochs}"] if a.epochs else [])
    data = prepare_run_data(cfg)
    tok = train_tokenizer(data.tokenizer_corpus(), cfg.models.tiny.vocab_size, cfg.models.max_length)
    b = sft_batch(tok, data.sft_prompts, data.sft_responses, cfg.models.max_length)
    share = (b["labels"][:, 1:] != IGNORE).sum() / b["attention_mask"][:, 1:].sum()
    print(f"threads {a.threads}; SFT {len(data.sft_prompts)} demos x {cfg.sft.epochs} epochs, batch {cfg.sft.batch_size}; "
          f"{share:.0%} of the real positions predict a response token", flush=True)
    res: dict[bool, list[tuple[float, float, float]]] = {False: [], True: []}
    for rnd in range(a.rounds):
        for head_only in (False, True):
            policy = build_policy(cfg.models, tok, cfg.seed)
            c0, t0 = time.process_time(), time.perf_counter()
            m = train_sft(policy, tok, data.sft_prompts, data.sft_responses, cfg.sft, max_length=cfg.models.max_length,
                          seed=cfg.seed, progress=False, head_only=head_only)
            res[head_only].append((time.perf_counter() - t0, time.process_time() - c0, m["loss_end"]))
            print(f"round {rnd} head_only={head_only!s:5}: wall {res[head_only][-1][0]:6.1f} s  cpu "
                  f"{res[head_only][-1][1]:6.1f} s  probe loss {m['loss_end']:.5f}", flush=True)
    wall = [sum(r[0] for r in res[k]) for k in (False, True)]
    cpu = [sum(r[1] for r in res[k]) for k in (False, True)]
    print(f"head only / all positions: wall x{wall[1] / wall[0]:.3f} ({wall[0] / wall[1]:.2f}x faster), "
          f"cpu x{cpu[1] / cpu[0]:.3f}", flush=True)


if __name__ == "__main__":
    main()
