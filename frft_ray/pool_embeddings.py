"""The preference pool's embeddings, and their disk cache.

The pool is large and fixed, so its embeddings are computed once and cached on disk, keyed by a
fingerprint of the pairs and the `embed` mode (`pool_fingerprint`) and by the embedding model's
identity and dtype (`embedding.embedder_identity`), one file per side (chosen, rejected, prompt). Only the sides
the filter strategy compares are embedded (`strategy_sides`: `chosen` alone for the default, about
half the pool's distinct texts); another side is embedded and added to the entry the first time
something reads it. The caller of `cached_pool_embeddings` supplies `compute_fn(texts) -> array`
(called once per miss, with the missing sides' distinct texts in first-occurrence order), so the
same cache serves the run's embedder actors (`actors.embedder.EmbedderPool.embed`) or an
in-process model.

The arrays it returns are read-only memmaps of the cache files, also right after a miss (written,
then mapped back), so the driver does not hold the pool's vectors in its own memory: 160k pairs
are 0.74 GB of fp32 vectors (three sides), 1M pairs 4.6 GB. Selection reads them a block at a time
(`pool_scan.HostSide`). Files are replaced whole (a new file renamed into place), never rewritten
in place: truncating a mapped file would fault (SIGBUS) in every process mapping it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from frft_ray.data.records import PreferencePair
from frft_ray.embedding import EmbeddingError, EmbedMode, _check_mode, dedup_texts, embedder_identity, side_texts
from frft_ray.run_state import atomic_write_text
from frft_ray.similarity import normalise_rows
from frft_ray.strategies import POOL_PARTS, get_strategy

if TYPE_CHECKING:
    from frft_ray.config import FilterConfig

CACHE_FORMAT = 2  # bump when the on-disk layout or text composition changes (2: one file per side)


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


# load(sides) -> (arrays of those sides, the sides that had to be embedded rather than read)
SideLoader = Callable[[Sequence[str]], "tuple[dict[str, np.ndarray], list[str]]"]


class PoolEmbeddings:
    """Embeddings of the preference pool, row i belonging to pair i, one [N, d] array per side
    (`chosen`, `rejected`, `prompt`). Rows are L2-normalised.

    Built from arrays (`PoolEmbeddings(chosen, rejected, prompt)`, each side optional) or by
    `cached_pool_embeddings`, which passes `load`: a side that is read and was not given is loaded
    (or embedded and cached) then, so a run embeds only the sides its strategy compares. Pickled
    (e.g. `ray.put`), it carries the sides read so far and no loader."""

    def __init__(self, chosen=None, rejected=None, prompt=None, *, n: int | None = None,
                 load: SideLoader | None = None, fingerprint: str = "", model: str = "", embed: str = "response"):
        self._sides: dict[str, np.ndarray] = {}
        self._load, self.fingerprint, self.model, self.embed = load, fingerprint, model, embed
        self.embedded: set[str] = set()  # sides computed (not read from the cache) by this object's loader
        given = {k: v for k, v in zip(POOL_PARTS, (chosen, rejected, prompt)) if v is not None}
        self.n = n if n is not None else (len(next(iter(given.values()))) if given else None)
        if self.n is None:
            raise EmbeddingError("PoolEmbeddings needs at least one side or the pool size n")
        for name, a in given.items():
            self._add(name, a)

    def _add(self, name: str, a) -> None:
        dims = {b.shape[1] for b in self._sides.values()}
        if getattr(a, "ndim", 0) != 2 or a.shape[0] != self.n or (dims and a.shape[1] not in dims):
            raise EmbeddingError(f"PoolEmbeddings: side {name!r} must be [{self.n}, dim] like the other sides, "
                                 f"got shape {getattr(a, 'shape', None)}")
        self._sides[name] = a

    def preload(self, names: Sequence[str]) -> "PoolEmbeddings":
        """Have these sides now; those not cached are embedded together, in one call. Returns self."""
        missing = [s for s in dict.fromkeys(names) if s not in self._sides]
        if not missing:
            return self
        bad = [s for s in missing if s not in POOL_PARTS]
        if bad:
            raise EmbeddingError(f"no pool side {bad[0]!r}; sides are {POOL_PARTS}")
        if self._load is None:
            raise EmbeddingError(f"pool embeddings of side(s) {missing} were not loaded (loaded: {self.loaded})")
        arrays, embedded = self._load(missing)
        for s in missing:
            self._add(s, arrays[s])
        self.embedded.update(embedded)
        return self

    def side(self, name: str) -> np.ndarray:
        """One side's [N, d] array, loaded the first time it is asked for."""
        return self.preload([name])._sides[name]

    chosen = property(lambda self: self.side("chosen"))
    rejected = property(lambda self: self.side("rejected"))
    prompt = property(lambda self: self.side("prompt"))

    @property
    def loaded(self) -> tuple[str, ...]:
        return tuple(s for s in POOL_PARTS if s in self._sides)

    @property
    def from_cache(self) -> bool:
        """True when every side loaded so far came from the cache (none was embedded by this object)."""
        return not self.embedded

    def __len__(self) -> int:
        return self.n

    @property
    def dim(self) -> int:
        first = next(iter(self._sides.values()), None)
        return (first if first is not None else self.side("chosen")).shape[1]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_load": None}


