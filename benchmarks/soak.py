"""Soak the RM endpoint: 64 loopback clients for `--seconds`, a hot swap every 10 s, one replica killed midway.

The endpoint is the project's Serve app (`serve/`) on the tiny RM, with two replicas behind its
stable URL (the one `frft-ray run` prints). Every `--swap-every` seconds a new version is published
(two checkpoints, alternating; the version always grows); at half time one replica is killed with
`ray.kill` on its actor handle and Serve starts a new one (`--kill-every S`: one every S seconds).

Client retry policy (what an RM client should do; OpenRLHF's tries 5 times on any error): a connection
error, a timeout, a 5xx or a 408 (the proxy's own timeout, `serve.request_timeout_s`) is retried once
after 0.2 s; another 4xx is never retried. A request counts as `retried` when its retry succeeded
and as a `failure` when the retry failed too.

Each client sends the newest version it has seen as `X-Min-Model-Version` (read-your-version), so
no replica answers it with an older one.

Prints: requests, failures, retried (with why), p50/p99 latency, and the versions each client saw,
checked to be non-decreasing per client.

    python benchmarks/soak.py --seconds 120                    # about 2.5 min with start-up, on a 2-core CPU
    python benchmarks/soak.py --seconds 160 --kill-every 20    # seven kills
"""

import argparse
import collections
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PORT = 18541
APP = "frft_rm_soak"


def build_checkpoints(root: Path) -> list[str]:
    """Two tiny RMs (different seeds) sharing one tokenizer: the versions alternate between them."""
    from frft_ray.config import ModelsConfig
    from frft_ray.models import build_reward_model, save_checkpoint, train_tokenizer

    tok = train_tokenizer([f"question {i} about cats and dogs, answer {i * 7}" for i in range(300)], 512, 256)
    return [str(save_checkpoint(root / f"rm{s}", build_reward_model(ModelsConfig(), tok, seed=s), tok, None,
                                {"version": 0})) for s in (1, 2)]


class Client(threading.Thread):
    """One loopback client: POST /v1/score with one item until the deadline, retrying once."""

    def __init__(self, k: int, url: str, t0: float, seconds: float):
        super().__init__(daemon=True)
        self.k, self.url, self.t0, self.deadline = k, url, t0, t0 + seconds
        self.trouble_at: list[tuple[float, str]] = []  # (seconds after the start, why) of each first try that failed
        self.latencies: list[float] = []
        self.versions: list[int] = []
        self.failures: collections.Counter = collections.Counter()
        self.retried: collections.Counter = collections.Counter()

    def _once(self, session: requests.Session, body: dict) -> tuple[dict | None, str | None]:
        # read-your-version: the newest version this client has seen, so no replica answers older
        headers = {"X-Min-Model-Version": str(self.versions[-1])} if self.versions else {}
        try:
            r = session.post(f"{self.url}/v1/score", json=body, headers=headers, timeout=30)
        except requests.RequestException as e:
            return None, type(e).__name__
        if r.status_code >= 500 or r.status_code == 408:  # 408: the proxy gave up waiting (serve.request_timeout_s)
            return None, f"HTTP {r.status_code}"
        if r.status_code >= 400:
            return None, f"HTTP {r.status_code} (not retried)"
        return r.json(), None

    def run(self) -> None:
        session, i = requests.Session(), 0
        while time.monotonic() < self.deadline:
            i += 1
            body = {"items": [{"prompt": f"\n\nHuman: question {self.k}.{i}?\n\nAssistant:",
                               "response": f" answer {i * 7} about cats"}]}
            t0, sent = time.perf_counter(), time.monotonic() - self.t0
            out, why = self._once(session, body)
            if why is not None:
                self.trouble_at.append((sent, why))
            if why is not None and "not retried" not in why:
                time.sleep(0.2)
                out, why2 = self._once(session, body)
                if why2 is None:
                    self.retried[why] += 1
                else:
                    why = f"{why}, then {why2}"
            if out is None:
                self.failures[why] += 1
                continue
            self.latencies.append(time.perf_counter() - t0)
            self.versions.append(out["model_version"])

    def backward_steps(self) -> int:
        return sum(b < a for a, b in zip(self.versions, self.versions[1:]))


def replica_actors(app: str) -> list[tuple[str, str]]:
    """(name, namespace) of the app's live Serve replica actors."""
    import ray

    return sorted((a["name"], a["namespace"]) for a in ray.util.list_named_actors(all_namespaces=True)
                  if a["name"].startswith(f"SERVE_REPLICA::{app}#"))


