"""Rollout sampling: `frft_ray.rollout.generate` (inverse-CDF sampling in a logits processor) against
`generate`'s own sampling (`do_sample=True`, `torch.multinomial`), same policy, prompts and log-prob
recording, measured in the same process, the two taking turns.

Shapes: the demo's tiny policy (2 x 128, vocabulary 2,048) and the same layers with GPT-2's
vocabulary (50,257), 64 prompts of 60 tokens, 48 new tokens; `--device cuda` on a GPU node.
Prints each path's median seconds per rollout and the ratio.

    python benchmarks/sampler_bench.py [--device cpu|cuda] [--rounds 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def rollout(policy, ids, mask, new_tokens: int, ours: bool) -> torch.Tensor:
    """One batch's rollout as `frft_ray.rollout.generate` runs it (`ours`), or with `generate`'s sampling."""
    from transformers import LogitsProcessorList, StoppingCriteriaList

    from frft_ray.rollout import SampledTokenLogprobs, inverse_cdf_sampler

    rec = SampledTokenLogprobs(1.0)
    processors = [rec.processor] + ([inverse_cdf_sampler(1.0, 0, 1.0)] if ours else [])
    out = policy.generate(input_ids=ids, attention_mask=mask, do_sample=not ours, top_k=None, top_p=None,
                          max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=0, eos_token_id=1,
                          logits_processor=LogitsProcessorList(processors),
                          stopping_criteria=StoppingCriteriaList([rec.criterion]))
    return rec.logprobs(out.shape[1] - ids.shape[1])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=48)
    args = ap.parse_args(argv)
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.set_num_threads(args.threads)
    print(f"{args.batch} prompts x 60 tokens, {args.new_tokens} new tokens, {args.device}, "
          f"{args.threads} torch threads, median of {args.rounds} rounds")
    for vocab in (2048, 50257):
        cfg = GPT2Config(vocab_size=vocab, n_positions=256, n_layer=2, n_embd=128, n_head=4, bos_token_id=1,
                         eos_token_id=1, pad_token_id=0)
        torch.manual_seed(0)
        policy = GPT2LMHeadModel(cfg).eval().to(args.device)
        ids = torch.randint(2, vocab, (args.batch, 60), device=args.device)
        mask = torch.ones_like(ids)
        times: dict[bool, list[float]] = {False: [], True: []}
        with torch.no_grad():
            for ours in (False, True):  # warm-up
                rollout(policy, ids, mask, args.new_tokens, ours)
            for _ in range(args.rounds):
                for ours in (False, True):
                    t0 = time.perf_counter()
                    rollout(policy, ids, mask, args.new_tokens, ours)
                    if args.device != "cpu":
                        torch.cuda.synchronize()
                    times[ours].append(time.perf_counter() - t0)
        base, ours = statistics.median(times[False]), statistics.median(times[True])
        print(f"vocab {vocab:>6}: multinomial {base:.3f} s, inverse CDF {ours:.3f} s per rollout: "
              f"{base / ours:.2f}x")


if __name__ == "__main__":
    main()
