"""vLLM rollout check on one CUDA GPU: vLLM vs HF engine tokens/s, then a weight sync and greedy agreement.

Run by scripts/gpu_check.sh when vLLM is importable (a checkout installed with `pip install -e '.[vllm,dev]'`).
Knobs (environment): N_PROMPTS (256), NEW_TOKENS (128), HF_BATCH (64), GREEDY_TOL (0.1). Exits non-zero on failure.
"""
import copy, os, sys, tempfile, time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from test_vllm_engine import build_policy_dir, corpus, greedy_consistency  # noqa: E402

from actors.vllm_engine import VLLMEngine  # noqa: E402
from frft_ray.config import RolloutConfig  # noqa: E402
from frft_ray.models import train_tokenizer  # noqa: E402
from frft_ray.rollout import response_mask_from_ids  # noqa: E402

N, NEW, HF_BS = int(os.environ.get("N_PROMPTS", 256)), int(os.environ.get("NEW_TOKENS", 128)), int(os.environ.get("HF_BATCH", 64))
TOL, MAX_PROMPT = float(os.environ.get("GREEDY_TOL", 0.1)), 64
root = Path(tempfile.mkdtemp(prefix="frft_gpu_"))

t = time.perf_counter()
tok = train_tokenizer(corpus(30000), vocab_size=8192, model_max_length=1024)
size = dict(n_layer=12, n_embd=768, n_head=12, n_positions=1024, init_range=0.1, tok=tok)
model_a, _ = build_policy_dir(root / "a", seed=0, **size)
model_b, _ = build_policy_dir(root / "b", seed=1, **size)
params = sum(p.numel() for p in model_a.parameters())
print(f"policy: {params / 1e6:.1f}M params, vocab {len(tok)}, built offline in {time.perf_counter() - t:.1f} s")
lines = corpus(N * 4)
prompts = [lines[i][:200] for i in range(0, 4 * N, 4)][:N]
cfg = RolloutConfig(engine="vllm", max_new_tokens=NEW, temperature=1.0, top_k=0, top_p=1.0, batch_size=HF_BS)


def sync():
    torch.cuda.synchronize()
    return time.perf_counter()


# -- HF engine: batched HF generate, the work frft_ray/rollout.py does, on the GPU in bf16
hf = copy.deepcopy(model_a).to("cuda", torch.bfloat16).eval()


@torch.no_grad()
def hf_rollout(ps):
    n = 0
    for i in range(0, len(ps), HF_BS):
        enc = tok(ps[i : i + HF_BS], return_tensors="pt", padding=True, truncation=True, max_length=MAX_PROMPT).to("cuda")
        out = hf.generate(**enc, do_sample=True, top_k=0, top_p=1.0, temperature=1.0, max_new_tokens=NEW,
                          pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        n += int(response_mask_from_ids(out[:, enc["input_ids"].shape[1]:], tok.eos_token_id).sum())
    return n


hf_rollout(prompts[:8])  # warm-up
t0 = sync(); hf_tokens = hf_rollout(prompts); hf_s = sync() - t0
hf_tps = hf_tokens / hf_s
print(f"hf   rollout: {hf_tokens} tokens in {hf_s:.2f} s = {hf_tps:,.0f} tok/s (batch {HF_BS})")
del hf
torch.cuda.empty_cache()

# -- vLLM engine
t0 = time.perf_counter()
eng = VLLMEngine(str(root / "a"), cfg, MAX_PROMPT, dtype="bfloat16", gpu_memory_utilization=0.6)
print(f"vllm engine start: {time.perf_counter() - t0:.1f} s")
eng.generate(prompts[:8], seed=0)  # warm-up
t0 = sync(); batch = eng.generate(prompts, seed=1); v_s = sync() - t0
v_tokens = int(batch.response_mask.sum())
v_tps = v_tokens / v_s
print(f"vllm rollout: {v_tokens} tokens in {v_s:.2f} s = {v_tps:,.0f} tok/s")
print(f"ratio vllm/hf tokens/s: {v_tps / hf_tps:.2f}x")

# -- weight sync, then greedy output vs the learner (fp32 reference on the GPU)
ref_a, ref_b = model_a.to("cuda").eval(), model_b.to("cuda").eval()
gp = prompts[:64]
before = eng.generate(gp, greedy=True)
t0 = time.perf_counter()
eng.load_weights(model_b.state_dict(), version=1)
print(f"timing/sync (vLLM load_weights, {params / 1e6:.0f}M params): {time.perf_counter() - t0:.2f} s")
after = eng.generate(gp, greedy=True)
c_before_a = greedy_consistency(ref_a, before, TOL)
c_after_b, c_after_a = greedy_consistency(ref_b, after, TOL), greedy_consistency(ref_a, after, TOL)
print(f"greedy consistency (tol {TOL}): before sync vs v0 {c_before_a:.2f} | after sync vs learner v1 {c_after_b:.2f} | after sync vs v0 {c_after_a:.2f}")
ok = c_before_a >= 0.9 and c_after_b >= 0.9 and c_after_a < 0.5 and after.policy_version == 1
print("weight sync check:", "PASS" if ok else "FAIL")
sys.exit(0 if ok else 1)
