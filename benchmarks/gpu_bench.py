"""GPU phase benchmark: each phase of an FRFT run at GPT-2-medium shape, against references measured in the same run.

Inputs are offline and random: a GPT-2 of the chosen shape with random weights and a word-level
tokenizer of the model's full vocabulary (tokens `w0` .. `wN`), so prompts are exactly `--prompt`
tokens and responses run to `--response` tokens (EOS is one token in 50k). Phases and their reference:

- `matmul`:  bf16 [8192 x 8192] @ [8192 x 8192], the chip's achievable peak for the TFLOP/s ratios;
- `rollout`: `frft_ray.rollout.generate` (log-probs included) against plain HF `generate` alone, and
             against `generate` plus one log-prob forward (what plain HF costs when PPO needs the
             log-probs), same model, dtype, prompts and sampling, at each `--rollout-batch`; tok/s and peak memory;
- `ppo`:     one `PPOLearner.step` (B, minibatch, micro-batch, 1 epoch) in the run's precision; achieved TFLOP/s from
             10 * params * tokens (two scoring forwards + forward/backward) against `matmul`;
- `bt`:      Bradley-Terry fit (`frft_ray.algorithms.bt.fit_reward_model`), pairs/s;
- `embed`:   Sentence-BERT sentences/s (fp32 and fp16) with the model in `--embedder`.

Selection has its own benchmark (benchmarks/filter_bench.py). Every phase prints one line and the whole result goes to `--json`. Runs on CPU too (`--device cpu
--shape tiny`), which is how it is tested before a GPU run.
"""

from __future__ import annotations

import argparse
import json
import time
from contextlib import contextmanager

import torch

SHAPES = {
    "tiny": dict(n_layer=2, n_embd=64, n_head=4, vocab_size=2048),
    "gpt2-small": dict(n_layer=12, n_embd=768, n_head=12, vocab_size=50257),
    "gpt2-medium": dict(n_layer=24, n_embd=1024, n_head=16, vocab_size=50257),
}


