"""Our Ray Serve RM endpoint vs a plain FastAPI + uvicorn reward server, measured in the same run.

Baseline (what OpenRLHF's remote RM server is): one FastAPI + uvicorn process, one /get_reward
route, no batching across requests. Ours: the Serve app of `serve/` (continuous batching), one
replica, `ServeConfig` defaults. Same checkpoint, same `serve/scorer.py` functions, one torch
thread each, same device and dtype (`--precision`, as our replica resolves it with
`frft_ray.devices.serve_dtype`), same client (`--client`, `serve_load.py`: aiohttp coroutines as
OpenRLHF's remote-RM client sends them, by default; or a thread per client, what runs before
2026-12-06 used), same requests: one query per request at 1/16/64/256 concurrent clients (how
OpenRLHF's remote-RM client calls), then 16 queries per request. Each row
runs `--rounds` times with the servers taking turns (this VM's speed drifts by tens of per cent in a
minute); the table has each server's median round, the ratio's median and range, and each server
process's CPU milliseconds per request.

Ingress (`--ingress`): `direct` (the project's default, `frft_ray.env.SERVE_INGRESS_ENV`; clients
call the replica's own port), `proxy` (Serve's HTTP proxy, Ray's default) or `haproxy`. Ray reads
these once per process, so one run measures one mode: run it twice to compare.

    python benchmarks/serve_bench.py --quick                      # < 2 min on a 2-core CPU
    python benchmarks/serve_bench.py --ingress proxy              # before direct ingress
    python benchmarks/serve_bench.py --device cuda --rm-shape gpt2-medium   # a GPU node, offline

Prints, per row: req/s, queries/s, p50/p99 latency of each server, the ratio ours/baseline, each
server's CPU per request, and our batching: requests per forward batch, the share scored inline.
"""

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from serve_load import load, texts  # noqa: E402  (beside this file)

BASE_PORT, OURS_PORT = 18531, 18532
INGRESS_ENV = {  # what each --ingress mode puts in the environment before Ray starts
    "direct": None,  # frft_ray.env.SERVE_INGRESS_ENV, read where it is defined
    "proxy": {"RAY_SERVE_ENABLE_DIRECT_INGRESS": "0", "RAY_SERVE_ENABLE_HA_PROXY": "0"},
    "haproxy": {"RAY_SERVE_ENABLE_HA_PROXY": "1"},
}
# (clients, requests per client, queries per request); --quick sends fewer requests per client
PLAN = [(1, 200, 1), (16, 16, 1), (64, 8, 1), (256, 4, 1), (16, 8, 16)]
QUICK_PLAN = [(1, 40, 1), (16, 3, 1), (64, 2, 1), (256, 1, 1), (16, 2, 16)]
SHAPES = {  # --rm-shape: the RM's GPT-2 trunk (random init, offline)
    "tiny": dict(n_layer=2, n_embd=128, n_head=4),
    "wider": dict(n_layer=4, n_embd=256, n_head=4),
    "gpt2-medium": dict(n_layer=24, n_embd=1024, n_head=16),
}


# ---------------------------------------------------------------- baseline server (subprocess)


def load_for_device(ckpt: str, device: str, precision: str = "auto"):
    """The checkpoint as a scorer snapshot on `device` in the dtype our replica uses for `precision`."""
    import torch

    from frft_ray.devices import serve_dtype
    from serve.scorer import load_snapshot

    torch.set_num_threads(1)
    dev = torch.device(device)
    snap = load_snapshot(ckpt, 1)
    snap.model.to(device=dev, dtype=serve_dtype(precision, dev))
    return snap


