"""FRFT filtering: keep the preference pairs that look like what the policy writes now.

Every pair gets a score under `filter.strategy`, the cosine similarity between its embeddings and
the embeddings of the policy's current generations, aggregated over the generations; then a
selection rule keeps the best-scoring pairs. The strategies (and the baselines) are defined and
registered in `frft_ray.strategies`; the similarity maths (torch, chunked over pool rows, on the
pool's device) is in `frft_ray.pool_scan`.

Two steps, so the heavy one can run where the pool's embeddings live (an embedder actor's GPU):
`rank_rows` needs only the embeddings and returns a `Ranked` (rows and scores); `finish` adds what
needs the pairs themselves (source mix, histogram). `select_pairs` does both in this process.

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
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Sequence

import numpy as np

import torch

from frft_ray.data.records import PreferencePair
from frft_ray.pool_embeddings import PoolEmbeddings
from frft_ray.pool_scan import DevicePool, as_device_pool, per_generation
from frft_ray.similarity import FilterError, unit_rows
from frft_ray.strategies import Strategy, baselines, check_combination, get_strategy, pool_scores, similarity_strategies

if TYPE_CHECKING:
    from frft_ray.config import FilterConfig

__all__ = ["FilterError", "Ranked", "Selection", "baseline_selection", "best_scored", "finish", "get_strategy",
           "per_generation_rows", "pool_scores", "random_selection", "rank_rows", "select_pairs",
           "similarity_strategies", "with_min_records"]

log = logging.getLogger(__name__)

HISTOGRAM_EDGES = np.round(np.linspace(-1.0, 1.0, 21), 2)  # fixed 0.1-wide bins over [-1, 1]


# ---------------------------------------------------------------------------- selection


def per_generation_rows(pool: PoolEmbeddings | DevicePool, gen: np.ndarray, strategy: str | Strategy, budget: int,
                        threshold: float, chunk_size: int = 1024) -> np.ndarray:
    """Union over generations of each one's ceil(budget / G) most similar pairs with similarity >= threshold,
    capped at `budget` by each pair's best similarity to any generation (`pool_scan.per_generation`).

    Similarity is the strategy's sides merged by its `combine`; chunked over pool rows.
    """
    strat = get_strategy(strategy) if isinstance(strategy, str) else strategy
    check_combination(strat.name, "per_generation")
    dev = as_device_pool(pool)
    gen_t = torch.as_tensor(unit_rows(gen, "gen_emb"), device=dev.device)
    return per_generation(dev, gen_t, strat, budget, threshold, chunk_size)[0]


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
            **self.extra,
        }
        if include_indices:
            d["indices"] = [int(i) for i in self.indices]
        return d


def _validate(n_pairs: int, pool: DevicePool | None, gen_emb, gen_prompt_emb, strategy: Strategy,
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


@dataclass
class Ranked:
    """What `rank_rows` computes from the embeddings alone (it crosses Ray from an embedder actor)."""

    rows: np.ndarray  # selected pool rows, any order
    scores: np.ndarray | None  # [N] score of every pair; None when no generations were given
    strategy: str
    rule: str  # the selection rule, or the baseline's name
    threshold: float | None
    budget: int | None


def finish(pairs: Sequence[PreferencePair], ranked: Ranked, t0: float) -> Selection:
    """The Selection of `ranked`: best score first, or in pool order when there are no scores (NaN)."""
    n = len(pairs)
    rows, scores = ranked.rows, ranked.scores
    if scores is None:
        scores = np.full(n, np.nan, dtype=np.float32)
        indices = np.sort(rows)
    else:
        indices = rows[np.argsort(-scores[rows], kind="stable")]
    indices = indices.astype(np.int64)
    if len(indices) == 0:
        log.warning("filter kept 0 of %d pairs (strategy=%s, threshold=%s)", n, ranked.strategy, ranked.threshold)
    mix = Counter(pairs[i].source for i in indices)
    return Selection(
        indices=indices,
        scores=scores,
        strategy=ranked.strategy,
        selection=ranked.rule,
        threshold=ranked.threshold,
        budget=ranked.budget,
        histogram=histogram(scores),
        source_mix=dict(mix.most_common()),
        seconds=time.perf_counter() - t0,
    )


def _baseline_ranked(n_pairs: int, strat: Strategy, budget: int, seed: int, scores: np.ndarray | None) -> Ranked:
    rows = strat.pick(n_pairs, budget, seed)
    return Ranked(rows, scores, strat.name, strat.name, None, budget if strat.reports_budget else None)


def baseline_selection(pairs: Sequence[PreferencePair], strategy: str | Strategy, budget: int, seed: int = 0,
                       scores: np.ndarray | None = None, t0: float | None = None) -> Selection:
    """A baseline's pairs (its `pick` rule); `scores` [N] only orders and describes them (NaN if None)."""
    t0 = time.perf_counter() if t0 is None else t0
    strat = get_strategy(strategy) if isinstance(strategy, str) else strategy
    if not strat.is_baseline:
        raise FilterError(f"filter.strategy {strat.name!r} is not a baseline; use select_pairs")
    if len(pairs) == 0:
        raise FilterError("cannot filter an empty preference pool (0 pairs)")
    return finish(pairs, _baseline_ranked(len(pairs), strat, budget, seed, scores), t0)


def random_selection(pairs: Sequence[PreferencePair], budget: int, seed: int = 0) -> Selection:
    """`budget` pairs uniformly at random (seeded), in pool order, scores NaN: the random-refit arm.

    Needs no embeddings; equal to `select_pairs(pairs, pool_emb, None, None, cfg, seed)` with
    strategy `random-k` and that budget.
    """
    return baseline_selection(pairs, "random-k", budget, seed)


