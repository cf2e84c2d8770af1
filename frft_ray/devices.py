"""Which device and dtype each role computes on, from its `placement.<role>` and the run's `precision`.

One rule for every role (learner, rollout worker, Ray Train RM worker, embedder, Serve replica):
a unit that reserves GPUs computes on CUDA, one that reserves none computes on the CPU. A unit
that reserved a GPU but sees no CUDA device fails at once with the role's name, instead of
training silently on the CPU.

Precision (`precision:` at the top of the config, ours where the paper is silent):
- `auto`: bf16 on CUDA devices that support it, fp32 on the CPU (bf16 matmuls are slow on CPUs
  without bf16 hardware; Serve replicas use it where the CPU has it, below).
- `fp32`, `bf16`: forced.
How each role uses the dtype: the learner and the RM fit keep fp32 master weights and optimizer
state and run forward/backward under `torch.autocast(bf16)`; roles that only infer (rollout, Serve
scoring) hold bf16 weights.

Serve replicas (`serve_dtype`, ours): under `auto` they also hold bf16 weights on a CPU that does
bf16 matmuls in hardware (AVX512-BF16 or AMX). Batched forwards are where it pays, and an endpoint
under load runs batches: on a 2-core Xeon with AMX, a batch of 32 cost 1.3x (tiny RM) and 1.85x
(4 x 256 RM) less per query than in fp32, a lone text 1.07-1.25x more (medians of 6 interleaved
rounds); the endpoint served 1.3-1.6x the requests/s of its fp32 self at 64-256 concurrent clients
on the wider RM (runs minutes apart; docs/serve.md). Scores are then bf16-rounded, as on a GPU: for
random-init tiny and 4 x 256 RMs over 256 texts, within 0.006 of fp32 (score sd 0.11-0.18; rank
correlation 0.998). Training and rollout stay fp32 on CPUs: their numerics decide the run's results.

The embedder has its own `filter.embed_precision` (`embed_dtype`), ours: `auto` is bf16 on a CPU
that does bf16 matmuls in hardware (AVX512-BF16 or AMX: MiniLM ran 2.7x faster there, rows within
cosine 0.99995 of fp32, the same top-10 neighbours for 99.5% of them), fp32 on other CPUs and on
GPUs (fp16 MiniLM measured slower than fp32 on an H200; see docs/gpu.md).
"""

from __future__ import annotations

import contextlib
import os

import torch

PRECISIONS = ("auto", "fp32", "bf16")


class DevicePlacementError(RuntimeError):
    """A role's placement asks for a GPU that its process cannot see."""


def role_device(num_gpus: float, role: str) -> torch.device:
    """The device a unit of `role` computes on, given the GPUs its placement reserved."""
    if num_gpus <= 0:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise DevicePlacementError(
            f"placement.{role}.num_gpus={num_gpus:g} but this process sees no CUDA device "
            f"(torch {torch.__version__}, cuda build: {torch.version.cuda}, "
            f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}); "
            f"set placement.{role}.num_gpus=0 to run it on the CPU"
        )
    return torch.device("cuda", torch.cuda.current_device())


def compute_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The dtype matmuls run in for `precision` on `device` (see the module docstring)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp32":
        return torch.float32
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def serve_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The dtype a Serve replica holds its RM in: `compute_dtype`, but `auto` on a CPU with native
    bf16 matmuls is bf16 (see the module docstring)."""
    if precision == "auto" and device.type == "cpu" and cpu_native_bf16():
        return torch.bfloat16
    return compute_dtype(precision, device)


def cpu_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX tiles); elsewhere torch
    emulates bf16 on the CPU, slower than fp32."""
    cpu = torch.cpu
    return any(bool(getattr(cpu, name, lambda: False)()) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))


def embed_dtype(precision: str, on_gpu: bool) -> torch.dtype:
    """The dtype the embedder computes in for `filter.embed_precision` (see the module docstring)."""
    if precision not in PRECISIONS:
        raise ValueError(f"filter.embed_precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        return torch.bfloat16 if not on_gpu and cpu_native_bf16() else torch.float32
    return torch.bfloat16 if precision == "bf16" else torch.float32


def dtype_name(dtype: torch.dtype) -> str:
    """'fp32', 'bf16', 'fp16'."""
    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, str(dtype))


# cuDNN's fused attention is left out of training passes on CUDA. Its backward (the default SDPA
# backend for bf16 on H100/H200 since torch 2.11) returns NaN in grad_q when a mask tensor is passed,
# the sequence length is 64 mod 128 and a query row's logsumexp is below ln(FLT_MAX) ~ -88.7: every
# fully masked row qualifies, and left-padded prompts give one per pad token. One NaN gradient
# spreads to every weight in one AdamW step, and the next rollout stops on a CUDA device-side assert
# in sampling (seen on an H200 with torch 2.11). Memory-efficient and flash attention are clean there.
TRAINING_SDPA_BACKENDS = ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "MATH")


def training_attention(device: torch.device):
    """SDPA backends for forward passes that will be differentiated: cuDNN excluded on CUDA."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([getattr(SDPBackend, name) for name in TRAINING_SDPA_BACKENDS])


def autocast(device: torch.device, dtype: torch.dtype):
    """Context for training forward passes: autocast to `dtype` (none for fp32) and, on CUDA, the
    SDPA backends of `training_attention`."""
    stack = contextlib.ExitStack()
    stack.enter_context(training_attention(device))
    if dtype != torch.float32:
        stack.enter_context(torch.autocast(device_type=device.type, dtype=dtype))
    return stack


def describe(device: torch.device, dtype: torch.dtype) -> str:
    """'cuda:0/bf16', 'cpu/fp32': what a role reports about where it runs."""
    return f"{device}/{dtype_name(dtype)}"


def machine() -> dict:
    """The machine this process runs on, for a run's summary: the same config on two CPU models can
    differ in the last bits, and one run's numbers then differ by more than a rounding error."""
    import platform

    import transformers

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu, "cores": os.cpu_count(), "gpu": gpu, "python": platform.python_version(),
            "torch": torch.__version__, "transformers": transformers.__version__}
