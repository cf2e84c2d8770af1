"""Build, load and save the policy, its frozen reference, the value head and the reward model.

A model is named by `models.policy` / `models.reward`: `tiny` (built offline from a small GPT-2
config and a byte-level BPE tokenizer trained on the run's own text), any HF hub name, or a local
folder. Weights are read and written as safetensors only. A checkpoint folder carries the run
config it was made with (`frft_config.yaml`) and a `meta.json` (kind, version, metrics), and is
written whole or not at all (`atomic_folder`: a temporary folder renamed into place). A hub name
that is not cached while offline fails at start, naming the key (`check_model_sources`).

Also the text-to-tensor pieces the forward passes share: `position_ids_from_mask` (the one place
this package builds position ids; HF `generate` builds its own), `rm_inputs`, and `rm_forward`
(the one RM forward: `score`, BT fitting and the serve scorer all call it).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch
from torch import nn

from frft_ray.config import ConfigError, ModelsConfig, RunConfig, dump_config

PAD, EOS = "<|pad|>", "<|endoftext|>"
META_FILE, CONFIG_FILE, VALUE_HEAD_FILE = "meta.json", "frft_config.yaml", "value_head.safetensors"


def train_tokenizer(texts: Iterable[str], vocab_size: int, model_max_length: int):
    """A byte-level BPE tokenizer trained on `texts`, left-padded for generation."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[PAD, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=EOS,
        eos_token=EOS,
        pad_token=PAD,
        padding_side="left",
        truncation_side="left",
        model_max_length=model_max_length,
    )


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    if tok.pad_token is None:  # GPT-2 and many causal LMs ship without one
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    tok.truncation_side = "left"
    return tok


def check_model_sources(mcfg: ModelsConfig) -> None:
    """Fail at start, naming the key, when `models.policy` or `models.reward` names a model this process
    cannot load: a folder without config.json, or a hub name that is not in the local Hugging Face cache
    while the hub is offline (the default; a lookup would otherwise end in a raw OSError deep in a load)."""
    for key, name in (("models.policy", mcfg.policy), ("models.reward", mcfg.reward)):
        if name != "tiny":
            _check_model_source(key, name)


