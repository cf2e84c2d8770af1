"""frft_ray/devices.py: each role's device from its placement, and the compute dtype rules."""

import pytest
import torch

from frft_ray.devices import DevicePlacementError, autocast, compute_dtype, describe, role_device


def test_a_role_without_gpus_computes_on_the_cpu():
    assert role_device(0, "learner") == torch.device("cpu")
    assert role_device(0.0, "embedder").type == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_a_gpu_role_without_cuda_fails_naming_the_role_and_the_fix():
    with pytest.raises(DevicePlacementError, match=r"placement\.reward_trainer\.num_gpus=0\.25 but this process sees no "
                                                   r"CUDA device") as e:
        role_device(0.25, "reward_trainer")
    assert "set placement.reward_trainer.num_gpus=0 to run it on the CPU" in str(e.value)


@pytest.mark.gpu
def test_a_gpu_role_gets_cuda_and_bf16_on_auto():
    dev = role_device(0.5, "learner")
    assert dev.type == "cuda"
    assert compute_dtype("auto", dev) == (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32)


def test_compute_dtype_rules():
    cpu = torch.device("cpu")
    assert compute_dtype("auto", cpu) == torch.float32  # bf16 matmuls are slow on CPUs
    assert compute_dtype("fp32", cpu) == torch.float32
    assert compute_dtype("bf16", cpu) == torch.bfloat16  # forced
    with pytest.raises(ValueError, match="precision must be one of .*'fp16'"):
        compute_dtype("fp16", cpu)


def test_autocast_is_off_for_fp32_and_on_for_bf16():
    cpu = torch.device("cpu")
    x = torch.ones(2, 2)
    with autocast(cpu, torch.float32):
        assert (x @ x).dtype == torch.float32
    with autocast(cpu, torch.bfloat16):
        assert (x @ x).dtype == torch.bfloat16
    assert describe(cpu, torch.float32) == "cpu/fp32" and describe(torch.device("cuda", 0), torch.bfloat16) == "cuda:0/bf16"
