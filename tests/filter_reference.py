"""The numpy selection that torch replaced (frft_ray at c0e0e6a), kept as the oracle of the equivalence tests.

Same semantics, slow: scores chunk over pool rows, `per_generation` chunks over generation columns
and recomputes the whole [N, G] product for each widening step. Rows are L2-normalised here.
"""

from __future__ import annotations

import numpy as np

from frft_ray.config import FilterConfig
from frft_ray.pool_embeddings import PoolEmbeddings
from frft_ray.similarity import unit_rows
from frft_ray.strategies import get_strategy

SAME_PROMPT_COS = 1.0 - 1e-5
COMBINE = {"either": np.maximum, "both": np.minimum, "prompt_matched": np.maximum}


def merge(name: str, per_side: list[np.ndarray]) -> np.ndarray:
    return per_side[0] if len(per_side) == 1 else COMBINE[name](*per_side)


def aggregate_rows(sim: np.ndarray, how: str, k: int) -> np.ndarray:
    if how == "max":
        return sim.max(axis=1)
    g = sim.shape[1]
    k = min(k, g)
    top = np.partition(sim, g - k, axis=1)[:, g - k :]
    valid = np.isfinite(top)
    return np.where(valid, top, 0.0).sum(axis=1) / np.maximum(valid.sum(axis=1), 1)


def similarity_scores(query, gen, aggregate, k, chunk_size, query_groups=None, gen_groups=None) -> np.ndarray:
    out = np.empty(query.shape[0], dtype=np.float32)
    for start in range(0, query.shape[0], chunk_size):
        stop = start + chunk_size
        sim = unit_rows(query[start:stop], "q") @ gen.T
        if query_groups is not None:
            sim = np.where(query_groups[start:stop, None] == gen_groups[None, :], sim, -np.inf)
        out[start:stop] = aggregate_rows(sim, aggregate, k)
    return out


def pool_scores(pool: PoolEmbeddings, gen, gen_prompt, cfg: FilterConfig, strategy: str, gen_groups=None) -> np.ndarray:
    s = get_strategy(strategy)
    agg = dict(aggregate=cfg.aggregate, k=cfg.aggregate_k, chunk_size=cfg.chunk_size)
    extra = {}
    if s.needs_prompt_embeddings:
        gp = unit_rows(gen_prompt, "gp")
        if gen_groups is None:
            gen_groups = np.concatenate([((gp[i : i + 1024] @ gp.T) >= SAME_PROMPT_COS).argmax(axis=1)
                                         for i in range(0, len(gp), 1024)])
        ids, first = np.unique(gen_groups, return_index=True)
        nearest = ids[(unit_rows(pool.prompt, "p") @ gp[first].T).argmax(axis=1)]
        extra = dict(query_groups=nearest, gen_groups=gen_groups)
    return merge(s.name, [similarity_scores(getattr(pool, side), gen, **agg, **extra) for side in s.sides])


def per_generation_rows(pool: PoolEmbeddings, gen, strategy: str, budget: int, threshold: float,
                        chunk_size: int) -> np.ndarray:
    strat = get_strategy(strategy)
    mats = [unit_rows(getattr(pool, name), name) for name in strat.sides]
    n, g = mats[0].shape[0], gen.shape[0]
    m = min(n, -(-budget // g))
    for _ in range(4):
        best = np.full(n, -np.inf, dtype=np.float32)
        picked = np.zeros(n, dtype=bool)
        for start in range(0, g, chunk_size):
            cols = gen[start : start + chunk_size].T
            sim = merge(strat.name, [mat @ cols for mat in mats])
            top = np.argpartition(-sim, m - 1, axis=0)[:m]
            keep = np.take_along_axis(sim, top, axis=0) >= threshold
            picked[top[keep]] = True
            best = np.maximum(best, sim.max(axis=1))
        if picked.sum() >= budget or m >= n:
            break
        m = min(n, 2 * m)
    rows = np.flatnonzero(picked)
    return rows[np.argsort(-best[rows], kind="stable")][:budget]


def selected_rows(pool: PoolEmbeddings, gen_emb, gen_prompt, cfg: FilterConfig, gen_groups=None):
    """(indices best score first, scores) as `filtering.select_pairs` returned them, for a similarity strategy."""
    gen = unit_rows(gen_emb, "gen")
    scores = pool_scores(pool, gen, gen_prompt, cfg, cfg.strategy, gen_groups)
    if cfg.selection == "per_generation":
        rows = per_generation_rows(pool, gen, cfg.strategy, cfg.budget, cfg.threshold, cfg.chunk_size)
    else:
        rows = np.argsort(-scores, kind="stable")
        if cfg.selection in ("threshold", "threshold_and_budget"):
            rows = rows[scores[rows] >= cfg.threshold]
        if cfg.selection in ("budget", "threshold_and_budget"):
            rows = rows[: cfg.budget]
    return rows[np.argsort(-scores[rows], kind="stable")], scores