def cache_key(fingerprint: str, model_id: str) -> str:
    return hashlib.sha256(f"{fingerprint}|{model_id}".encode()).hexdigest()[:32]


def _distinct_texts(pairs: Sequence[PreferencePair], mode: EmbedMode,
                    sides: Sequence[str]) -> tuple[list[str], np.ndarray]:
    return dedup_texts([t for s in sides for t in side_texts(pairs, mode, s)])


def _compute(pairs: Sequence[PreferencePair], mode: EmbedMode, compute_fn: Callable | None,
             sides: Sequence[str] = POOL_PARTS) -> dict[str, np.ndarray]:
    """Embed every distinct text of these sides once (prompts and responses repeat across pairs and
    sides), then scatter back."""
    texts, inverse = _distinct_texts(pairs, mode, sides)
    if compute_fn is None:
        raise EmbeddingError(f"pool sides {list(sides)} are not in the cache and no embedder was given")
    emb = np.asarray(compute_fn(texts))
    if emb.ndim != 2 or emb.shape[0] != len(texts) or emb.shape[1] == 0:
        raise EmbeddingError(
            f"compute_fn returned shape {emb.shape} for {len(texts)} texts; expected ({len(texts)}, dim)"
        )
    if not np.all(np.isfinite(emb)):
        raise EmbeddingError("compute_fn returned NaN or infinite embeddings")
    emb = normalise_rows(emb)
    n = len(pairs)
    return {name: emb[inverse[i * n : (i + 1) * n]] for i, name in enumerate(sides)}


def _read_meta(folder: Path, fingerprint: str, model_id: str, n: int) -> dict | None:
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    ok = meta.get("fingerprint") == fingerprint and meta.get("model") == model_id and meta.get("n") == n
    return meta if ok else None


