"""Weight-sync benchmark: seconds per policy version, learner -> rollout workers, by each method.

A random-init state dict of the chosen GPT-2 shape (`--shape gpt2-medium`: 24 x 1024, vocab 50,257,
lm_head tied to wte, built on the meta device, so no download) sits on a sender actor; `--workers`
receiver actors hold the same shapes in the rollout dtype. One sync = the sender's weights copied into
every receiver's tensors, through the project's own code (actors/weight_sync.py). Each method runs
`--repeats` versions after one untimed warm-up (group forming and NCCL's first call are reported apart);
the median is compared with the baseline measured in the same process:

- `baseline_fp32_dict`: the path before rollout.weight_sync, a dict of fp32 CPU tensors returned by the
  learner and read by every worker (Ray pickles tensors through their storage);
- `object_store_fp32` / `object_store_bf16`: packed byte buckets in one object (numpy: read in place);
- `collective_gloo_bf16`: a gloo broadcast from the sender (CPU buffers);
- with `--device cuda`: `collective_nccl_bf16` (needs one GPU per rank: 1 + workers GPUs; skipped with a
  message otherwise) and `cuda_ipc_bf16` (sender and receivers at fractional GPUs on one card).

    python benchmarks/weight_sync_bench.py                   # CPU: GPT-2-medium, 2 workers
    python benchmarks/weight_sync_bench.py --device cuda     # a GPU node (no network needed)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import ray
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from actors.weight_sync import PoolSync, WeightSink, WeightSource  # noqa: E402

SHAPES = {
    "tiny": dict(n_layer=2, n_embd=64, n_head=4, vocab_size=2048),
    "gpt2-small": dict(n_layer=12, n_embd=768, n_head=12, vocab_size=50257),
    "gpt2-medium": dict(n_layer=24, n_embd=1024, n_head=16, vocab_size=50257),
}


def random_state(shape: str, device: str, dtype: torch.dtype, seed: int) -> dict[str, torch.Tensor]:
    """GPT-2's state dict at `shape`, random, with lm_head tied to wte as in the real model."""
    from transformers import GPT2Config, GPT2LMHeadModel

    with torch.device("meta"):
        eos = SHAPES[shape]["vocab_size"] - 1
        names = GPT2LMHeadModel(GPT2Config(**SHAPES[shape], bos_token_id=eos, eos_token_id=eos)).state_dict()
    torch.manual_seed(seed)
    state = {k: torch.empty(v.shape, device=device, dtype=dtype).normal_(std=0.02) for k, v in names.items()
             if k != "lm_head.weight"}
    state["lm_head.weight"] = state["transformer.wte.weight"]
    return state


@ray.remote
class Sender(WeightSource):
    def __init__(self, shape: str, device: str):
        self.device, self.version = torch.device(device), 0
        self.state = random_state(shape, device, torch.float32, seed=1)

    def _sync_state(self, version=None):
        return self.state

    def new_version(self) -> int:
        """A new policy version, as a PPO step would leave it (one tensor touched, so versions differ)."""
        self.version += 1
        self.state["transformer.ln_f.bias"].add_(1.0)
        return self.version

    def legacy_weights(self) -> dict:
        return {k: v.detach().cpu().clone() for k, v in self.state.items()}


@ray.remote
class Receiver(WeightSink):
    def __init__(self, shape: str, device: str, dtype: torch.dtype, rank: int):
        self.device, self.dtype, self.rank, self.version = torch.device(device), dtype, rank, 0
        self.state = random_state(shape, device, dtype, seed=2)

    def _accept(self, version: int) -> None:
        if version < self.version:
            raise ValueError(f"receiver {self.rank}: v{version} older than v{self.version}")

    def _sync_target(self):
        return self.state

    def cast(self, dtype: torch.dtype) -> None:
        """Hold the weights in `dtype` from now on (the rollout side's dtype decides what is sent)."""
        self.dtype = dtype
        self.state = {k: v.to(dtype) for k, v in self.state.items()}

    def _install_state_dict(self, state: dict, version: int) -> None:
        with torch.no_grad():
            for k, v in state.items():
                self.state[k].copy_(v)


def median_s(sync, repeats: int, sender) -> tuple[float, float]:
    """(warm-up seconds, median seconds) of `sync(version)` over `repeats` new versions."""
    times = []
    for i in range(repeats + 1):
        version = ray.get(sender.new_version.remote())
        t = time.perf_counter()
        sync(version)
        times.append(time.perf_counter() - t)
    return times[0], statistics.median(times[1:])


def start_actors(args, gpu_share: float) -> tuple:
    """A sender and `--workers` receivers (fp32 until `cast`), at `gpu_share` GPUs each on a GPU node."""
    on_gpu = gpu_share > 0
    opts = {"num_cpus": 0.1, "num_gpus": gpu_share} if on_gpu else {"num_cpus": 0.1}
    device = "cuda:0" if on_gpu else "cpu"  # each actor sees its own GPU(s) from index 0
    sender = Sender.options(**opts).remote(args.shape, device)
    receivers = [Receiver.options(**opts).remote(args.shape, device, torch.float32, i + 1) for i in range(args.workers)]
    return sender, receivers