def rank_rows(n_pairs: int, pool_emb, gen_emb, gen_prompt_emb, cfg: "FilterConfig", seed: int = 0, gen_groups=None,
              device: str | torch.device | None = None) -> Ranked:
    """Score every pair against the generations and select rows by `cfg`: `select_pairs` without the
    pairs (same arguments, `n_pairs` = len(pairs)). Runs on `pool_emb`'s device when it is a
    DevicePool, else on `device` (default CPU)."""
    strategy = get_strategy(cfg.strategy)
    pool = None if pool_emb is None else as_device_pool(pool_emb, device)
    gen = _validate(n_pairs, pool, gen_emb, gen_prompt_emb, strategy, gen_groups)
    if not strategy.is_baseline:
        check_combination(strategy.name, cfg.selection)
    gen_t = None if gen is None else torch.as_tensor(gen, device=pool.device)
    groups = None if gen_groups is None else np.asarray(gen_groups)
    if strategy.is_baseline:
        scores = None if gen_t is None else pool_scores(pool, gen_t, gen_prompt_emb, cfg, strategy.name, groups)
        return _baseline_ranked(n_pairs, strategy, cfg.budget, seed, scores)

    rule = cfg.selection
    if rule == "per_generation":
        rows, scores = per_generation(pool, gen_t, strategy, cfg.budget, float(cfg.threshold), cfg.chunk_size,
                                      cfg.aggregate, cfg.aggregate_k)
        return Ranked(rows, scores, strategy.name, rule, float(cfg.threshold), cfg.budget)
    scores = pool_scores(pool, gen_t, gen_prompt_emb, cfg, strategy.name, groups)
    threshold: float | None = None
    budget: int | None = None
    rows = np.argsort(-scores, kind="stable")
    if rule in ("threshold", "threshold_and_budget"):
        threshold = float(cfg.threshold)
        rows = rows[scores[rows] >= threshold]
    if rule in ("budget", "threshold_and_budget"):
        budget = cfg.budget
        rows = rows[: cfg.budget]
    return Ranked(rows, scores, strategy.name, rule, threshold, budget)


def select_pairs(
    pairs: Sequence[PreferencePair],
    pool_emb: PoolEmbeddings | DevicePool | None,
    gen_emb: np.ndarray | None,
    gen_prompt_emb: np.ndarray | None,
    cfg: "FilterConfig",
    seed: int = 0,
    gen_groups: np.ndarray | None = None,
    device: str | torch.device | None = None,
) -> Selection:
    """Score every pair against the generations and select by `cfg` (see the module docstring).

    gen_emb: [G, d] embeddings of the policy's generations, composed like the pool
    (`embedding.compose_text` with `cfg.embed`). gen_prompt_emb: [G, d] embedding of each
    generation's prompt (needed by strategies with `needs_prompt_embeddings`, i.e. `prompt_matched`).
    gen_groups: optional [G] prompt id per generation, which replaces grouping by identical prompt
    embeddings. pool_emb may be None for a baseline without generations; a `pool_scan.DevicePool`
    keeps the pool normalised on its device between calls.
    """
    t0 = time.perf_counter()
    return finish(pairs, rank_rows(len(pairs), pool_emb, gen_emb, gen_prompt_emb, cfg, seed, gen_groups, device), t0)


def best_scored(pairs: Sequence[PreferencePair], sel: Selection, k: int) -> Selection:
    """The `k` best-scored pairs of a similarity selection's scores, as selection `budget` with budget k
    would pick them, without scoring again."""
    t0 = time.perf_counter()
    k = min(k, len(pairs))
    rows = np.argsort(-sel.scores, kind="stable")[:k]
    return finish(pairs, Ranked(rows, sel.scores, sel.strategy, "budget", None, k), t0)


def mix_random(pairs: Sequence[PreferencePair], sel: Selection, share: float, seed: int = 0) -> Selection:
    """`sel` with `share` of its pairs swapped for pool pairs drawn uniformly (seeded) from those it did
    not select: its lowest-scored pairs go, so the refit's size stays (filter.random_share, ours). Part of
    each refit then comes from off the policy's current distribution, against a feedback loop in which
    the policy drifts, the filter follows it and the refit RM rewards the drift."""
    t0 = time.perf_counter()
    want = int(round(share * sel.count))
    rest = np.setdiff1d(np.arange(len(pairs)), sel.indices) if want else np.empty(0, dtype=np.int64)
    k = min(want, len(rest))
    if k == 0:
        return sel
    drawn = np.sort(np.random.default_rng(seed).choice(rest, size=k, replace=False))
    indices = np.concatenate([sel.indices[: sel.count - k], drawn]).astype(np.int64)
    mix = Counter(pairs[i].source for i in indices)
    return replace(sel, indices=indices, source_mix=dict(mix.most_common()),
                   seconds=sel.seconds + time.perf_counter() - t0,
                   extra={**sel.extra, "random_share": share, "random_rows": int(k)})


def with_min_records(pairs: Sequence[PreferencePair], sel: Selection, cfg: "FilterConfig", reselect) -> Selection:
    """`sel`, or when it kept fewer than `cfg.min_records` pairs, the min_records most similar instead
    (ours: a refit on a handful of pairs would only add noise). That is selection `budget` with budget
    min_records: taken from `sel`'s scores for a similarity strategy, from `reselect(cfg')` for a baseline."""
    if sel.count >= cfg.min_records:
        return sel
    log.warning("only %d pairs passed threshold %.2f; taking the %d most similar (filter.min_records)",
                sel.count, cfg.threshold, cfg.min_records)
    k = min(cfg.min_records, len(pairs))
    if get_strategy(sel.strategy).is_baseline:
        return reselect(cfg.model_copy(update={"selection": "budget", "budget": k}))
    return best_scored(pairs, sel, k)
