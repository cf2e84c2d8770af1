"""Cosine-similarity primitives for FRFT filtering (used by `strategies` and `filtering`).

All similarities are chunked matrix products over pool rows (`chunk_size` rows of the pool at a
time against all generations), so memory stays at chunk_size x G floats and no Python loop runs
over pairs. `normalise_rows` is the one row normaliser of the package (the embedding cache uses it
too); `unit_rows` is the same after validating its input (2-D, finite). This module imports only
numpy, so the config's strategy check can import the registry without an import cycle.

Aggregation over generations: `max` (the single most similar generation) or `topk_mean` (mean of
the `aggregate_k` most similar, robust to one lucky match; fewer if fewer generations exist).
"""

from __future__ import annotations

import numpy as np

SAME_PROMPT_COS = 1.0 - 1e-5


class FilterError(ValueError):
    """Filtering cannot run on these inputs (empty pool, no generations, mismatched shapes)."""


def normalise_rows(a: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, as float32 (all-zero rows stay zero); no input checks."""
    a = np.asarray(a, dtype=np.float32)
    return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)


def unit_rows(a: np.ndarray, what: str) -> np.ndarray:
    """`a` as L2-normalised float32 rows; a FilterError naming `what` if it is not 2-D or not finite."""
    a = np.asarray(a, dtype=np.float32)
    if a.ndim != 2:
        raise FilterError(f"{what} must be a 2-D array [rows, dim], got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise FilterError(f"{what} contains NaN or infinite values")
    return normalise_rows(a)


def aggregate_rows(sim: np.ndarray, how: str, k: int) -> np.ndarray:
    """Reduce a [rows, G] similarity block to [rows]; -inf entries are masked-out generations."""
    if how == "max":
        return sim.max(axis=1)
    if how != "topk_mean":
        raise FilterError(f"filter.aggregate must be 'max' or 'topk_mean', got {how!r}")
    g = sim.shape[1]
    k = min(k, g)
    top = np.partition(sim, g - k, axis=1)[:, g - k :]
    valid = np.isfinite(top)
    return np.where(valid, top, 0.0).sum(axis=1) / np.maximum(valid.sum(axis=1), 1)


def similarity_scores(
    query: np.ndarray,
    gen: np.ndarray,
    aggregate: str = "max",
    k: int = 5,
    chunk_size: int = 1024,
    query_groups: np.ndarray | None = None,
    gen_groups: np.ndarray | None = None,
    what: str = "query",
) -> np.ndarray:
    """Aggregated cosine similarity of each query row to the generations, chunked over query rows.

    `gen` must be L2-normalised; query rows are normalised chunk by chunk (no full-size copy).
    With `query_groups`/`gen_groups`, row i is compared only with generations whose group equals
    query_groups[i] (the others are masked to -inf before aggregation).
    """
    out = np.empty(query.shape[0], dtype=np.float32)
    for start in range(0, query.shape[0], chunk_size):
        stop = start + chunk_size
        sim = unit_rows(query[start:stop], what) @ gen.T
        if query_groups is not None:
            sim = np.where(query_groups[start:stop, None] == gen_groups[None, :], sim, -np.inf)
        out[start:stop] = aggregate_rows(sim, aggregate, k)
    return out


def group_generations(gen_prompt: np.ndarray, chunk_size: int = 1024) -> np.ndarray:
    """Group id per generation: generations whose prompt embeddings are identical share a group.

    The id is the index of the first generation with that prompt, so ids are stable and exact
    float noise from batching cannot split a prompt into two groups.
    """
    groups = np.empty(gen_prompt.shape[0], dtype=np.int64)
    for start in range(0, gen_prompt.shape[0], chunk_size):
        same = (gen_prompt[start : start + chunk_size] @ gen_prompt.T) >= SAME_PROMPT_COS
        groups[start : start + chunk_size] = same.argmax(axis=1)
    return groups


def nearest_group(pool_prompt: np.ndarray, gen_prompt: np.ndarray, gen_groups: np.ndarray, chunk_size: int) -> np.ndarray:
    """For each pool prompt, the group of the most similar policy prompt (gen_prompt normalised)."""
    ids, first = np.unique(gen_groups, return_index=True)
    rep_prompt = gen_prompt[first]  # one prompt row per group
    out = np.empty(pool_prompt.shape[0], dtype=np.int64)
    for start in range(0, pool_prompt.shape[0], chunk_size):
        sim = unit_rows(pool_prompt[start : start + chunk_size], "pool_emb.prompt") @ rep_prompt.T
        out[start : start + chunk_size] = ids[sim.argmax(axis=1)]
    return out
