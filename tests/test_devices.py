"""frft_ray/devices.py: each role's device from its placement, and the compute dtype rules."""

import pytest
import torch

from frft_ray.devices import (DevicePlacementError, autocast, compute_dtype, cpu_native_bf16, describe, embed_dtype,
                              role_device, serve_dtype)


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


def test_embed_dtype_rules():
    # auto: bf16 only on a CPU that multiplies bf16 in hardware (this machine's flags decide), fp32 on GPUs
    assert cpu_native_bf16() == any(f in open("/proc/cpuinfo").read().split() for f in ("avx512_bf16", "amx_tile"))
    assert embed_dtype("auto", on_gpu=False) == (torch.bfloat16 if cpu_native_bf16() else torch.float32)
    assert embed_dtype("auto", on_gpu=True) == torch.float32  # fp16 MiniLM was slower than fp32 on an H200
    assert embed_dtype("fp32", on_gpu=False) == torch.float32 and embed_dtype("bf16", on_gpu=True) == torch.bfloat16
    with pytest.raises(ValueError, match="filter.embed_precision must be one of"):
        embed_dtype("int8", on_gpu=False)


def test_serve_dtype_rules():
    # Serve replicas: auto is bf16 on GPUs and on CPUs that multiply bf16 in hardware; forced values win
    cpu = torch.device("cpu")
    assert serve_dtype("auto", cpu) == (torch.bfloat16 if cpu_native_bf16() else torch.float32)
    assert serve_dtype("fp32", cpu) == torch.float32 and serve_dtype("bf16", cpu) == torch.bfloat16
    with pytest.raises(ValueError, match="precision must be one of"):
        serve_dtype("fp16", cpu)


def test_autocast_is_off_for_fp32_and_on_for_bf16():
    cpu = torch.device("cpu")
    x = torch.ones(2, 2)
    with autocast(cpu, torch.float32):
        assert (x @ x).dtype == torch.float32
    with autocast(cpu, torch.bfloat16):
        assert (x @ x).dtype == torch.bfloat16
    assert describe(cpu, torch.float32) == "cpu/fp32" and describe(torch.device("cuda", 0), torch.bfloat16) == "cuda:0/bf16"


def _left_padded_backward(device, dtype, seq_len=192, pad=40):
    """Gradients of a GPT-2 (head dim 64) trained on a left-padded batch under `devices.autocast`."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=512, n_positions=256, n_embd=128, n_layer=2, n_head=2, attn_implementation="sdpa")
    model = GPT2LMHeadModel(cfg).to(device)
    ids = torch.randint(0, 512, (4, seq_len), device=device)
    mask = torch.ones_like(ids)
    mask[:2, :pad] = 0  # two left-padded rows: their first `pad` query rows attend to nothing
    with autocast(device, dtype):
        logits = model(input_ids=ids, attention_mask=mask).logits
    (logits.float() * mask[..., None]).sum().backward()
    return [p.grad for p in model.parameters() if p.grad is not None]


def test_training_on_left_padded_rows_gives_finite_gradients_on_cpu():
    grads = _left_padded_backward(torch.device("cpu"), torch.bfloat16, seq_len=64, pad=20)
    assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.gpu
def test_training_on_left_padded_rows_gives_finite_gradients_in_bf16_on_cuda():
    # seq_len 192 = 64 mod 128 with fully masked rows: the case where cuDNN's SDPA backward gives NaN
    # (devices.training_attention keeps cuDNN out of training passes)
    grads = _left_padded_backward(torch.device("cuda", 0), torch.bfloat16)
    assert grads and all(torch.isfinite(g).all() for g in grads)