def _read_side(folder: Path, name: str, meta: dict | None) -> np.ndarray | None:
    """One cached side as a read-only memmap, or None when missing, partial or of the wrong shape."""
    if meta is None:
        return None
    try:
        a = np.load(folder / f"{name}.npy", mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return None
    return a if a.shape == (meta["n"], meta.get("dim")) and a.dtype == np.float32 else None


def _save_npy(path: Path, a: np.ndarray) -> None:
    """Write `path` through a temporary sibling renamed into place (atomic on one filesystem). A file
    another process has mapped keeps its old contents: the rename gives the path a new inode."""
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:  # np.save(name) would append ".npy" to the temporary name
            np.save(f, a, allow_pickle=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write(folder: Path, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """Add these sides to the entry (each file replaced whole, then the meta); a meta that no longer
    matches (an old format, another pool) drops the entry's other sides first."""
    folder.mkdir(parents=True, exist_ok=True)
    old = _read_meta(folder, meta["fingerprint"], meta["model"], meta["n"])
    if old is None or old.get("dim") != meta["dim"]:
        (folder / "meta.json").unlink(missing_ok=True)  # a stale entry: its sides are not read until it is rewritten
        for f in folder.glob("*.npy"):
            if f.stem not in arrays:
                f.unlink(missing_ok=True)
    for name, a in arrays.items():
        _save_npy(folder / f"{name}.npy", a)
    atomic_write_text(folder / "meta.json", json.dumps(meta, indent=1))


class _CacheLoader:
    """`PoolEmbeddings`' loader for `cached_pool_embeddings`: each side from the cache entry, else
    embedded (all missing sides in one `compute_fn` call) and added to the entry."""

    def __init__(self, pairs, cfg: "FilterConfig", compute_fn, fingerprint: str, model_id: str):
        self.pairs, self.mode, self.compute_fn = pairs, cfg.embed, compute_fn
        self.fingerprint, self.model_id, self.model_name = fingerprint, model_id, cfg.embedding_model
        self.folder = Path(cfg.cache_dir).expanduser() / cache_key(fingerprint, model_id)

    def _meta(self) -> dict | None:
        return _read_meta(self.folder, self.fingerprint, self.model_id, len(self.pairs))

    def _cached(self, names: Sequence[str]) -> dict[str, np.ndarray]:
        meta = self._meta()
        return {s: a for s in names if (a := _read_side(self.folder, s, meta)) is not None}

    def missing(self, names: Sequence[str]) -> list[str]:
        cached = self._cached(names)
        return [s for s in names if s not in cached]

    def __call__(self, names: Sequence[str]) -> tuple[dict[str, np.ndarray], list[str]]:
        out = self._cached(names)
        missing = [s for s in names if s not in out]
        if missing:
            arrays = _compute(self.pairs, self.mode, self.compute_fn, missing)
            _write(self.folder, arrays, {"format": CACHE_FORMAT, "fingerprint": self.fingerprint,
                                         "model": self.model_id, "model_name": self.model_name, "embed": self.mode,
                                         "n": len(self.pairs), "dim": int(arrays[missing[0]].shape[1])})
            meta = self._meta()
            for s in missing:  # map the written files back: the driver then holds no copy
                mapped = _read_side(self.folder, s, meta)
                out[s] = arrays[s] if mapped is None else mapped
        return out, missing


def strategy_sides(cfg: "FilterConfig") -> tuple[str, ...]:
    """The pool sides `cfg.strategy` compares with the generations (plus the prompt side when it matches prompts)."""
    s = get_strategy(cfg.strategy)
    return s.sides + (("prompt",) if s.needs_prompt_embeddings else ())


def texts_to_embed(pairs: Sequence[PreferencePair], cfg: "FilterConfig",
                   sides: Sequence[str] | None = None, precision: str = "fp32") -> list[str]:
    """What `cached_pool_embeddings(pairs, cfg, compute_fn, sides)` would pass to `compute_fn` now: the
    distinct texts of the sides not in the cache ([] when all are), so a caller can start embedding
    them early and hand the result over then (`phases.PoolEmbeddingCache.prefetch`). `precision`: as there."""
    if not pairs:
        return []
    loader = _CacheLoader(pairs, cfg, None, pool_fingerprint(pairs, cfg.embed),
                          embedder_identity(cfg.embedding_model, precision))
    missing = loader.missing(strategy_sides(cfg) if sides is None else sides)
    return _distinct_texts(pairs, cfg.embed, missing)[0] if missing else []


def cached_pool_embeddings(
    pairs: Sequence[PreferencePair],
    cfg: "FilterConfig",
    compute_fn: Callable[[list[str]], np.ndarray] | None,
    sides: Sequence[str] | None = None,
    precision: str = "fp32",
) -> PoolEmbeddings:
    """Pool embeddings from `cfg.cache_dir`, computing (and caching) what is missing with `compute_fn`.

    The entry is `<cache_dir>/<key>/meta.json` plus one `<side>.npy` per side embedded so far, where
    key hashes the pool fingerprint (ids, texts, `cfg.embed`), the model identity of
    `cfg.embedding_model` and `precision`, the dtype `compute_fn` embeds in ('fp32' or 'bf16', the
    resolved `filter.embed_precision`). `sides` (default: those `cfg.strategy` compares, `strategy_sides`) are
    read or embedded now, with one `compute_fn` call for the distinct texts of all the missing ones;
    any other side is read or embedded the first time it is asked for. Each side is a read-only
    memmap of its cache file, also right after a miss.
    """
    if not pairs:
        raise EmbeddingError("cannot embed an empty preference pool (0 pairs)")
    fingerprint = pool_fingerprint(pairs, cfg.embed)
    model_id = embedder_identity(cfg.embedding_model, precision)
    loader = _CacheLoader(pairs, cfg, compute_fn, fingerprint, model_id)
    emb = PoolEmbeddings(n=len(pairs), load=loader, fingerprint=fingerprint, model=model_id, embed=cfg.embed)
    return emb.preload(strategy_sides(cfg) if sides is None else sides)
