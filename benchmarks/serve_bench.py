"""Our Ray Serve RM endpoint vs an OpenRLHF-style reward server, measured in the same run.

Baseline (what OpenRLHF's remote RM server is): one FastAPI + uvicorn process, one /get_reward
route, no batching across requests; clients send one query per request. Ours: the Serve app of
`serve/` with `@serve.batch`, one replica. Same checkpoint, same scoring function, one torch
thread each, same client (threads with `requests.Session`), same single-query requests.
Two RM sizes: the tiny demo RM and a wider one whose single forward costs >= 5 ms here.

    python benchmarks/serve_bench.py [--requests-per-client 8] [--out results.json]

Prints a markdown table with throughput and p50/p99 latency, and the ratios ours/baseline.
"""

import argparse
import concurrent.futures as cf
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CONCURRENCY = (1, 16, 64)
BASE_PORT, OURS_PORT = 18531, 18532


# ---------------------------------------------------------------- baseline server (subprocess)


def run_baseline_server(ckpt: str, port: int) -> None:
    """An OpenRLHF-style RM server: FastAPI + uvicorn, scores each request's queries on arrival.

    (No `from __future__ import annotations` in this file: FastAPI must see `Request` itself.)
    """
    import torch
    import uvicorn
    from fastapi import FastAPI, Request

    from serve.scorer import load_snapshot, score_pairs

    torch.set_num_threads(1)
    snap = load_snapshot(ckpt, 1)
    app = FastAPI()

    @app.post("/get_reward")
    async def get_reward(request: Request):
        data = await request.json()
        q = data["query"]
        return {"rewards": score_pairs(snap, [""] * len(q), q)}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def start_baseline(ckpt: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, __file__, "--baseline-server", ckpt, str(BASE_PORT)], cwd=ROOT)
    try:
        wait_up(f"http://127.0.0.1:{BASE_PORT}/get_reward", proc)
    except BaseException:
        proc.kill()
        raise
    return proc


def wait_up(url: str, proc=None, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"baseline server exited with {proc.returncode}")
        try:
            if requests.post(url, json={"query": ["warm up"]}, timeout=5).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url} not up after {timeout_s} s")


# ---------------------------------------------------------------- models


def build_models(root: Path) -> dict[str, str]:
    from frft_ray.config import ModelsConfig, TinyModelConfig
    from frft_ray.models import build_reward_model, save_checkpoint, train_tokenizer

    tok = train_tokenizer(texts(2000), 2048, 256)
    sizes = {
        "tiny (2x128)": ModelsConfig(),
        "wider (4x256)": ModelsConfig(tiny=TinyModelConfig(n_layer=4, n_embd=256, n_head=4)),
    }
    out = {}
    for v, (name, mcfg) in enumerate(sizes.items(), start=1):
        rm = build_reward_model(mcfg, tok)
        out[name] = str(save_checkpoint(root / f"rm{v}", rm, tok, None, {"version": v}))
    return out


def texts(n: int) -> list[str]:
    topics = ["cats", "the weather", "python lists", "a recipe for soup", "the moon", "taxes", "chess openings"]
    return [
        f"Human: Could you tell me something useful about {topics[i % 7]}, please? I asked {i} times.\n\n"
        f"Assistant: Sure. Here is what I know about {topics[(i * 3) % 7]}: it is {i % 13} parts "
        f"interesting and {i % 5} parts surprising, and people often ask about it."
        for i in range(n)
    ]


def forward_ms(ckpt: str, query: str, reps: int = 30) -> float:
    import torch

    from serve.scorer import load_snapshot, score_pairs

    torch.set_num_threads(1)
    snap = load_snapshot(ckpt, 1)
    score_pairs(snap, [""], [query])
    t = time.perf_counter()
    for _ in range(reps):
        score_pairs(snap, [""], [query])
    return (time.perf_counter() - t) / reps * 1000


# ---------------------------------------------------------------- load generator


