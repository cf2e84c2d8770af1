"""The vLLM rollout engine: import guard and clear errors on CPU; generation, logprobs and weight
sync on a GPU (tests marked `gpu`, skipped where torch sees no CUDA device; scripts/gpu_check.sh
runs them). Models are tiny GPT-2s built offline."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
HAS_VLLM = importlib.util.find_spec("vllm") is not None


# ---------------------------------------------------------------- helpers (also used by scripts/gpu_check.sh)


def corpus(n: int = 4000) -> list[str]:
    """Offline text for the tokenizer: non-empty lines of the standard library's own sources."""
    lib = Path(subprocess.__file__).parent
    lines: list[str] = []
    for f in sorted(lib.glob("*.py")):
        lines += [ln.strip() for ln in f.read_text(errors="ignore").splitlines() if len(ln.strip()) > 8]
        if len(lines) >= n:
            break
    return lines[:n]


def build_policy_dir(path: Path, n_layer=2, n_embd=128, n_head=4, vocab=1024, n_positions=256, seed=0,
                     init_range=0.1, tok=None):
    """Save a random GPT-2 policy (+ its BPE tokenizer) as a checkpoint folder vLLM can load."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from frft_ray.models import save_checkpoint, train_tokenizer

    tok = tok or train_tokenizer(corpus(), vocab_size=vocab, model_max_length=n_positions)
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(GPT2Config(
        vocab_size=len(tok), n_positions=n_positions, n_layer=n_layer, n_embd=n_embd, n_head=n_head,
        bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        initializer_range=init_range,  # wider logit gaps than 0.02: fewer near-ties in greedy checks
    )).eval()
    save_checkpoint(path, model, tok, None, {"kind": "policy", "version": 0})
    return model, tok


@torch.no_grad()
def teacher_forced_logits(model, batch) -> torch.Tensor:
    """The model's logits predicting each response token of `batch`, [B, R, V], fp32."""
    dev = next(model.parameters()).device
    ids = torch.cat([batch.query_ids, batch.response_ids], 1).to(dev)
    mask = torch.cat([batch.query_mask, batch.response_mask], 1).to(dev)
    pos = (mask.cumsum(1) - 1).clamp(min=0)  # left padding: positions count real tokens only
    logits = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits.float()
    P = batch.query_ids.shape[1]
    return logits[:, P - 1 : -1].cpu()


def greedy_consistency(model, batch, tol: float) -> float:
    """Fraction of rows whose every response token is the model's argmax, up to a near-tie of `tol`.

    vLLM (bf16/fp16 kernels) and the learner (fp32) may break exact ties differently; a token within
    `tol` of the top logit counts as greedy. A wrong model fails this on almost every row.
    """
    logits = teacher_forced_logits(model, batch)
    chosen = logits.gather(-1, batch.response_ids.unsqueeze(-1)).squeeze(-1)
    gap = logits.max(-1).values - chosen
    ok = ((gap <= tol) | (batch.response_mask == 0)).all(1)
    return ok.float().mean().item()


# ---------------------------------------------------------------- CPU


def test_importing_the_engine_module_does_not_import_vllm():
    code = "import sys, actors.vllm_engine; print('vllm' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


@pytest.mark.skipif(HAS_VLLM and torch.cuda.is_available(), reason="vLLM can run here")
def test_engine_vllm_without_vllm_or_gpu_is_a_clear_error():
    from actors.vllm_engine import VLLMEngine, VLLMUnavailableError
    from frft_ray.config import RolloutConfig

    with pytest.raises(VLLMUnavailableError) as err:
        VLLMEngine("/no/such/policy", RolloutConfig(engine="vllm"), 32)
    msg = str(err.value)
    assert "rollout.engine" in msg and "rollout.engine=hf" in msg
    assert ("not installed" in msg and "frft-ray[vllm]" in msg) if not HAS_VLLM else "rollout.num_gpus" in msg


def test_weights_for_vllm_untie_shared_storage_and_save_as_safetensors(tmp_path):
    """GPT-2 ties lm_head to wte; the engine's file for vLLM must still hold every tensor."""
    from safetensors.torch import load_file, save_file
    from transformers import GPT2Config, GPT2LMHeadModel

    from actors.vllm_engine import _plain_tensors

    sd = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64, n_positions=32)).state_dict()
    assert sd["lm_head.weight"].data_ptr() == sd["transformer.wte.weight"].data_ptr()
    save_file(_plain_tensors(sd), str(tmp_path / "w.safetensors"))
    back = load_file(str(tmp_path / "w.safetensors"))
    assert set(back) == set(sd) and all(torch.equal(back[k], sd[k]) for k in sd)


