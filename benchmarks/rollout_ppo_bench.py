"""Our rollout (`frft_ray.rollout.generate`, with per-token log-probs) vs plain HF `generate`, and one PPO step.

Baseline: the same model's `generate` with the same sampling settings and no log-probs at all,
timed with the same tokenization and decoding, in the same process, alternating with ours. Ours
must reach >= 1.0x its tokens/s at no more peak memory (CUDA: `torch.cuda.max_memory_allocated`;
skipped on the CPU). The PPO line times one `PPOLearner.step` (fp32 master weights, forward/backward
under autocast to the compute dtype) on a synthetic batch of full-length responses.

Models are random-init GPT-2s built offline from a GPT2Config, with a word-level tokenizer whose
vocabulary is the model's, so every sampled id decodes and prompts have an exact token length:
    tiny:         2 x 64, vocab 512, prompt 32 + response 16, rollout batch 16, PPO batch 32 / minibatch 8
    gpt2-medium: 24 x 1024, vocab 50,257, prompt 384 + response 128, rollout batch 64, PPO batch 128 / minibatch 32

    python benchmarks/rollout_ppo_bench.py --shape tiny --device cpu
    python benchmarks/rollout_ppo_bench.py --shape gpt2-medium --device cuda [--precision bf16] [--batch 256]
"""

from __future__ import annotations

import argparse
import copy
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from frft_ray.algorithms.ppo_update import PPOLearner  # noqa: E402
from frft_ray.config import PPOConfig, RolloutConfig  # noqa: E402
from frft_ray.devices import compute_dtype, describe  # noqa: E402
from frft_ray.models import PAD, EOS, ValueHead, frozen_reference, hidden_size  # noqa: E402
from frft_ray.rollout import RolloutBatch, generate, response_mask_from_ids  # noqa: E402

SHAPES = {
    "tiny": dict(n_layer=2, n_embd=64, n_head=4, vocab=512, prompt=32, response=16, batch=16, ppo_batch=32, minibatch=8),
    "gpt2-medium": dict(n_layer=24, n_embd=1024, n_head=16, vocab=50257, prompt=384, response=128, batch=64,
                        ppo_batch=128, minibatch=32),
}


def word_tokenizer(vocab: int):
    """Word-level tokenizer over `vocab` ids: pad 0, eos 1, words w2..w{vocab-1}; left padding."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = {PAD: 0, EOS: 1, **{f"w{i}": i for i in range(2, vocab)}}
    tok = Tokenizer(models.WordLevel(words, unk_token=PAD))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=PAD, padding_side="left")


def random_gpt2(s: dict, seed: int):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=s["vocab"], n_positions=1024, n_layer=s["n_layer"], n_embd=s["n_embd"],
                     n_head=s["n_head"], bos_token_id=1, eos_token_id=1, pad_token_id=0)
    return GPT2LMHeadModel(cfg).eval()


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(fn, device) -> tuple[float, int, float | None]:
    """(seconds, generated tokens, peak GB) of one call of `fn` (which returns the token count)."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    t0 = time.perf_counter()
    n = fn()
    sync(device)
    dt = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None
    return dt, n, peak


def plain_generate(model, tok, prompts, rcfg: RolloutConfig) -> int:
    """The baseline: tokenize, sample, decode; no log-probs. Returns the generated tokens up to EOS."""
    device = next(model.parameters()).device
    n = 0
    with torch.no_grad():
        for i in range(0, len(prompts), rcfg.batch_size):
            enc = tok(prompts[i : i + rcfg.batch_size], return_tensors="pt", padding=True)
            seqs = model.generate(**{k: v.to(device) for k, v in enc.items()}, do_sample=True,
                                  temperature=rcfg.temperature, top_k=rcfg.top_k, top_p=rcfg.top_p,
                                  max_new_tokens=rcfg.max_new_tokens, pad_token_id=tok.pad_token_id,
                                  eos_token_id=tok.eos_token_id)
            resp = seqs[:, enc["input_ids"].shape[1] :].cpu()
            tok.batch_decode(resp, skip_special_tokens=True)
            n += int(response_mask_from_ids(resp, tok.eos_token_id).sum())
    return n