def run_baseline_server(ckpt: str, port: int, device: str, precision: str) -> None:
    """An OpenRLHF-style RM server: FastAPI + uvicorn, scores each request's queries on arrival.

    (No `from __future__ import annotations` in this file: FastAPI must see `Request` itself.)
    """
    import uvicorn
    from fastapi import FastAPI, Request

    from serve.scorer import score_pairs

    snap = load_for_device(ckpt, device, precision)
    app = FastAPI()

    @app.post("/get_reward")
    async def get_reward(request: Request):
        data = await request.json()
        q = data["query"]
        return {"rewards": score_pairs(snap, [""] * len(q), q)}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def start_baseline(ckpt: str, device: str, precision: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, __file__, "--baseline-server", ckpt, str(BASE_PORT), device, precision],
                            cwd=ROOT)
    try:
        wait_up(f"http://127.0.0.1:{BASE_PORT}/get_reward", proc)
    except BaseException:
        proc.kill()
        raise
    return proc


def wait_up(url: str, proc=None, timeout_s: float = 180) -> None:
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


def build_model(root: Path, shape: str) -> str:
    from frft_ray.config import ModelsConfig, TinyModelConfig
    from frft_ray.models import build_reward_model, save_checkpoint, train_tokenizer

    tok = train_tokenizer(texts(2000), 2048, 256)
    rm = build_reward_model(ModelsConfig(tiny=TinyModelConfig(**SHAPES[shape])), tok)
    return str(save_checkpoint(root / shape, rm, tok, None, {"version": 1}))


def forward_ms(ckpt: str, device: str, query: str, precision: str, reps: int = 20) -> float:
    import torch

    from serve.scorer import score_pairs

    snap = load_for_device(ckpt, device, precision)
    score_pairs(snap, [""], [query])
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        score_pairs(snap, [""], [query])  # returns floats on the CPU: synchronised
    return (time.perf_counter() - t) / reps * 1000


# ---------------------------------------------------------------- server CPU and batching


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process has used so far."""
    import psutil

    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def replica_pid() -> int | None:
    """Our single replica's process (Ray titles it ServeReplica:<app>:<deployment>); None without
    psutil (a bare GPU node: the CPU column is then left out)."""
    try:
        import psutil
    except ImportError:
        return None
    for p in psutil.process_iter(["cmdline"]):
        if any("ServeReplica:" in part for part in p.info["cmdline"] or []):
            return p.pid
    return None


def load_with_cpu(url: str, pid: int | None, c: int, n: int, b: int, client: str) -> dict:
    """`load`, plus the server process's CPU milliseconds per request (None without its pid)."""
    c0 = cpu_seconds(pid) if pid else None
    r = load(url, c, n, b, client)
    r["cpu_ms"] = (cpu_seconds(pid) - c0) * 1000 / r["requests"] if pid else None
    return r


def batching(url: str) -> dict:
    """Our replica's batching counters (GET /v1/model): batches, requests, inline."""
    return requests.get(url.rsplit("/", 1)[0] + "/v1/model", timeout=30).json()["batching"]


def load_ours(url: str, pid: int | None, c: int, n: int, b: int, client: str) -> dict:
    """`load_with_cpu` on our endpoint, plus the round's mean batch (requests per forward batch) and
    the share of its batches scored inline on the event loop."""
    before = batching(url)
    r = load_with_cpu(url, pid, c, n, b, client)
    d = {k: v - before[k] for k, v in batching(url).items()}
    r["mean_batch"] = d["requests"] / max(d["batches"], 1)
    r["inline_share"] = d["inline"] / max(d["batches"], 1)
    return r


