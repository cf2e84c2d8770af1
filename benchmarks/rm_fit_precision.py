"""RM fit throughput and peak memory by precision: fp32 (the baseline) vs bf16 autocast vs bf16 +
gradient checkpointing, measured in one process on the same model and pairs.

    python benchmarks/rm_fit_precision.py                      # GPT-2-medium shape on CUDA, batch 32 x 512 tokens
    python benchmarks/rm_fit_precision.py --shape tiny --steps 3   # a quick look on the CPU

The loop is the project's own (`frft_ray.algorithms.bt.fit_reward_model`), the model a random-init
GPT-2 sequence classifier (medium: 24 x 1024, vocab 50,257), every sequence `--length` tokens.
Prints pairs/s, peak GPU memory and the ratio to fp32 for each mode.

Measured on one H200 (2026-11-27, torch 2.11+cu130, transformers 5.24; default arguments, --steps 6):
    fp32        19.8 pairs/s  peak 97.6 GiB  x1.00
    bf16        66.1 pairs/s  peak 74.5 GiB  x3.35
    bf16+ckpt   58.5 pairs/s  peak 11.0 GiB  x2.96
(fp32 matmuls here run without TF32, torch's default.)
"""

from __future__ import annotations

import argparse
import random
import time

import torch

SHAPES = {"medium": dict(n_layer=24, n_embd=1024, n_head=16, vocab=50257), "tiny": dict(n_layer=2, n_embd=128, n_head=4,
                                                                                        vocab=2048)}
MODES = {"fp32": ("fp32", False), "bf16": ("bf16", False), "bf16+ckpt": ("bf16", True)}


def pairs_and_tokenizer(n: int, length: int, seed: int = 0):
    from frft_ray.data.records import PreferencePair
    from frft_ray.models import train_tokenizer

    rng = random.Random(seed)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 8))) for _ in range(600)]

    def text(k: int) -> str:
        return " ".join(rng.choice(words) for _ in range(k))

    pairs = [PreferencePair(f"b{i}", text(length), " " + text(length // 3), " " + text(length // 3), "bench")
             for i in range(n)]
    tok = train_tokenizer([p.prompt for p in pairs[:64]], vocab_size=2048, model_max_length=length)
    return pairs, tok


def build(shape: dict, tok, length: int, device: torch.device):
    from transformers import GPT2Config, GPT2ForSequenceClassification

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=shape["vocab"], n_positions=max(length, 1024), n_layer=shape["n_layer"],
                     n_embd=shape["n_embd"], n_head=shape["n_head"], num_labels=1, pad_token_id=tok.pad_token_id,
                     eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id)
    return GPT2ForSequenceClassification(cfg).to(device)


def main(argv: list[str] | None = None) -> None:
    from frft_ray.algorithms.bt import fit_reward_model
    from frft_ray.config import RewardConfig
    from frft_ray.devices import compute_dtype

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=SHAPES, default="medium")
    ap.add_argument("--batch", type=int, default=32, help="pairs per step")
    ap.add_argument("--length", type=int, default=512, help="tokens per sequence")
    ap.add_argument("--steps", type=int, default=8, help="timed steps per mode (after 2 warm-up steps)")
    ap.add_argument("--modes", default=",".join(MODES))
    args = ap.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    pairs, tok = pairs_and_tokenizer(args.batch * args.steps, args.length)
    print(f"device {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}, shape {args.shape}, "
          f"batch {args.batch} pairs x {args.length} tokens, {args.steps} timed steps")
    base = None
    for name in args.modes.split(","):
        precision, ckpt = MODES[name]
        dtype = compute_dtype(precision, device)
        rcfg = RewardConfig(batch_size=args.batch, gradient_checkpointing=ckpt)
        model = build(SHAPES[args.shape], tok, args.length, device)
        kw = dict(lr=1e-5, max_length=args.length, progress=False, dtype=dtype)
        fit_reward_model(model, tok, pairs[: 2 * args.batch], None, rcfg, epochs=1, **kw)  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        out = fit_reward_model(model, tok, pairs, None, rcfg, epochs=1, **kw)
        if device.type == "cuda":
            torch.cuda.synchronize()
        rate = len(pairs) / (time.perf_counter() - t0)
        peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
        base = base or rate
        print(f"{name:10s} {out['device']:12s} {rate:7.1f} pairs/s  peak {peak:6.1f} GiB  "
              f"x{rate / base:.2f} vs {args.modes.split(',')[0]}  final loss {out['records'][-1]['loss']:.3f}", flush=True)
        del model, out
        if device.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