def ours(model, tok, prompts, rcfg: RolloutConfig, max_prompt: int) -> int:
    return int(generate(model, tok, prompts, rcfg, max_prompt, seed=None).response_mask.sum())


def synthetic_batch(s: dict, n: int, gen: torch.Generator) -> RolloutBatch:
    q = torch.randint(2, s["vocab"], (n, s["prompt"]), generator=gen)
    r = torch.randint(2, s["vocab"], (n, s["response"]), generator=gen)
    return RolloutBatch(prompts=[""] * n, responses=[""] * n, query_ids=q, query_mask=torch.ones_like(q),
                        response_ids=r, response_mask=torch.ones_like(r), logprobs=torch.zeros(n, s["response"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto")
    ap.add_argument("--batch", type=int, help="rollout batch (default: the shape's)")
    ap.add_argument("--repeats", type=int, default=3, help="timed rounds of each; the best is reported")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: steady timings on a shared box)")
    ap.add_argument("--skip-ppo", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    s = SHAPES[args.shape]
    device = torch.device(args.device)
    dtype = compute_dtype(args.precision, device)
    batch = args.batch or s["batch"]
    print(f"shape {args.shape}, device {describe(device, dtype)}, rollout batch {batch}, "
          f"prompt {s['prompt']} + response {s['response']}, torch {torch.__version__}")

    tok = word_tokenizer(s["vocab"])
    rng = random.Random(0)
    prompts = [" ".join(f"w{rng.randrange(2, s['vocab'])}" for _ in range(s["prompt"])) for _ in range(batch)]
    rcfg = RolloutConfig(batch_size=batch, max_new_tokens=s["response"])
    master = random_gpt2(s, seed=0)
    infer = copy.deepcopy(master).to(device=device, dtype=dtype)  # what a rollout worker holds

    runs = {"plain HF generate": lambda: plain_generate(infer, tok, prompts, rcfg),
            "ours (with log-probs)": lambda: ours(infer, tok, prompts, rcfg, s["prompt"])}
    for fn in runs.values():  # warm-up (kernels, allocator)
        measure(fn, device)
    best: dict[str, tuple] = {}
    for _ in range(args.repeats):
        for name, fn in runs.items():
            dt, n, peak = measure(fn, device)
            if name not in best or n / dt > best[name][1] / best[name][0]:
                best[name] = (dt, n, peak)
    for name, (dt, n, peak) in best.items():
        mem = f", peak {peak:.2f} GB" if peak is not None else ""
        print(f"rollout {name:24s} {n / dt:10.0f} tok/s ({n} tokens in {dt:.3f} s){mem}")
    (d0, n0, p0), (d1, n1, p1) = best["plain HF generate"], best["ours (with log-probs)"]
    print(f"ratio ours/plain tok/s: {(n1 / d1) / (n0 / d0):.3f}x"
          + (f"; peak memory ours/plain: {p1 / p0:.3f}x" if p0 else " (peak memory: CUDA only)"))
    del infer

    if args.skip_ppo:
        return
    policy = master.to(device)  # fp32 master weights
    vh = ValueHead(hidden_size(policy)).to(device)
    cfg = PPOConfig(batch_size=s["ppo_batch"], minibatch_size=s["minibatch"], epochs=1, lr=1e-6)
    learner = PPOLearner(policy, frozen_reference(policy), vh, tok, cfg, dtype=dtype)
    gen = torch.Generator().manual_seed(0)
    b = synthetic_batch(s, s["ppo_batch"], gen)
    scores = torch.randn(s["ppo_batch"], generator=gen)
    learner.step(b, scores)  # warm-up
    times = []
    for _ in range(args.repeats):
        dt, _, peak = measure(lambda: learner.step(b, scores) and 0, device)
        times.append((dt, peak))
    dt, peak = min(times)
    mem = f", peak {peak:.2f} GB" if peak is not None else ""
    print(f"PPO step B={s['ppo_batch']} minibatch {s['minibatch']} 1 epoch seq {s['prompt'] + s['response']}: "
          f"{dt:.3f} s{mem}")


if __name__ == "__main__":
    main()
