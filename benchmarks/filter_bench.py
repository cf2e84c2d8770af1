"""FRFT selection vs a plain torch.mm of the same [N, D] x [D, G] shape, measured in the same process.

Selection: `filtering.select_pairs` with strategy `chosen` and the default selection
(`per_generation`, budget 2,000) on random unit vectors, three thresholds:
- `typical`: -1, every generation's nearest pair passes (one share is enough);
- `partial`: the median of the generations' nearest-pair similarities: half the generations pass,
  too few rows come back and the share widens;
- `worst`: 0.8, nothing passes (random 384-d vectors are never that close), so every widening step
  runs. The numpy selection recomputed the whole product at each of its 4 steps.
The pool's embeddings are put on the device once per run (`pool_scan.DevicePool`, timed apart as
`prepare`), as the driver and the embedder actor do. Baseline: `torch.mm(pool, gen.T)` on the same
device. Each figure is the best of `--repeats`, selection and baseline interleaved.

    python benchmarks/filter_bench.py [--n 20000] [--g 2048] [--d 384] [--device cpu|cuda] [--repeats 3]

Run on a code base without `pool_scan` (the numpy selection), it times `select_pairs` on the raw
`PoolEmbeddings`, so the same command gives the before and after figures.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from frft_ray.config import FilterConfig  # noqa: E402
from frft_ray.data.records import PreferencePair  # noqa: E402
from frft_ray.pool_embeddings import PoolEmbeddings  # noqa: E402
from frft_ray.filtering import select_pairs  # noqa: E402


def unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_of(repeats: int, fn, device: torch.device) -> float:
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000, help="pool pairs")
    ap.add_argument("--g", type=int, default=2_048, help="generations")
    ap.add_argument("--d", type=int, default=384, help="embedding dim (MiniLM: 384)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--chunk-size", type=int, default=FilterConfig().chunk_size, help="filter.chunk_size")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    rng = np.random.default_rng(0)
    chosen, gen = unit(rng, args.n, args.d), unit(rng, args.g, args.d)
    emb = PoolEmbeddings(chosen, chosen, chosen)  # strategy `chosen` reads only this side
    pairs = [PreferencePair(f"p{i}", "q", "c", "r", "s") for i in range(args.n)]

    pool_t, gen_t = torch.as_tensor(chosen, device=device), torch.as_tensor(gen, device=device)
    mm = lambda: torch.mm(pool_t, gen_t.T)  # noqa: E731
    mm()  # warm-up (CUDA context, kernels)
    nearest = float(torch.quantile(mm().amax(dim=0).float().cpu(), 0.5))
    try:
        from frft_ray.pool_scan import DevicePool
    except ImportError:  # the numpy selection: the pool is passed as is every time
        pool, prepare, impl = emb, 0.0, "numpy"
    else:
        t0 = time.perf_counter()
        pool = DevicePool(emb, device)
        pool.side("chosen")
        sync(device)
        prepare, impl = time.perf_counter() - t0, f"torch/{device}"
    kw = {"device": device} if impl != "numpy" else {}

    print(f"selection ({impl}) vs torch.mm, N={args.n:,} G={args.g:,} D={args.d}, chunk_size={args.chunk_size}, "
          f"torch threads {torch.get_num_threads()}; prepare (once per run): {prepare:.3f} s")
    print("| case | threshold | selected | selection s | torch.mm s | rate vs torch.mm |")
    print("|---|---|---|---|---|---|")
    for case, threshold in (("typical", -1.0), ("partial", nearest), ("worst", 0.8)):
        cfg = FilterConfig(strategy="chosen", threshold=threshold, chunk_size=args.chunk_size, min_records=0)
        select = lambda: select_pairs(pairs, pool, gen, None, cfg, **kw)  # noqa: E731
        count = select().count  # warm-up, and the result
        times = {"sel": [], "mm": []}
        for _ in range(args.repeats):
            times["sel"].append(best_of(1, select, device))
            times["mm"].append(best_of(1, mm, device))
        sel_s, mm_s = min(times["sel"]), min(times["mm"])
        print(f"| {case} | {threshold:.3f} | {count} | {sel_s:.3f} | {mm_s:.3f} | {mm_s / sel_s:.2f}x |")


if __name__ == "__main__":
    main()
