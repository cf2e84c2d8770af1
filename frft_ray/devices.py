"""Which device and dtype each role computes on, from its `placement.<role>` and the run's `precision`.

One rule for every role (learner, rollout worker, Ray Train RM worker, embedder, Serve replica):
a unit that reserves GPUs computes on CUDA, one that reserves none computes on the CPU. A unit
that reserved a GPU but sees no CUDA device fails at once with the role's name, instead of
training silently on the CPU.

Precision (`precision:` at the top of the config, ours where the paper is silent):
- `auto`: bf16 on CUDA devices that support it, fp32 on the CPU (bf16 matmuls are slow there).
- `fp32`, `bf16`: forced.
How each role uses the dtype: the learner and the RM fit keep fp32 master weights and optimizer
state and run forward/backward under `torch.autocast(bf16)`; roles that only infer (rollout, Serve
scoring) hold bf16 weights. The embedder stays fp32 (fp16 MiniLM measured slower than fp32 on an
H200; see docs/gpu.md).
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


def autocast(device: torch.device, dtype: torch.dtype):
    """Mixed-precision context for training forward passes; a no-op for fp32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def describe(device: torch.device, dtype: torch.dtype) -> str:
    """'cuda:0/bf16', 'cpu/fp32': what a role reports about where it runs."""
    name = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, str(dtype))
    return f"{device}/{name}"
