"""The vLLM rollout engine (`rollout.engine: vllm`): same batches as the HF path, from vLLM.

A rollout worker (actors/rollout_worker.py) owns one `VLLMEngine`. It generates from token ids that our
own tokenizer made (same left truncation to `max_prompt_tokens` as frft_ray/rollout.py), decodes
with our tokenizer, and returns a `RolloutBatch` with per-token sampling logprobs
(`SamplingParams(logprobs=0)` = the sampled token's logprob only).

Weights: `load_weights(state_dict, version)` takes the learner's HF-named state dict (plain CPU
tensors from the object store), writes it once as safetensors on local shared memory, and has
every vLLM worker load it with the model's own `load_weights` (vLLM's weight-loading API, which
maps HF names and layouts such as GPT-2's Conv1D), through `LLM.collective_rpc` and the
`FRFTWeightLoader` worker extension below. The prefix cache is then reset so no KV block
computed with old weights is reused. Versions only move forward.

Why not vLLM's NCCL/IPC weight-transfer engines: those move weights GPU-to-GPU between a
trainer process and vLLM and need the trainer to hold a transfer engine; here weights already
arrive in this process through Ray's object store, and the API for those engines changed across
vLLM 0.22-0.33. `model.load_weights` is the step every one of them ends in.

Import-guarded: importing this module never imports vllm (CPU installs do not have it); the
engine checks for vllm and a visible CUDA device when it is built and says what to change.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path

import torch

from frft_ray.config import RolloutConfig
from frft_ray.rollout import RolloutBatch, response_mask_from_ids

EXTENSION = "actors.vllm_engine.FRFTWeightLoader"


class VLLMUnavailableError(RuntimeError):
    """`rollout.engine: vllm` was asked for where vLLM cannot run."""


class StaleWeightsError(ValueError):
    """Weights older than the ones the engine already holds."""


def check_vllm_usable() -> None:
    """Raise VLLMUnavailableError naming the fix if vllm is missing or no CUDA device is visible."""
    if importlib.util.find_spec("vllm") is None:
        raise VLLMUnavailableError(
            "rollout.engine is 'vllm' but the vllm package is not installed here. Install the GPU "
            "extra on the rollout nodes (pip install 'frft-ray[vllm]', or use the docker/Dockerfile.gpu "
            "image), or set rollout.engine=hf."
        )
    if not torch.cuda.is_available():
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        raise VLLMUnavailableError(
            "rollout.engine is 'vllm' but this rollout worker sees no CUDA GPU "
            f"(CUDA_VISIBLE_DEVICES={visible!r}). vLLM needs one: set placement.rollout.num_gpus (e.g. 1) so Ray "
            "places the worker on a GPU node, or set rollout.engine=hf."
        )


class FRFTWeightLoader:
    """vLLM worker extension (mixed into every vLLM worker via `worker_extension_cls`).

    Runs inside vLLM's worker process, where `self.model_runner` is that worker's model runner.
    """

    def frft_load_weights(self, path: str) -> int:
        from safetensors import safe_open

        runner = self.model_runner
        model = runner.get_model() if hasattr(runner, "get_model") else runner.model
        with safe_open(path, framework="pt", device="cpu") as f:
            names = list(f.keys())
            model.load_weights(weights=((n, f.get_tensor(n)) for n in names))
        return len(names)


def _shm_dir(nbytes: int) -> str | None:
    """/dev/shm when it is writable and has room (a RAM file: no disk round trip; containers often
    get a small one), else the default temp dir."""
    import shutil

    shm = "/dev/shm"
    if os.path.isdir(shm) and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > 1.2 * nbytes:
        return shm
    return None


def _plain_tensors(state_dict: dict) -> dict:
    """CPU, contiguous, and no two sharing storage (tied embeddings such as GPT-2's lm_head share
    wte's; safetensors refuses shared storage, so later aliases get their own copy)."""
    out, seen = {}, set()
    for name, t in state_dict.items():
        t = t.detach().to("cpu").contiguous()
        ptr = t.untyped_storage().data_ptr()
        if ptr in seen:
            t = t.clone()
        seen.add(t.untyped_storage().data_ptr())
        out[name] = t
    return out


def checkpoint_state_dict(policy_path: str) -> dict:
    """The HF-named weights of a saved policy (its model*.safetensors files), as CPU tensors."""
    from safetensors.torch import load_file

    files = sorted(Path(policy_path).glob("model*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no model*.safetensors in {policy_path}")
    return {k: v for f in files for k, v in load_file(str(f)).items()}


class VLLMEngine:
    """One `vllm.LLM` over a policy checkpoint folder; generate() and load_weights() for a rollout worker."""

    def __init__(
        self,
        policy_path: str,
        cfg: RolloutConfig,
        max_prompt_tokens: int,
        *,
        gpu_share: float = 1.0,
        dtype: str = "auto",
        gpu_memory_utilization: float | None = None,
        enforce_eager: bool = False,
        seed: int = 0,
        **llm_kwargs,
    ):
        check_vllm_usable()
        from vllm import LLM

        from frft_ray.models import load_tokenizer

        self.cfg = cfg
        self.max_prompt_tokens = max_prompt_tokens
        self.tok = load_tokenizer(str(policy_path))
        self.version = 0
        if gpu_memory_utilization is None:
            # A fractional placement.rollout.num_gpus shares the card: take no more than our share.
            share = gpu_share if 0 < gpu_share < 1 else 1.0
            gpu_memory_utilization = round(min(0.85, 0.85 * share), 3)
        self.llm = LLM(
            model=str(policy_path),
            skip_tokenizer_init=True,  # we send token ids and decode with our own tokenizer
            dtype=dtype,
            seed=seed,
            gpu_memory_utilization=gpu_memory_utilization,
            enforce_eager=enforce_eager,
            worker_extension_cls=EXTENSION,
            # Logprobs after temperature (and top-k/top-p), i.e. of the distribution sampled from;
            # frft_ray/rollout.py reports log_softmax(logits / T), the same when top_k=0 and top_p=1.
            logprobs_mode="processed_logprobs",
            **llm_kwargs,
        )

    # ------------------------------------------------------------ generation

    def _sampling_params(self, n: int, greedy: bool, seed: int | None) -> list:
        from vllm import SamplingParams

        cfg = self.cfg
        common = dict(
            max_tokens=cfg.max_new_tokens,
            logprobs=0,  # the sampled token's logprob only
            detokenize=False,
            stop_token_ids=[self.tok.eos_token_id],  # no tokenizer in vLLM: name EOS ourselves
        )
        if greedy:
            common.update(temperature=0.0)
        else:
            common.update(temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k)  # 0 = off, as in HF
        if seed is None:
            return [SamplingParams(**common)] * n
        return [SamplingParams(seed=seed + i, **common) for i in range(n)]

    def generate(
        self, prompts: list[str], greedy: bool = False, seed: int | None = None, policy_version: int | None = None
    ) -> RolloutBatch:
        """One response per prompt, as a RolloutBatch shaped like frft_ray.rollout.generate's."""
        tok = self.tok
        pad, eos = tok.pad_token_id, tok.eos_token_id
        enc = tok(prompts, return_tensors="pt", padding=True, truncation=True, max_length=self.max_prompt_tokens)
        ids = [row[m.bool()].tolist() for row, m in zip(enc["input_ids"], enc["attention_mask"])]
        outs = self.llm.generate(
            [{"prompt_token_ids": x} for x in ids], self._sampling_params(len(ids), greedy, seed), use_tqdm=False
        )
        R = max(1, max(len(o.outputs[0].token_ids) for o in outs))
        resp = torch.full((len(outs), R), pad, dtype=torch.long)
        logprobs = torch.zeros((len(outs), R), dtype=torch.float32)
        for i, o in enumerate(outs):
            c = o.outputs[0]
            toks = list(c.token_ids)
            resp[i, : len(toks)] = torch.tensor(toks, dtype=torch.long)
            for j, t in enumerate(toks):
                logprobs[i, j] = float(c.logprobs[j][t].logprob)
        mask = response_mask_from_ids(resp, eos)
        # Positions after the last generated token hold pad: only real tokens count.
        lengths = torch.tensor([len(o.outputs[0].token_ids) for o in outs])
        mask = mask * (torch.arange(R)[None, :] < lengths[:, None]).long()
        resp = torch.where(mask.bool(), resp, torch.full_like(resp, pad))
        texts = tok.batch_decode(torch.where(resp == eos, pad, resp), skip_special_tokens=True)
        return RolloutBatch(
            prompts=list(prompts),
            responses=texts,
            query_ids=enc["input_ids"],
            query_mask=enc["attention_mask"],
            response_ids=resp,
            response_mask=mask,
            logprobs=logprobs * mask,
            policy_version=self.version if policy_version is None else policy_version,
            meta={"engine": "vllm"},
        )

    # ------------------------------------------------------------ weights

    def load_weights(self, state_dict: dict, version: int) -> int:
        """Load the learner's weights (HF names) into every vLLM worker; returns the version now held.

        Refuses a version older than the one held (StaleWeightsError); the same version reloads.
        """
        from safetensors.torch import save_file

        if version < self.version:
            raise StaleWeightsError(f"vLLM engine holds weights v{self.version}; refusing older v{version}")
        tensors = _plain_tensors(state_dict)
        nbytes = sum(t.numel() * t.element_size() for t in tensors.values())
        with tempfile.TemporaryDirectory(prefix="frft_w_", dir=_shm_dir(nbytes)) as tmp:
            path = str(Path(tmp) / f"policy_v{version}.safetensors")
            save_file(tensors, path)
            counts = self.llm.collective_rpc("frft_load_weights", args=(path,))
        if not counts or any(c != len(tensors) for c in counts):
            raise RuntimeError(f"vLLM workers loaded {counts} tensors, expected {len(tensors)} each")
        self.llm.reset_prefix_cache()  # KV blocks cached under the old weights must not be reused
        self.version = version
        return version