def median_round(rounds: list[dict]) -> dict:
    return sorted(rounds, key=lambda r: r["req_s"])[len(rounds) // 2]


def measure_pair(base: tuple[str, int], ours: tuple[str, int | None], plan, rounds: int,
                 client: str) -> list[tuple[dict, dict]]:
    """Each row `rounds` times, the two servers taking turns (a VM whose speed drifts by tens of
    per cent over a minute then moves both alike); per row, each server's median round by req/s,
    with the ratio's range over rounds."""
    load(base[0], 4, 5, 1, client)  # warm up
    load(ours[0], 4, 5, 1, client)
    out = []
    for c, n, b in plan:
        bs, os_ = [], []
        for _ in range(rounds):
            bs.append(load_with_cpu(base[0], base[1], c, n, b, client))
            os_.append(load_ours(ours[0], ours[1], c, n, b, client))
        ratios = sorted(o["req_s"] / bb["req_s"] for o, bb in zip(os_, bs))
        bm, om = median_round(bs), {**median_round(os_), "ratio_min": ratios[0], "ratio_max": ratios[-1],
                           "ratio_median": ratios[len(ratios) // 2], "rounds": rounds}
        out.append((bm, om))
    return out


# ---------------------------------------------------------------- main


def set_ingress_env(mode: str) -> None:
    """Before Ray starts: Serve's processes read these once."""
    if mode == "direct":
        from frft_ray.env import SERVE_INGRESS_ENV, apply_offline_defaults

        apply_offline_defaults(SERVE_INGRESS_ENV)
    else:
        os.environ.update(INGRESS_ENV[mode])


def print_table(rows: list[dict]) -> None:
    print("\n| RM | clients x queries/request | baseline req/s (queries/s) | ours req/s (queries/s) "
          "| ours/baseline (range over rounds) | baseline p50 / p99 ms | ours p50 / p99 ms "
          "| server CPU ms/request base / ours | ours: requests per batch, inline share | errors base / ours |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        b, o = r["baseline"], r["ours"]
        cpu = " / ".join("-" if x["cpu_ms"] is None else f"{x['cpu_ms']:.2f}" for x in (b, o))
        print(f"| {r['rm']} | {r['clients']} x {r['batch']} | {b['req_s']:.0f} ({b['queries_s']:.0f}) "
              f"| {o['req_s']:.0f} ({o['queries_s']:.0f}) "
              f"| {o['ratio_median']:.2f}x ({o['ratio_min']:.2f}-{o['ratio_max']:.2f}) "
              f"| {b['p50_ms']:.0f} / {b['p99_ms']:.0f} | {o['p50_ms']:.0f} / {o['p99_ms']:.0f} "
              f"| {cpu} | {o['mean_batch']:.1f}, {o['inline_share']:.0%} | {b['errors']} / {o['errors']} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ingress", choices=list(INGRESS_ENV), default="direct",
                    help="how requests reach our replica (default: direct, the project's default)")
    ap.add_argument("--device", default="cpu", help="device of both servers' RM: cpu or cuda (default cpu)")
    ap.add_argument("--rm-shape", nargs="+", choices=list(SHAPES), default=["tiny"],
                    help="RM trunk(s), random init; several are measured in turn, the endpoint hot-swapping")
    ap.add_argument("--quick", action="store_true", help="fewer requests per client, one round (< 2 min on a 2-core CPU)")
    ap.add_argument("--rounds", type=int, help="times each row runs, the servers taking turns (default 3; --quick 1)")
    ap.add_argument("--client", choices=["aiohttp", "threads"],
                    help="load generator: aiohttp coroutines (OpenRLHF's client; the default where aiohttp is "
                         "installed, as it is with ray[default]) or a thread with requests per client")
    ap.add_argument("--batch-wait-s", type=float, help="our serve.batch_wait_timeout_s (default: ServeConfig's)")
    ap.add_argument("--request-timeout-s", type=float, help="our serve.request_timeout_s; 0 for none (default: "
                    "ServeConfig's)")
    ap.add_argument("--out", help="also write the results as JSON here")
    ap.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                    help="both servers' weights, as our replica resolves the run's `precision` (auto: bf16 on a GPU "
                         "and on a CPU with native bf16 matmuls, else fp32)")
    ap.add_argument("--baseline-precision", choices=["auto", "fp32", "bf16"],
                    help="the baseline's weights when they should differ from ours (default: --precision): e.g. "
                         "fp32 where bf16 slows its one-text forwards")
    ap.add_argument("--baseline-server", nargs=4, metavar=("CKPT", "PORT", "DEVICE", "PRECISION"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.baseline_server:
        ckpt, port, device, precision = args.baseline_server
        run_baseline_server(ckpt, int(port), device, precision)
        return 0

    os.environ.setdefault("RAY_SERVE_QUEUE_LENGTH_RESPONSE_DEADLINE_S", "1.0")
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # keep Ray on loopback
    set_ingress_env(args.ingress)
    import ray
    from ray import serve

    from frft_ray.config import RolePlacement, ServeConfig
    from serve import launch

    if args.client is None:
        args.client = "aiohttp" if importlib.util.find_spec("aiohttp") else "threads"
        if args.client == "threads":
            print("aiohttp is not installed: the load generator uses a thread per client (--client threads)")
    plan = QUICK_PLAN if args.quick else PLAN
    rounds = args.rounds or (1 if args.quick else 3)
    tmp = Path(tempfile.mkdtemp(prefix="frft_serve_bench_"))
    ckpts = {shape: build_model(tmp, shape) for shape in args.rm_shape}
    fwd = {shape: forward_ms(path, args.device, texts(1)[0], args.precision) for shape, path in ckpts.items()}
    print(f"single forward, 1 thread, {args.device}, precision {args.precision}: "
          + ", ".join(f"{n}: {ms:.1f} ms" for n, ms in fwd.items()), flush=True)

    gpu = args.device.startswith("cuda")
    ray.init(address="local", num_cpus=max(2, os.cpu_count() or 2), include_dashboard=False, log_to_driver=False,
             object_store_memory=200 * 2**20, _temp_dir="/tmp/frft_bench")
    cfg = ServeConfig(port=OURS_PORT)
    if args.batch_wait_s is not None:
        cfg = cfg.model_copy(update={"batch_wait_timeout_s": args.batch_wait_s})
    if args.request_timeout_s is not None:
        cfg = cfg.model_copy(update={"request_timeout_s": args.request_timeout_s or None})
    stable = launch.start_server(cfg, ckpts[args.rm_shape[0]], precision=args.precision,
                                 placement=RolePlacement(num_cpus=1, num_gpus=1 if gpu else 0))
    ours_url = (launch.replica_urls() or [stable])[0]
    info = requests.get(f"{ours_url}/v1/model", timeout=30).json()
    print(f"ingress {args.ingress}: ours at {ours_url} (stable URL {stable}); replica RM on {info.get('device', 'cpu')}; "
          f"max_batch_size={cfg.max_batch_size}, batch_wait_timeout_s={cfg.batch_wait_timeout_s}", flush=True)
    rows = []
    try:
        for v, shape in enumerate(args.rm_shape, start=1):
            if v > 1:  # the endpoint hot-swaps to the next shape; no restart
                launch.publish_rm(ckpts[shape], version=v)
                launch.wait_for_version(ours_url, v, timeout_s=300)
            base = start_baseline(ckpts[shape], args.device, args.baseline_precision or args.precision)
            try:
                ours_pid = replica_pid()
                pairs = measure_pair((f"http://127.0.0.1:{BASE_PORT}/get_reward", base.pid if ours_pid else None),
                                     (f"{ours_url}/get_reward", ours_pid), plan, rounds, args.client)
            finally:
                base.terminate()
                base.wait(30)
            label = f"{shape} ({fwd[shape]:.1f} ms)"
            rows += [{"rm": label, "clients": c, "batch": bq, "baseline": bb, "ours": oo}
                     for (c, _, bq), (bb, oo) in zip(plan, pairs)]
    finally:
        serve.shutdown()
        ray.shutdown()
    print(f"\ningress {args.ingress}, device {args.device}, precision {args.precision} "
          f"(baseline {args.baseline_precision or args.precision}), {os.cpu_count()} CPUs, {rounds} round(s) per row, "
          f"{args.client} client")
    print_table(rows)
    if args.out:
        meta = {"ingress": args.ingress, "device": args.device, "precision": args.precision, "rounds": rounds,
                "baseline_precision": args.baseline_precision or args.precision, "client": args.client}
        Path(args.out).write_text(json.dumps({**meta, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