def percentile(xs: list[float], q: float) -> float:
    return statistics.quantiles(xs, n=100, method="inclusive")[q - 1] if len(xs) > 1 else (xs or [0.0])[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=300.0, help="how long the clients run (default 300)")
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--swap-every", type=float, default=10.0, help="seconds between two published versions")
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--inline-forward-ms", type=float, default=None,
                    help="serve.inline_forward_ms for the replicas (default: the config's; 0 turns inline scoring off)")
    ap.add_argument("--request-timeout-s", type=float, default=None,
                    help="serve.request_timeout_s (default: the config's)")
    ap.add_argument("--kill-every", type=float, default=None,
                    help="kill a replica this often, from the first interval on (default: once, at half time)")
    args = ap.parse_args()

    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # keep Ray on loopback
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    from frft_ray.env import SERVE_INGRESS_ENV, apply_offline_defaults

    apply_offline_defaults(SERVE_INGRESS_ENV)  # as every Ray instance the project starts
    import ray
    from ray import serve

    from frft_ray.config import RolePlacement, ServeConfig
    from serve import launch

    ckpts = build_checkpoints(Path(tempfile.mkdtemp(prefix="frft_soak_")))
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             object_store_memory=200 * 2**20, _temp_dir="/tmp/frft_soak")
    given = {"inline_forward_ms": args.inline_forward_ms, "request_timeout_s": args.request_timeout_s}
    cfg = ServeConfig(port=PORT, replicas=args.replicas, **{k: v for k, v in given.items() if v is not None})
    url = launch.start_server(cfg, ckpts[0], version=1, app_name=APP, route_prefix="/soak",
                              placement=RolePlacement(num_cpus=0.5))
    launch.wait_for_version(url, 1, timeout_s=120)
    kill_at = ([args.kill_every * k for k in range(1, int(args.seconds / args.kill_every))] if args.kill_every
               else [args.seconds / 2])
    print(f"endpoint {url}: {args.replicas} replicas, {args.clients} clients for {args.seconds:.0f} s, "
          f"a new version every {args.swap_every:.0f} s, a replica killed at {kill_at} s, inline_forward_ms "
          f"{cfg.inline_forward_ms}, request_timeout_s {cfg.request_timeout_s}", flush=True)

    t0 = time.monotonic()
    clients = [Client(k, url, t0, args.seconds) for k in range(args.clients)]
    for c in clients:
        c.start()
    version, killed = 1, []
    try:
        while time.monotonic() < t0 + args.seconds:
            time.sleep(min(args.swap_every, max(0.0, t0 + args.seconds - time.monotonic())))
            now = time.monotonic() - t0
            if kill_at and now >= kill_at[0]:
                kill_at = [t for t in kill_at if t > now]
                name, ns = replica_actors(APP)[0]
                ray.kill(ray.get_actor(name, namespace=ns), no_restart=True)
                killed.append((round(now, 1), name))
                print(f"t={now:.0f}s killed replica {name}", flush=True)
            if now < args.seconds - 1:
                version += 1
                launch.publish_rm(ckpts[version % 2], version=version, app_name=APP)
        for c in clients:
            c.join(timeout=60)
    finally:
        launch.stop_server(APP)
        serve.shutdown()
        ray.shutdown()

    lat = [x for c in clients for x in c.latencies]
    failures = sum((c.failures for c in clients), collections.Counter())
    retried = sum((c.retried for c in clients), collections.Counter())
    seen = [len(set(c.versions)) for c in clients]
    backward = {c.k: c.backward_steps() for c in clients if c.backward_steps()}
    total = len(lat) + sum(failures.values())
    print(f"\nrequests {total} ({total / args.seconds:.0f}/s) | ok {len(lat)} | failures {sum(failures.values())} "
          f"{dict(failures) or ''} | retried and then ok {sum(retried.values())} {dict(retried) or ''}")
    trouble = collections.defaultdict(list)  # why -> when each first try that failed was sent
    for c in clients:
        for t, why in c.trouble_at:
            trouble[why].append(t)
    for why, ts in sorted(trouble.items()):
        print(f"first tries that failed with {why}: {len(ts)}, sent at t = "
              + ", ".join(f"{t:.1f}" for t in sorted(ts)[:12]) + (" ..." if len(ts) > 12 else "") + " s")
    print(f"latency p50 {percentile(lat, 50) * 1e3:.0f} ms, p99 {percentile(lat, 99) * 1e3:.0f} ms "
          f"(a retried request: both tries and the pause)")
    print(f"versions published 1..{version}; distinct versions seen per client: min {min(seen)}, "
          f"median {statistics.median(seen):.0f}, max {max(seen)}; replicas killed: {killed}")
    print("versions non-decreasing for every client: " + ("yes" if not backward else
          f"NO, {len(backward)} client(s) saw a version go back ({sum(backward.values())} step(s))"))
    return 0 if not backward else 1


if __name__ == "__main__":
    sys.exit(main())
