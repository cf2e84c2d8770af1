"""FRFT filtering: keep the preference pairs that look like what the policy writes now.

Every pair gets a score under `filter.strategy`, the cosine similarity between its embeddings and
the embeddings of the policy's current generations, aggregated over the generations; then a
selection rule keeps the best-scoring pairs. The strategies (and the baselines) are defined and
registered in `frft_ray.strategies`; the chunked similarity primitives are in `frft_ray.similarity`.

Selection: `threshold` (score >= threshold), `budget` (the `budget` best),
`threshold_and_budget` (over the threshold, capped at the budget by best score), or
`per_generation` (ours, the default): every generation brings its own ceil(budget / G) nearest
pairs over the threshold, so the selection follows the *distribution* of what the policy writes.
With a global score, a rare mode of the policy (say 5% stock refusals, which match pool refusals
at cosine ~1.0) would fill the whole budget with near-duplicates of that one mode; per generation,
it gets its 5% share.

Baselines (`all`, `random-k`) ignore the selection rule and need no embeddings:
`random_selection(pairs, budget, seed)` is the random-refit arm's draw, and `select_pairs` with
strategy `random-k` returns the same pairs (reported best first, with `chosen` scores for
diagnostics, when generations are given).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

import numpy as np

from frft_ray.data.records import PreferencePair
from frft_ray.embedding import PoolEmbeddings
from frft_ray.similarity import FilterError, unit_rows
from frft_ray.strategies import Strategy, baselines, check_combination, get_strategy, pool_scores, similarity_strategies

if TYPE_CHECKING:
    from frft_ray.config import FilterConfig

__all__ = ["FilterError", "Selection", "baseline_selection", "get_strategy", "per_generation_rows", "pool_scores",
           "random_selection", "select_pairs", "similarity_strategies"]

log = logging.getLogger(__name__)

HISTOGRAM_EDGES = np.round(np.linspace(-1.0, 1.0, 21), 2)  # fixed 0.1-wide bins over [-1, 1]


# ---------------------------------------------------------------------------- selection


def per_generation_rows(pool: PoolEmbeddings, gen: np.ndarray, strategy: str | Strategy, budget: int,
                        threshold: float, chunk_size: int = 64) -> np.ndarray:
    """Union over generations of each one's ceil(budget / G) most similar pairs with similarity >= threshold.

    Similarity is the strategy's sides merged by its `combine`. Chunked over generation columns:
    memory is N x chunk_size floats. The union is capped at `budget` by each pair's best similarity
    to any generation.
    """
    strat = get_strategy(strategy) if isinstance(strategy, str) else strategy
    check_combination(strat.name, "per_generation")
    mats = [unit_rows(getattr(pool, name), f"pool_emb.{name}") for name in strat.sides]
    n, g = mats[0].shape[0], gen.shape[0]
    m = min(n, -(-budget // g))
    for _ in range(4):  # near-identical generations share neighbours: widen each one's share up to 8x
        best = np.full(n, -np.inf, dtype=np.float32)
        picked = np.zeros(n, dtype=bool)
        for start in range(0, g, chunk_size):
            cols = gen[start : start + chunk_size].T
            sim = strat.merge([mat @ cols for mat in mats])
            top = np.argpartition(-sim, m - 1, axis=0)[:m]  # [m, chunk] rows nearest to each generation
            keep = np.take_along_axis(sim, top, axis=0) >= threshold
            picked[top[keep]] = True
            best = np.maximum(best, sim.max(axis=1))
        if picked.sum() >= budget or m >= n:
            break
        m = min(n, 2 * m)
    rows = np.flatnonzero(picked)
    return rows[np.argsort(-best[rows], kind="stable")][:budget]


def histogram(scores: np.ndarray) -> dict[str, int]:
    """Counts of the finite scores over fixed 0.1-wide bins of [-1, 1], keyed like "[0.8,0.9)"."""
    s = np.clip(scores[np.isfinite(scores)], -1.0, 1.0)
    counts, _ = np.histogram(s, bins=HISTOGRAM_EDGES)
    e = HISTOGRAM_EDGES
    return {
        f"[{e[i]:.1f},{e[i + 1]:.1f}{']' if i == len(counts) - 1 else ')'}": int(c) for i, c in enumerate(counts)
    }


@dataclass
class Selection:
    """The pairs kept for one RM refit, and what the metrics need to describe them."""

    indices: np.ndarray  # selected pool rows, best score first (pool order when there are no scores)
    scores: np.ndarray  # [N] score of every pool pair (NaN when no generations were given)
    strategy: str
    selection: str  # the selection rule, or the baseline's name
    threshold: float | None  # the threshold applied, None when none was
    budget: int | None
    histogram: dict[str, int]  # over all pool scores
    source_mix: dict[str, int]  # {source: count} of the selected pairs
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def count(self) -> int:
        return int(len(self.indices))

    @property
    def pool_size(self) -> int:
        return int(len(self.scores))

    def to_dict(self, include_indices: bool = False) -> dict:
        sel = self.scores[self.indices] if self.count else np.array([], dtype=np.float32)
        sel = sel[np.isfinite(sel)]
        stats = (
            {"min": float(sel.min()), "mean": float(sel.mean()), "max": float(sel.max())} if sel.size else None
        )
        d = {
            "strategy": self.strategy,
            "selection": self.selection,
            "threshold": self.threshold,
            "budget": self.budget,
            "count": self.count,
            "pool_size": self.pool_size,
            "selected_score": stats,
            "histogram": self.histogram,
            "source_mix": self.source_mix,
            "seconds": round(self.seconds, 4),
        }
        if include_indices:
            d["indices"] = [int(i) for i in self.indices]
        return d


def _validate(n_pairs: int, pool: PoolEmbeddings | None, gen_emb, gen_prompt_emb, strategy: Strategy,
              gen_groups) -> np.ndarray | None:
    """The L2-normalised generations, or None when there are none and the strategy needs none."""
    if n_pairs == 0:
        raise FilterError("cannot filter an empty preference pool (0 pairs)")
    has_gen = gen_emb is not None and len(gen_emb) > 0
    if pool is None:  # fine for a baseline without generations: it picks rows from the pairs alone
        if strategy.needs_generations or has_gen:
            why = "scores pairs" if strategy.needs_generations else "scores pairs when generations are given"
            raise FilterError(f"filter.strategy {strategy.name!r} {why} and needs pool_emb, got None; embed the pool")
        return None
    if len(pool) != n_pairs:
        raise FilterError(f"pool_emb has {len(pool)} rows but there are {n_pairs} pairs; embed the same pool")
    if not has_gen:
        if strategy.needs_generations:
            names = " / ".join(repr(b) for b in baselines())
            raise FilterError(
                f"filter.strategy {strategy.name!r} needs the policy's generations, but gen_emb is empty; "
                f"sample from the policy first (or use the {names} baselines)"
            )
        return None
    gen = unit_rows(gen_emb, "gen_emb")
    if gen.shape[1] != pool.dim:
        raise FilterError(f"gen_emb has dim {gen.shape[1]} but pool_emb has dim {pool.dim}; use one embedding model")
    if strategy.needs_prompt_embeddings:
        if gen_prompt_emb is None or len(gen_prompt_emb) != len(gen):
            got = None if gen_prompt_emb is None else len(gen_prompt_emb)
            raise FilterError(f"{strategy.name} needs gen_prompt_emb with one row per generation ({len(gen)}), "
                              f"got {got}")
        if unit_rows(gen_prompt_emb, "gen_prompt_emb").shape[1] != pool.dim:
            raise FilterError("gen_prompt_emb dim differs from pool_emb dim; use one embedding model")
        if gen_groups is not None and len(gen_groups) != len(gen):
            raise FilterError(f"gen_groups has {len(gen_groups)} entries for {len(gen)} generations")
    return gen


def _finish(pairs: Sequence[PreferencePair], rows: np.ndarray, scores: np.ndarray | None, strategy: str,
            rule: str, threshold: float | None, budget: int | None, t0: float) -> Selection:
    """The Selection of `rows`: best score first, or in pool order when there are no scores (NaN)."""
    n = len(pairs)
    if scores is None:
        scores = np.full(n, np.nan, dtype=np.float32)
        indices = np.sort(rows)
    else:
        indices = rows[np.argsort(-scores[rows], kind="stable")]
    indices = indices.astype(np.int64)
    if len(indices) == 0:
        log.warning("filter kept 0 of %d pairs (strategy=%s, threshold=%s)", n, strategy, threshold)
    mix = Counter(pairs[i].source for i in indices)
    return Selection(
        indices=indices,
        scores=scores,
        strategy=strategy,
        selection=rule,
        threshold=threshold,
        budget=budget,
        histogram=histogram(scores),
        source_mix=dict(mix.most_common()),
        seconds=time.perf_counter() - t0,
    )


def baseline_selection(pairs: Sequence[PreferencePair], strategy: str | Strategy, budget: int, seed: int = 0,
                       scores: np.ndarray | None = None, t0: float | None = None) -> Selection:
    """A baseline's pairs (its `pick` rule); `scores` [N] only orders and describes them (NaN if None)."""
    t0 = time.perf_counter() if t0 is None else t0
    strat = get_strategy(strategy) if isinstance(strategy, str) else strategy
    if not strat.is_baseline:
        raise FilterError(f"filter.strategy {strat.name!r} is not a baseline; use select_pairs")
    if len(pairs) == 0:
        raise FilterError("cannot filter an empty preference pool (0 pairs)")
    rows = strat.pick(len(pairs), budget, seed)
    return _finish(pairs, rows, scores, strat.name, strat.name, None, budget if strat.reports_budget else None, t0)