def _check_model_source(key: str, name: str) -> None:
    from huggingface_hub import constants, try_to_load_from_cache

    folder = Path(name).expanduser()
    if folder.exists() or name.startswith((".", "/", "~")):
        if not (folder / "config.json").is_file():
            raise ConfigError(f"{key}={name}: no model folder there (config.json missing); point it at a folder "
                              "written by save_pretrained, or use a Hugging Face hub name")
        return
    offline = {os.environ.get(v, "").upper() for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")} & {"1", "ON", "YES", "TRUE"}
    if not offline:
        return  # transformers downloads it (and says so itself if it cannot)
    try:
        cached = try_to_load_from_cache(name, "config.json")
    except ValueError:  # not a valid repo id (huggingface_hub's HFValidationError)
        cached = None
    if not isinstance(cached, str):
        raise ConfigError(
            f"{key}={name}: not a local folder, and not in the Hugging Face cache ({constants.HF_HUB_CACHE}; "
            f"looked up {name}/config.json) while the hub is offline (HF_HUB_OFFLINE=1). Pre-download it on a "
            f"machine with network (`hf download {name}`, into the same cache or with HF_HUB_CACHE set), or set "
            f"{key} to a local folder holding config.json and safetensors weights")


def _tiny_gpt2_config(tok, mcfg: ModelsConfig, **extra):
    from transformers import GPT2Config

    t = mcfg.tiny
    return GPT2Config(
        vocab_size=len(tok),
        n_positions=t.n_positions,
        n_layer=t.n_layer,
        n_embd=t.n_embd,
        n_head=t.n_head,
        bos_token_id=tok.eos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        activation_function=FUSED_GELU,
        **extra,
    )


FUSED_GELU = "gelu_pytorch_tanh"


def fuse_activations(model):
    """Swap GPT-2's `gelu_new` (the tanh GELU as eight separate tensor ops) for torch's fused
    `gelu(approximate="tanh")`: the same function up to float rounding, one kernel instead of eight,
    and backward keeps one [tokens, 4h] tensor per layer instead of about six. Measured on an H200 at
    GPT-2-medium shape, those saved intermediates were about half of PPO's activation memory. The
    config is updated too, so checkpoints saved from the model load fused. Returns the model."""
    from transformers.activations import ACT2CLS, NewGELUActivation

    fused_cls = ACT2CLS[FUSED_GELU]
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is NewGELUActivation:
                setattr(module, name, fused_cls())
    if getattr(model.config, "activation_function", None) == "gelu_new":
        model.config.activation_function = FUSED_GELU
    return model


def build_policy(mcfg: ModelsConfig, tok, seed: int = 0):
    """The policy: a fresh tiny GPT-2 for `tiny`, else an HF causal LM by name or path."""
    from transformers import AutoModelForCausalLM, GPT2LMHeadModel

    if mcfg.policy == "tiny":
        torch.manual_seed(seed)
        return GPT2LMHeadModel(_tiny_gpt2_config(tok, mcfg))
    _check_model_source("models.policy", mcfg.policy)
    model = AutoModelForCausalLM.from_pretrained(
        mcfg.policy, use_safetensors=True, trust_remote_code=mcfg.trust_remote_code
    )
    check_max_length(model, mcfg.max_length, f"models.policy ({mcfg.policy})")
    model.config.pad_token_id = tok.pad_token_id
    return fuse_activations(model)


def build_reward_model(mcfg: ModelsConfig, tok, seed: int = 0):
    """The RM: a sequence classifier with one logit (the reward) read at the last real token."""
    from transformers import AutoModelForSequenceClassification, GPT2ForSequenceClassification

    if mcfg.reward == "tiny":
        torch.manual_seed(seed + 1)
        return GPT2ForSequenceClassification(_tiny_gpt2_config(tok, mcfg, num_labels=1))
    _check_model_source("models.reward", mcfg.reward)
    model = AutoModelForSequenceClassification.from_pretrained(
        mcfg.reward, num_labels=1, use_safetensors=True, trust_remote_code=mcfg.trust_remote_code
    )
    check_max_length(model, mcfg.max_length, f"models.reward ({mcfg.reward})")
    model.config.pad_token_id = tok.pad_token_id
    return fuse_activations(model)


def check_max_length(model, max_length: int, what: str) -> None:
    """Fail at start, naming the keys, when `models.max_length` is longer than a loaded model's position
    table (the config checks the `tiny` preset itself); otherwise a learned position embedding fails
    with an index error deep in an actor."""
    limit = getattr(model.config, "max_position_embeddings", None)
    if isinstance(limit, int) and max_length > limit:
        raise ConfigError(f"models.max_length ({max_length}) exceeds the {limit} positions of {what}; "
                          "lower models.max_length (and max_prompt_tokens / rollout.max_new_tokens)")


def frozen_reference(policy):
    """A frozen copy of the policy for the KL penalty."""
    ref = copy.deepcopy(policy).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


class ValueHead(nn.Module):
    """Per-token value estimate from the policy's last hidden state (shared trunk)."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.summary = nn.Linear(hidden_size, 1)
        nn.init.normal_(self.summary.weight, std=1.0 / (hidden_size + 1))
        nn.init.zeros_(self.summary.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.summary(hidden).squeeze(-1)


def hidden_size(model) -> int:
    cfg = model.config
    return getattr(cfg, "hidden_size", None) or getattr(cfg, "n_embd")


# ---------------------------------------------------------------- checkpoints


@dataclass
class Loaded:
    model: object
    tokenizer: object
    meta: dict


def save_checkpoint(path: str | Path, model, tok, cfg: RunConfig | None, meta: dict, value_head=None,
                    write_extra: Callable[[Path], None] | None = None) -> Path:
    """Write model + tokenizer (safetensors), the run config and meta.json into the folder `path`, atomically:
    everything goes into a temporary folder beside it (`write_extra(folder)` adds the caller's own files),
    which is renamed to `path` only once complete. A crash mid-write leaves the old folder (or none),
    never a half-written one; an old folder at `path` is replaced whole."""
    from safetensors.torch import save_file

    with atomic_folder(path) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        if value_head is not None:
            save_file({k: v.contiguous() for k, v in value_head.state_dict().items()}, str(tmp / VALUE_HEAD_FILE))
        if cfg is not None:
            dump_config(cfg, tmp / CONFIG_FILE)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
        if write_extra is not None:
            write_extra(tmp)
    return Path(path)


@contextmanager
def atomic_folder(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside `path`; on success, flush its files to disk and rename it
    to `path` (an old `path` is moved aside first and removed after). On error, remove it, keep `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        for f in tmp.rglob("*"):
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        old = path.with_name(f".{path.name}.old-{os.getpid()}") if path.exists() or path.is_symlink() else None
        if old is not None:
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old) if old.is_dir() and not old.is_symlink() else old.unlink()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def checkpoint_folder(path: str | Path, what: str) -> Path:
    """`path` as a Path, or FileNotFoundError naming it when it holds no complete checkpoint."""
    path = Path(path)
    missing = [] if (path / "config.json").is_file() else ["config.json"]
    if not any((path / f).is_file() for f in ("model.safetensors", "model.safetensors.index.json")):
        missing.append("model.safetensors")
    if missing:
        raise FileNotFoundError(f"no {what} checkpoint at {path} ({', '.join(missing)} missing)")
    return path


def read_meta(path: str | Path) -> dict:
    f = Path(path) / META_FILE
    return json.loads(f.read_text()) if f.exists() else {}


def load_policy_checkpoint(path: str | Path, trust_remote_code: bool = False, with_value_head: bool = False):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    path = checkpoint_folder(path, "policy")
    model = AutoModelForCausalLM.from_pretrained(path, use_safetensors=True, trust_remote_code=trust_remote_code)
    tok = load_tokenizer(str(path), trust_remote_code)
    out = Loaded(fuse_activations(model), tok, read_meta(path))
    if with_value_head:
        vh = ValueHead(hidden_size(model))
        if (path / VALUE_HEAD_FILE).exists():
            vh.load_state_dict(load_file(str(path / VALUE_HEAD_FILE)))
        out.meta["value_head"] = vh
    return out


def load_reward_checkpoint(path: str | Path, trust_remote_code: bool = False) -> Loaded:
    from transformers import AutoModelForSequenceClassification

    path = checkpoint_folder(path, "reward-model")
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=1, use_safetensors=True, trust_remote_code=trust_remote_code
    ).eval()
    tok = load_tokenizer(str(path), trust_remote_code)
    model.config.pad_token_id = tok.pad_token_id
    return Loaded(fuse_activations(model), tok, read_meta(path))


# ---------------------------------------------------------------- text <-> tensors


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids counted from each row's first real token: cumsum(mask) - 1, clamped at 0.

    The one place position ids are built (RM inputs, SFT batches, the PPO forward). GPT-2-style
    models number positions from the first column, so with left padding a row's outputs would
    otherwise depend on how much padding it got. Padding gets 0 on the left and the last real
    position on the right; padded positions are masked out of attention and their outputs are
    never read, so neither value changes a real token's output.
    """
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def _rm_texts(tok, prompts: list[str], responses: list[str]) -> list[str]:
    """What the RM reads: prompt + response + EOS."""
    return [p + r + tok.eos_token for p, r in zip(prompts, responses)]


def rm_inputs(tok, prompts: list[str], responses: list[str], max_length: int) -> dict:
    """Tokenize prompt+response(+EOS) for the RM, left-padded and left-truncated (the response end is kept)."""
    enc = tok(_rm_texts(tok, prompts, responses), return_tensors="pt", padding=True, truncation=True,
              max_length=max_length)
    enc["position_ids"] = position_ids_from_mask(enc["attention_mask"])
    return enc


def rm_token_ids(tok, prompts: list[str], responses: list[str], max_length: int) -> list[list[int]]:
    """`rm_inputs`'s token ids, unpadded: a fit tokenizes its pairs once, in one call, and pads each
    batch with `rm_collate` (one call per batch was 16% of the demo's initial RM fit)."""
    return tok(_rm_texts(tok, prompts, responses), truncation=True, max_length=max_length)["input_ids"]


def rm_collate(tok, rows: list[list[int]]) -> dict:
    """Rows of `rm_token_ids` as `rm_inputs` gives them: left-padded tensors with position ids."""
    enc = tok.pad({"input_ids": rows}, return_tensors="pt")
    enc["position_ids"] = position_ids_from_mask(enc["attention_mask"])
    return enc


def rm_forward(
    model, tok, prompts: list[str], responses: list[str], max_length: int, *, position_ids: bool = True
) -> torch.Tensor:
    """The RM's reward for each (prompt, response), all in ONE forward pass: shape [n], float32.

    The one RM forward, used by `score`, BT fitting (`algorithms.bt`) and the serve scorer. Callers
    choose the batches (the padding width, hence the exact floats, depends on what is batched
    together), grad mode and train/eval mode; inputs go to the device of the model's parameters
    (works on a DDP wrapper too). `position_ids=False` leaves them out, for models whose forward
    takes none.
    """
    if len(prompts) != len(responses):
        raise ValueError(f"rm_forward: {len(prompts)} prompts but {len(responses)} responses")
    return rm_forward_encoded(model, rm_inputs(tok, prompts, responses, max_length), position_ids=position_ids)


def rm_forward_encoded(model, enc: dict, *, position_ids: bool = True) -> torch.Tensor:
    """`rm_forward` of inputs already encoded (`rm_inputs` or `rm_collate`)."""
    if not position_ids:
        del enc["position_ids"]
    device = next(model.parameters()).device
    return model(**{k: v.to(device) for k, v in enc.items()}).logits.squeeze(-1).float()


@torch.no_grad()
def score(rm, tok, prompts: list[str], responses: list[str], max_length: int, batch_size: int = 64) -> torch.Tensor:
    """RM reward for each (prompt, response), in eval mode, `batch_size` per forward; shape [n], float32, CPU."""
    if len(prompts) != len(responses):
        raise ValueError(f"score: {len(prompts)} prompts but {len(responses)} responses")
    was_training = rm.training
    rm.eval()
    out = []
    for i in range(0, len(prompts), batch_size):
        out.append(rm_forward(rm, tok, prompts[i : i + batch_size], responses[i : i + batch_size], max_length).cpu())
    rm.train(was_training)
    return torch.cat(out) if out else torch.zeros(0)