# ---------------------------------------------------------------- GPU


@pytest.fixture(scope="module")
def gpu_setup(tmp_path_factory):
    if not HAS_VLLM:
        pytest.skip("vllm is not installed")
    from actors.vllm_engine import VLLMEngine
    from frft_ray.config import RolloutConfig

    root = tmp_path_factory.mktemp("vllm")
    model_a, tok = build_policy_dir(root / "a", seed=0)
    model_b, _ = build_policy_dir(root / "b", seed=1, tok=tok)
    cfg = RolloutConfig(engine="vllm", max_new_tokens=24, temperature=1.0)
    engine = VLLMEngine(str(root / "a"), cfg, max_prompt_tokens=32, gpu_share=1.0, enforce_eager=True,
                        gpu_memory_utilization=0.3, dtype="bfloat16")
    prompts = [ln[:60] for ln in corpus(200)[::5]][:32]
    return {"engine": engine, "a": model_a.cuda(), "b": model_b.cuda(), "tok": tok, "prompts": prompts}


@pytest.mark.gpu
def test_generate_returns_a_rollout_batch_whose_logprobs_match_the_policy(gpu_setup):
    eng, prompts = gpu_setup["engine"], gpu_setup["prompts"]
    batch = eng.generate(prompts, seed=3)
    assert len(batch) == len(prompts) and batch.meta["engine"] == "vllm"
    assert batch.response_ids.shape == batch.logprobs.shape == batch.response_mask.shape
    m = batch.response_mask.bool()
    assert m.sum(1).min() >= 1 and torch.isfinite(batch.logprobs[m]).all() and (batch.logprobs[m] <= 0).all()
    ref = torch.log_softmax(teacher_forced_logits(gpu_setup["a"], batch), -1)
    ref = ref.gather(-1, batch.response_ids.unsqueeze(-1)).squeeze(-1)
    diff = (ref - batch.logprobs)[m].abs()
    assert diff.mean() < 0.05 and diff.max() < 0.5, f"mean {diff.mean():.4f} max {diff.max():.4f}"
    again = eng.generate(prompts, seed=3)
    assert torch.equal(again.response_ids, batch.response_ids), "a seeded generate must repeat itself"


@pytest.mark.gpu
def test_after_weight_sync_greedy_output_is_the_learners(gpu_setup):
    from actors.vllm_engine import StaleWeightsError

    eng, prompts = gpu_setup["engine"], gpu_setup["prompts"]
    before = eng.generate(prompts, greedy=True)
    assert greedy_consistency(gpu_setup["a"], before, tol=0.05) >= 0.9
    assert eng.load_weights(gpu_setup["b"].state_dict(), version=1) == 1
    after = eng.generate(prompts, greedy=True)
    assert after.policy_version == 1
    assert greedy_consistency(gpu_setup["b"], after, tol=0.05) >= 0.9, "vLLM's greedy output is not the learner's"
    assert greedy_consistency(gpu_setup["a"], after, tol=0.05) < 0.5, "the old weights still answer"
    with pytest.raises(StaleWeightsError):
        eng.load_weights(gpu_setup["a"].state_dict(), version=0)
    assert eng.version == 1


def test_greedy_consistency_check_accepts_the_right_model_and_rejects_another(tmp_path):
    """The check the GPU tests rely on, on CPU with the HF engine: an HF greedy batch is fully
    consistent with its own model (left padding handled) and not with a different one."""
    from frft_ray.config import RolloutConfig
    from frft_ray.rollout import generate

    a, tok = build_policy_dir(tmp_path / "a", seed=0, n_embd=64, vocab=512)
    b, _ = build_policy_dir(tmp_path / "b", seed=1, n_embd=64, vocab=512, tok=tok)
    prompts = [ln[: 10 + 7 * (i % 5)] for i, ln in enumerate(corpus(300)[::20])][:12]  # uneven: padding
    batch = generate(a, tok, prompts, RolloutConfig(max_new_tokens=12), max_prompt_tokens=32, greedy=True)
    assert batch.query_mask.min() == 0, "the prompts should need left padding"
    assert greedy_consistency(a, batch, tol=1e-4) == 1.0
    assert greedy_consistency(b, batch, tol=1e-4) < 0.5