def time_method(name: str, sender, receivers: list, dtype: torch.dtype, setting: str, repeats: int) -> dict:
    """One method on running actors: receivers recast to `dtype`, warm-up + `repeats` versions, then a
    bit-for-bit check of every receiver against the sender."""
    ray.get([w.cast.remote(dtype) for w in receivers])
    sync = PoolSync(setting, sender)
    plan = sync.plan_for(receivers)
    if name == "baseline_fp32_dict":
        def once(v):
            ref = sender.legacy_weights.remote()
            ray.get([w.set_weights.remote(ref, v) for w in receivers])
    elif plan.method == "object_store":
        def once(v):
            ref = sync.packed_ref(v)
            ray.get([w.set_weights.remote(ref, v) for w in receivers])
    else:
        def once(v):
            assert not sync.push(receivers, v), "a receiver was lost"
    warm, med = median_s(once, repeats, sender)
    verified = sync.check(receivers)
    if plan.method == "collective":
        ray.get([a.sync_close.remote() for a in [sender, *receivers]])
    return {"method": name, "plan": plan.describe().split(":")[0], "warmup_s": round(warm, 3),
            "median_s": round(med, 3), "verified": verified}


def report(rows: list[dict]) -> None:
    """Print the last row, with its speed-up over the baseline (the first row)."""
    row = rows[-1]
    row["x_faster_than_baseline"] = round(rows[0]["median_s"] / row["median_s"], 2)
    print(f"{row['method']:22s} {row['plan']:28s} {row['median_s']:8.3f} s/version (warm-up {row['warmup_s']:.3f} s)"
          f"  x{row['x_faster_than_baseline']:.1f} vs baseline  verified={row['verified']}", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--shape", choices=list(SHAPES), default="gpt2-medium")
    p.add_argument("--workers", type=int, default=2, help="receiving rollout workers")
    p.add_argument("--repeats", type=int, default=3, help="timed versions per method (median reported)")
    p.add_argument("--baseline-repeats", type=int, default=2, help="timed versions of the (slow) baseline")
    p.add_argument("--object-store-gb", type=float, default=4.0)
    p.add_argument("--json", type=Path, help="write the results here too")
    a = p.parse_args(argv)
    on_gpu = a.device == "cuda"
    ray.init(address="local", include_dashboard=False, log_to_driver=False, num_cpus=max(2, a.workers + 1),
             object_store_memory=int(a.object_store_gb * 2**30), _temp_dir="/tmp/frft_sync_bench")
    gpus = int(ray.cluster_resources().get("GPU", 0))
    fp32, bf16 = torch.float32, torch.bfloat16
    n_params = sum(v.numel() for k, v in random_state(a.shape, "meta", fp32, 0).items() if k != "lm_head.weight")
    print(f"{a.shape}: {n_params / 1e6:.0f}M parameters, {a.workers} receiver(s), device {a.device}, "
          f"torch {torch.__version__}, median of {a.repeats} versions ({a.baseline_repeats} for the baseline)")
    methods = [("baseline_fp32_dict", fp32, "object_store"), ("object_store_fp32", fp32, "object_store"),
               ("object_store_bf16", bf16, "object_store")]
    methods.append(("cuda_ipc_bf16", bf16, "cuda_ipc") if on_gpu else ("collective_gloo_bf16", bf16, "collective"))
    t0, rows = time.perf_counter(), []
    sender, receivers = start_actors(a, 1.0 / (a.workers + 1) if on_gpu else 0.0)  # one card shared on a GPU node
    try:
        for name, dtype, setting in methods:
            rows.append(time_method(name, sender, receivers, dtype, setting,
                                    a.baseline_repeats if name.startswith("baseline") else a.repeats))
            report(rows)
    finally:
        for actor in [sender, *receivers]:
            ray.kill(actor)
    if on_gpu and gpus >= a.workers + 1:
        sender, receivers = start_actors(a, 1.0)  # NCCL: one GPU per rank
        try:
            rows.append(time_method("collective_nccl_bf16", sender, receivers, bf16, "collective", a.repeats))
            report(rows)
        finally:
            for actor in [sender, *receivers]:
                ray.kill(actor)
    elif on_gpu:
        print(f"collective_nccl_bf16: skipped, NCCL needs one GPU per rank ({a.workers + 1}); this node has {gpus}")
    print(f"total {time.perf_counter() - t0:.1f} s")
    if a.json:
        a.json.write_text(json.dumps({"shape": a.shape, "device": a.device, "workers": a.workers, "rows": rows},
                                     indent=1))
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
