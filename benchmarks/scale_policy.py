"""The policy-side phases of `benchmarks/scale.py`, and how it measures memory.

A GPT-2 of a named shape with random weights (built on the meta device and filled in place), one
weight sync through the object store (`sync_weights`: the function to swap for another transport), one
`PPOLearner.step`, and the peak-RSS window of a process (Linux VmHWM, reset per phase).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

GB = 2**30
SHAPES = {  # tiny-* exist so that the quick grid has a params axis that runs in seconds
    "tiny": dict(n_layer=2, n_embd=64, n_head=4, vocab_size=2048),
    "tiny-2": dict(n_layer=4, n_embd=128, n_head=4, vocab_size=4096),
    "tiny-3": dict(n_layer=4, n_embd=256, n_head=4, vocab_size=8192),
    "gpt2-small": dict(n_layer=12, n_embd=768, n_head=12, vocab_size=50257),
    "gpt2-medium": dict(n_layer=24, n_embd=1024, n_head=16, vocab_size=50257),
}

# ---------------------------------------------------------------- memory


def reset_peak() -> None:
    """Start a new peak-RSS window for this process (Linux: VmHWM := VmRSS)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass  # elsewhere the peak is the process's lifetime peak (ru_maxrss)


def _proc_status_gb(field: str) -> float | None:
    """A memory line of /proc/self/status (Linux) in GB, or None elsewhere. No psutil: a bare GPU node
    (the offline bundle) may not have it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return round(int(line.split()[1]) * 1024 / GB, 3)
    except OSError:
        pass
    return None


def peak_rss_gb() -> float:
    peak = _proc_status_gb("VmHWM")
    if peak is not None:
        return peak
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GB, 3)


def rss_gb() -> float | None:
    """This process's resident memory now, in GB (None where /proc is not)."""
    return _proc_status_gb("VmRSS")


def measured(fn):
    """(fn(), seconds, driver peak RSS in GB over the call)."""
    reset_peak()
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0, peak_rss_gb()


# ---------------------------------------------------------------- models


def random_policy(shape: str, device, seed: int = 0):
    """A GPT-2 of `shape` with random weights, built on the meta device and filled in place (a 355M model
    in seconds on a CPU; GPT-2's own initialisation takes ~20 s there)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(**SHAPES[shape], n_positions=1024, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    with torch.device("meta"):
        model = GPT2LMHeadModel(cfg)
    model = model.to_empty(device=device)
    model.tie_weights()
    g = torch.Generator(device).manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.zero_()
            elif ".ln_" in name or name.startswith("transformer.ln_f"):
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02, generator=g)
    return model


def receiver_class():
    import ray

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray workers cannot import benchmarks/

    @ray.remote(num_cpus=0)
    class Receiver:
        """The second process of a weight sync: holds a policy of a shape and loads what it is sent."""

        def hold(self, shape: str) -> None:
            self.model = None  # free the previous shape first
            self.model = random_policy(shape, "cpu")

        def load(self, packed) -> dict:
            from frft_ray.weight_pack import bucket_tensors, unpack_into

            t0 = time.perf_counter()
            unpack_into(self.model.state_dict(), packed.entries, bucket_tensors(packed))
            return {"load_s": time.perf_counter() - t0, "rss_gb": rss_gb(),
                    "peak_gb": peak_rss_gb()}

    return Receiver


def sync_weights(policy, receiver, dtype) -> dict:
    """One weight sync through the object store as the run does it (`rollout.weight_sync: object_store`,
    actors/weight_sync.py): the learner packs its state dict into `dtype` buckets
    (`frft_ray.weight_pack.pack`, tied tensors once), one `ray.put`, and the receiving process copies
    the buckets into its model in place (`unpack_into`). Swap this function for another transport to
    measure it on the same grid."""
    import ray

    from frft_ray.weight_pack import pack

    t0 = time.perf_counter()
    packed = pack(policy.state_dict(), dtype, version=1)
    ref = ray.put(packed)
    put_s = time.perf_counter() - t0
    got = ray.get(receiver.load.remote(ref))
    seconds = time.perf_counter() - t0
    nbytes = sum(b.nbytes for b in packed.buckets)
    del ref, packed
    return {"seconds": seconds, "put_s": round(put_s, 4), "object_bytes": nbytes, "dtype": str(dtype).removeprefix("torch."),
            "actor_load_s": round(got["load_s"], 4), "actor_rss_gb": got["rss_gb"], "actor_peak_gb": got["peak_gb"]}


def ppo_step(policy, shape: str, g: dict, device, seed: int = 0) -> dict:
    """One `PPOLearner.step` on a random batch (after a warm-up step: optimizer state, kernels)."""
    import torch

    from frft_ray.algorithms.ppo_update import PPOLearner
    from frft_ray.config import PPOConfig
    from frft_ray.devices import compute_dtype
    from frft_ray.models import ValueHead, frozen_reference
    from frft_ray.rollout import RolloutBatch

    b, p, r, v = g["ppo_batch"], g["prompt"], g["response"], SHAPES[shape]["vocab_size"]
    gen = torch.Generator().manual_seed(seed)
    batch = RolloutBatch(prompts=["p"] * b, responses=["r"] * b,
                         query_ids=torch.randint(1, v, (b, p), generator=gen), query_mask=torch.ones(b, p, dtype=torch.long),
                         response_ids=torch.randint(1, v, (b, r), generator=gen),
                         response_mask=torch.ones(b, r, dtype=torch.long), logprobs=torch.zeros(b, r))
    cfg = PPOConfig(batch_size=b, minibatch_size=b, epochs=1, lr=1e-6)
    head = ValueHead(SHAPES[shape]["n_embd"]).to(device)
    learner = PPOLearner(policy, frozen_reference(policy), head, None, cfg, dtype=compute_dtype("auto", torch.device(device)))
    scores = torch.randn(b, generator=gen)
    learner.step(batch, scores)
    _, seconds, peak = measured(lambda: (learner.step(batch, scores), sync_device(device)))
    return {"seconds": seconds, "driver_peak_gb": peak, "batch": b, "seq": p + r}


def sync_device(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