def random_selection(pairs: Sequence[PreferencePair], budget: int, seed: int = 0) -> Selection:
    """`budget` pairs uniformly at random (seeded), in pool order, scores NaN: the random-refit arm.

    Needs no embeddings; equal to `select_pairs(pairs, pool_emb, None, None, cfg, seed)` with
    strategy `random-k` and that budget.
    """
    return baseline_selection(pairs, "random-k", budget, seed)


def select_pairs(
    pairs: Sequence[PreferencePair],
    pool_emb: PoolEmbeddings | None,
    gen_emb: np.ndarray | None,
    gen_prompt_emb: np.ndarray | None,
    cfg: "FilterConfig",
    seed: int = 0,
    gen_groups: np.ndarray | None = None,
) -> Selection:
    """Score every pair against the generations and select by `cfg` (see the module docstring).

    gen_emb: [G, d] embeddings of the policy's generations, composed like the pool
    (`embedding.compose_text` with `cfg.embed`). gen_prompt_emb: [G, d] embedding of each
    generation's prompt (needed by strategies with `needs_prompt_embeddings`, i.e. `prompt_matched`).
    gen_groups: optional [G] prompt id per generation, which replaces grouping by identical prompt
    embeddings. pool_emb may be None for a baseline without generations.
    """
    t0 = time.perf_counter()
    strategy = get_strategy(cfg.strategy)
    gen = _validate(len(pairs), pool_emb, gen_emb, gen_prompt_emb, strategy, gen_groups)
    if not strategy.is_baseline:
        check_combination(strategy.name, cfg.selection)
    scores = None
    if gen is not None:
        groups = None if gen_groups is None else np.asarray(gen_groups)
        scores = pool_scores(pool_emb, gen, gen_prompt_emb, cfg, strategy.name, groups)
    if strategy.is_baseline:
        return baseline_selection(pairs, strategy, cfg.budget, seed, scores, t0)

    threshold: float | None = None
    budget: int | None = None
    rule = cfg.selection
    if rule == "per_generation":
        threshold, budget = float(cfg.threshold), cfg.budget
        rows = per_generation_rows(pool_emb, gen, strategy, cfg.budget, threshold, cfg.chunk_size)
    else:
        rows = np.argsort(-scores, kind="stable")
        if rule in ("threshold", "threshold_and_budget"):
            threshold = float(cfg.threshold)
            rows = rows[scores[rows] >= threshold]
        if rule in ("budget", "threshold_and_budget"):
            budget = cfg.budget
            rows = rows[: cfg.budget]
    return _finish(pairs, rows, scores, strategy.name, rule, threshold, budget, t0)