def word_tokenizer(vocab_size: int, max_len: int):
    """A word-level tokenizer over `w0` .. `w{V-2}` plus EOS: every id decodes, every word is one token."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(vocab_size - 1)}
    vocab["<|endoftext|>"] = vocab_size - 1
    tk = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                   padding_side="left", truncation_side="left", model_max_length=max_len)


def random_texts(n: int, words: int, vocab: int, seed: int) -> list[str]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab - 1, (n, words), generator=g)
    return [" ".join(f"w{i}" for i in row.tolist()) for row in ids]


class Bench:
    def __init__(self, args):
        self.a = args
        self.device = torch.device(args.device)
        from frft_ray.devices import compute_dtype

        self.dtype = compute_dtype(args.precision, self.device)
        self.shape = SHAPES[args.shape]
        self.tok = word_tokenizer(self.shape["vocab_size"], args.prompt + args.response)
        self.results: dict[str, dict] = {}

    # -------------------------------------------------------------- helpers
    def sync(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()

    @contextmanager
    def peak(self, out: dict, key: str = "peak_gb"):
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        yield
        if self.device.type == "cuda":
            out[key] = round(torch.cuda.max_memory_allocated() / 2**30, 2)

    def policy(self, seed: int = 0):
        from transformers import GPT2Config, GPT2LMHeadModel

        torch.manual_seed(seed)
        cfg = GPT2Config(**self.shape, n_positions=max(1024, self.a.prompt + self.a.response),
                         bos_token_id=self.tok.eos_token_id, eos_token_id=self.tok.eos_token_id,
                         pad_token_id=self.tok.pad_token_id)
        from frft_ray.models import fuse_activations

        with self.device:  # initialise on the device: seconds instead of a minute for 355M parameters on CPU
            return fuse_activations(GPT2LMHeadModel(cfg))  # as the project's loaders do

    def report(self, name: str, res: dict) -> None:
        self.results[name] = res
        print(f"{name:8s} " + " | ".join(f"{k}={v}" for k, v in res.items()), flush=True)

    # -------------------------------------------------------------- phases
    def matmul(self) -> None:
        n = 8192 if self.device.type == "cuda" else 1024
        dt = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        x = torch.randn(n, n, device=self.device, dtype=dt)
        for _ in range(3):
            x @ x
        reps = 20 if self.device.type == "cuda" else 3
        t0 = self.sync()
        for _ in range(reps):
            x @ x
        s = (self.sync() - t0) / reps
        self.report("matmul", {"shape": f"{n}^3 {str(dt).split('.')[-1]}", "tflops": float(f"{2 * n**3 / s / 1e12:.3g}")})

    def rollout(self) -> None:
        from frft_ray.config import RolloutConfig
        from frft_ray.rollout import generate, response_mask_from_ids

        a, tok = self.a, self.tok
        model = self.policy().to(self.dtype).eval()
        prompts = random_texts(a.rollout_prompts, a.prompt, self.shape["vocab_size"], seed=1)
        for bs in a.rollout_batch:
            cfg = RolloutConfig(batch_size=bs, max_new_tokens=a.response, temperature=1.0)

            @torch.no_grad()
            def plain(prompts, logprobs=False):  # logprobs: one extra forward, what plain HF costs when PPO needs them
                n = 0
                for i in range(0, len(prompts), bs):
                    enc = tok(prompts[i : i + bs], return_tensors="pt", padding=True).to(self.device)
                    out = model.generate(**enc, do_sample=True, top_k=0, top_p=1.0, temperature=1.0,
                                         max_new_tokens=a.response, pad_token_id=tok.pad_token_id,
                                         eos_token_id=tok.eos_token_id)
                    P, R = enc["input_ids"].shape[1], out.shape[1] - enc["input_ids"].shape[1]
                    n += int(response_mask_from_ids(out[:, P:], tok.eos_token_id).sum())
                    if logprobs:
                        mask = torch.cat([enc["attention_mask"], torch.ones_like(out[:, P:])], dim=1)
                        z = model(input_ids=out, attention_mask=mask, logits_to_keep=R + 1).logits[:, :-1].float()
                        lp = z.gather(-1, out[:, P:, None]).squeeze(-1) - torch.logsumexp(z, -1)
                        float(lp.sum())
                        del z, lp
                return n

            def ours(prompts):
                return int(generate(model, tok, prompts, cfg, a.prompt, seed=0).response_mask.sum())

            res = {"batch": bs}
            for name, fn in (("plain", plain), ("plain_lp", lambda p: plain(p, logprobs=True)), ("ours", ours)):
                fn(prompts[:bs]) if a.warmup else None  # one batch: kernels, allocator
                with self.peak(res, f"{name}_peak_gb"):
                    t0 = self.sync()
                    n = fn(prompts)
                    res[f"{name}_tok_s"] = round(n / (self.sync() - t0))
            res["ratio_tok_s"] = round(res["ours_tok_s"] / res["plain_tok_s"], 2)  # against generate alone
            res["ratio_tok_s_lp"] = round(res["ours_tok_s"] / res["plain_lp_tok_s"], 2)  # against generate + log-probs
            if "ours_peak_gb" in res:
                res["ratio_peak"] = round(res["ours_peak_gb"] / max(res["plain_peak_gb"], 1e-9), 2)
            self.report(f"rollout{bs}", res)
        try:
            import vllm  # noqa: F401

            print("rollout  vllm installed: scripts/gpu_check.sh's vLLM step compares it")
        except ImportError:
            print("rollout  vllm not installed: vLLM comparison skipped")
        del model

    def ppo(self) -> None:
        from frft_ray.algorithms.ppo_update import PPOLearner
        from frft_ray.config import PPOConfig, RolloutConfig
        from frft_ray.models import ValueHead, frozen_reference
        from frft_ray.rollout import generate

        a, tok = self.a, self.tok
        policy = self.policy()
        params = sum(p.numel() for p in policy.parameters())
        sampler = frozen_reference(policy).to(self.dtype)
        prompts = random_texts(a.ppo_batch, a.prompt, self.shape["vocab_size"], seed=2)
        batch = generate(sampler, tok, prompts, RolloutConfig(batch_size=a.ppo_batch, max_new_tokens=a.response), a.prompt, seed=0)
        del sampler
        ref = frozen_reference(policy)
        scores = torch.randn(a.ppo_batch)
        tokens = a.ppo_batch * (a.prompt + a.response)
        for micro in a.ppo_micro:  # one learner per micro-batch size, same batch and weights
            head = ValueHead(self.shape["n_embd"]).to(self.device)
            cfg = PPOConfig(batch_size=a.ppo_batch, minibatch_size=a.ppo_minibatch, micro_batch_size=micro or None,
                            epochs=1, lr=1e-6)
            learner = PPOLearner(policy, ref, head, tok, cfg, dtype=self.dtype)
            learner.step(batch, scores)  # warm-up: optimizer state, kernels
            res = {"B": a.ppo_batch, "minibatch": a.ppo_minibatch, "micro": micro or a.ppo_minibatch,
                   "seq": a.prompt + a.response, "dtype": str(self.dtype)}
            with self.peak(res):
                t0 = self.sync()
                for _ in range(a.ppo_steps):
                    learner.step(batch, scores)
                s = (self.sync() - t0) / a.ppo_steps
            res.update(step_s=round(s, 3), tflops=float(f"{10 * params * tokens / s / 1e12:.3g}"), params_m=round(params / 1e6))
            if "matmul" in self.results:
                res["of_matmul"] = round(res["tflops"] / self.results["matmul"]["tflops"], 3)
            self.report(f"ppo_micro{res['micro']}", res)
            del learner, head

    def bt(self) -> None:
        from transformers import GPT2Config, GPT2ForSequenceClassification

        from frft_ray.algorithms.bt import fit_reward_model
        from frft_ray.config import RewardConfig
        from frft_ray.data.records import PreferencePair

        a, tok = self.a, self.tok
        torch.manual_seed(0)
        cfg = GPT2Config(**self.shape, n_positions=1024, num_labels=1, pad_token_id=tok.pad_token_id,
                         bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)
        from frft_ray.models import fuse_activations

        with self.device:
            rm = fuse_activations(GPT2ForSequenceClassification(cfg))
        half = (a.prompt + a.response) // 2
        n = a.bt_batch * a.bt_steps
        p, c, r = (random_texts(n, half, self.shape["vocab_size"], seed=s) for s in (3, 4, 5))
        pairs = [PreferencePair(id=str(i), prompt=p[i], chosen=c[i], rejected=r[i], source="bench") for i in range(n)]
        rcfg = RewardConfig(batch_size=a.bt_batch)
        kw = dict(epochs=1.0, lr=1e-5, max_length=a.prompt + a.response, progress=False, dtype=self.dtype)
        fit_reward_model(rm, tok, pairs[: a.bt_batch * 2], None, rcfg, **kw)  # warm-up
        res = {"batch": a.bt_batch, "length": a.prompt + a.response}
        with self.peak(res):
            t0 = self.sync()
            fit_reward_model(rm, tok, pairs, None, rcfg, **kw)
            res["pairs_s"] = round(n / (self.sync() - t0), 1)
        self.report("bt", res)

    def embed(self) -> None:
        from frft_ray.embedding import load_embedder

        texts = random_texts(self.a.embed_texts, 40, 2000, seed=6)
        model = load_embedder(self.a.embedder, device=str(self.device))
        res = {"texts": len(texts)}
        for name, dt in (("fp32", torch.float32), ("fp16", torch.float16)):
            if dt == torch.float16 and self.device.type != "cuda":
                continue
            model.to(dt)
            model.encode(texts[:256], batch_size=256)
            with self.peak(res, f"{name}_peak_gb"):
                t0 = self.sync()
                model.encode(texts, batch_size=256, convert_to_numpy=True)
                res[f"{name}_sent_s"] = round(len(texts) / (self.sync() - t0))
        self.report("embed", res)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    ap.add_argument("--shape", default="gpt2-medium", choices=sorted(SHAPES))
    ap.add_argument("--phases", default="matmul,rollout,ppo,bt,embed")
    ap.add_argument("--prompt", type=int, default=384, help="prompt tokens")
    ap.add_argument("--response", type=int, default=128, help="response tokens")
    ap.add_argument("--rollout-batch", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--rollout-prompts", type=int, default=256)
    ap.add_argument("--ppo-batch", type=int, default=128)
    ap.add_argument("--ppo-minibatch", type=int, default=32)
    ap.add_argument("--ppo-micro", type=int, nargs="+", default=[8, 0],
                    help="ppo.micro_batch_size values to time, each in turn (0: the whole minibatch)")
    ap.add_argument("--ppo-steps", type=int, default=2)
    ap.add_argument("--bt-batch", type=int, default=32)
    ap.add_argument("--bt-steps", type=int, default=10)
    ap.add_argument("--embed-texts", type=int, default=20_000)
    ap.add_argument("--embedder", default="bundled", help="Sentence-BERT: 'bundled' or a folder")
    ap.add_argument("--no-warmup", dest="warmup", action="store_false")
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args(argv)
    b = Bench(a)
    name = torch.cuda.get_device_name() if b.device.type == "cuda" else "cpu"
    print(f"device {name} | torch {torch.__version__} | shape {a.shape} | precision {a.precision} -> {b.dtype}")
    failed = []
    for phase in a.phases.split(","):
        try:
            getattr(b, phase)()
        except Exception as e:  # one phase failing must not hide the others' numbers
            failed.append(phase)
            print(f"{phase:8s} FAILED: {type(e).__name__}: {e}", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"device": name, "args": vars(a), "results": b.results, "failed": failed}, f, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