def load(url: str, concurrency: int, per_client: int, batch: int = 1) -> dict:
    """`concurrency` threads each send `per_client` POSTs of `batch` queries; latencies in ms."""
    qs = texts(64)

    def client(k: int) -> tuple[list[float], int]:
        s, lat, errors = requests.Session(), [], 0
        for j in range(per_client):
            body = {"query": [qs[(k * 7 + j + b) % len(qs)] for b in range(batch)]}
            t = time.perf_counter()
            try:
                r = s.post(url, json=body, timeout=120)
                errors += not r.ok
            except requests.RequestException:
                errors += 1
            lat.append((time.perf_counter() - t) * 1000)
        return lat, errors

    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(client, range(concurrency)))
    wall = time.perf_counter() - t0
    lat = sorted(x for r, _ in results for x in r)
    q = statistics.quantiles(lat, n=100, method="inclusive")
    return {
        "req_s": len(lat) / wall,
        "items_s": len(lat) * batch / wall,
        "p50_ms": q[49],
        "p99_ms": q[98],
        "errors": sum(e for _, e in results),
        "requests": len(lat),
    }


def measure(url: str, per_client: int, batch: int = 1, levels=CONCURRENCY) -> dict[int, dict]:
    load(url, 4, 5, batch)  # warm up
    return {c: load(url, c, max(per_client, 200 // (c * 4)) if c == 1 else per_client, batch) for c in levels}


# ---------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests-per-client", type=int, default=8, help="POSTs per client thread (c=1 sends >= 50)")
    ap.add_argument("--out", help="also write the results as JSON here")
    ap.add_argument("--baseline-server", nargs=2, metavar=("CKPT", "PORT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.baseline_server:
        run_baseline_server(args.baseline_server[0], int(args.baseline_server[1]))
        return 0

    os.environ.setdefault("RAY_SERVE_QUEUE_LENGTH_RESPONSE_DEADLINE_S", "1.0")
    import ray
    from ray import serve

    from frft_ray.config import RolePlacement, ServeConfig
    from serve import launch

    tmp = Path(tempfile.mkdtemp(prefix="frft_serve_bench_"))
    ckpts = build_models(tmp)
    sample = texts(1)[0]
    fwd = {name: forward_ms(path, sample) for name, path in ckpts.items()}
    print("single forward, 1 thread: " + ", ".join(f"{n}: {ms:.1f} ms" for n, ms in fwd.items()), flush=True)

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             object_store_memory=200 * 2**20, _temp_dir="/tmp/frft_bench")
    names = list(ckpts)
    cfg = ServeConfig(port=OURS_PORT, max_batch_size=32, batch_wait_timeout_s=0.005, max_ongoing_requests=128)
    ours_url = launch.start_server(cfg, ckpts[names[0]], placement=RolePlacement(num_cpus=1))
    rows = []
    try:
        for v, name in enumerate(names, start=1):
            if v > 1:  # the endpoint hot-swaps to the next size; no restart
                launch.publish_rm(ckpts[name], version=v)
                launch.wait_for_version(ours_url, v)
            base = start_baseline(ckpts[name])
            try:
                b = measure(f"http://127.0.0.1:{BASE_PORT}/get_reward", args.requests_per_client)
            finally:
                base.terminate()
                base.wait(30)
            o = measure(f"{ours_url}/get_reward", args.requests_per_client)
            ob = measure(f"{ours_url}/get_reward", max(2, args.requests_per_client // 4), batch=16, levels=(16,))
            for c in CONCURRENCY:
                rows.append({"rm": name, "forward_ms": fwd[name], "concurrency": c, "baseline": b[c], "ours": o[c]})
            rows.append({"rm": name, "forward_ms": fwd[name], "concurrency": 16, "batch": 16, "ours": ob[16]})
    finally:
        serve.shutdown()
        ray.shutdown()

    print("\n| RM (1-seq forward) | clients | baseline req/s | ours req/s | ratio | baseline p50 / p99 ms | ours p50 / p99 ms | errors |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        o = r["ours"]
        label = f"{r['rm']} ({r['forward_ms']:.1f} ms)"
        if "batch" in r:
            print(f"| {label} | {r['concurrency']} x 16 queries/request | - | {o['items_s']:.0f} queries/s | - | - "
                  f"| {o['p50_ms']:.0f} / {o['p99_ms']:.0f} | {o['errors']} |")
            continue
        b = r["baseline"]
        print(f"| {label} | {r['concurrency']} | {b['req_s']:.0f} | {o['req_s']:.0f} | {o['req_s'] / b['req_s']:.2f}x "
              f"| {b['p50_ms']:.0f} / {b['p99_ms']:.0f} | {o['p50_ms']:.0f} / {o['p99_ms']:.0f} | {b['errors']} / {o['errors']} |")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
