"""FRFT filtering: keep the preference pairs that look like what the policy writes now.

Every pair gets a score, the cosine similarity between its embeddings and the embeddings of the
policy's current generations, aggregated over the generations; then a selection rule keeps the
best-scoring pairs. All similarities are chunked matrix products over pool rows (`chunk_size`
rows of the pool at a time against all generations), so memory stays at chunk_size x G floats and
no Python loop runs over pairs.

Strategies (the paper names four without defining them; these definitions are ours):

- `chosen`: score = similarity of the pair's chosen response to the generations. The RM learns
  what "good" looks like in the policy's region.
- `rejected`: the same with the rejected response; pairs whose *bad* answer resembles the policy
  teach the RM what the policy gets wrong.
- `either`: max(chosen score, rejected score): one side of the comparison is on-policy.
- `both`: min(chosen score, rejected score): both sides must look like the policy's writing, the
  strictest test that the comparison is one the RM will face.
- `prompt_matched`: each pair's prompt is matched to the nearest policy prompt (by prompt
  embedding); the score is then max(chosen, rejected) similarity computed against *that prompt's*
  generations only, so a response is judged against what the policy wrote for a similar question.
  Generations are grouped by prompt with `gen_groups` when the caller passes it, else by identical
  prompt embeddings (cosine >= 1 - 1e-5).

Aggregation over generations: `max` (the single most similar generation) or `topk_mean` (mean of
the `aggregate_k` most similar, robust to one lucky match; fewer if fewer generations exist).

Selection: `threshold` (score >= threshold), `budget` (the `budget` best),
`threshold_and_budget` (over the threshold, capped at the budget by best score), or
`per_generation` (ours, the default): every generation brings its own ceil(budget / G) nearest
pairs over the threshold, so the selection follows the *distribution* of what the policy writes.
With a global score, a rare mode of the policy (say 5% stock refusals, which match pool refusals
at cosine ~1.0) would fill the whole budget with near-duplicates of that one mode; per generation,
it gets its 5% share.
Baselines: `all` (every pair) and `random-k` (`budget` pairs uniformly at random, seeded); they
need no generations, and report the `chosen` score for diagnostics when generations are given.
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

if TYPE_CHECKING:
    from frft_ray.config import FilterConfig

log = logging.getLogger(__name__)

SIMILARITY_STRATEGIES = ("chosen", "rejected", "either", "both", "prompt_matched")
BASELINES = ("all", "random-k")
HISTOGRAM_EDGES = np.round(np.linspace(-1.0, 1.0, 21), 2)  # fixed 0.1-wide bins over [-1, 1]
SAME_PROMPT_COS = 1.0 - 1e-5


class FilterError(ValueError):
    """Filtering cannot run on these inputs (empty pool, no generations, mismatched shapes)."""


# ---------------------------------------------------------------------------- similarity


def _unit(a: np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(a, dtype=np.float32)
    if a.ndim != 2:
        raise FilterError(f"{what} must be a 2-D array [rows, dim], got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise FilterError(f"{what} contains NaN or infinite values")
    return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)


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
        sim = _unit(query[start:stop], what) @ gen.T
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
        sim = _unit(pool_prompt[start : start + chunk_size], "pool_emb.prompt") @ rep_prompt.T
        out[start : start + chunk_size] = ids[sim.argmax(axis=1)]
    return out


def pool_scores(
    pool: PoolEmbeddings,
    gen_emb: np.ndarray,
    gen_prompt_emb: np.ndarray | None,
    cfg: "FilterConfig",
    strategy: str | None = None,
    gen_groups: np.ndarray | None = None,
) -> np.ndarray:
    """Per-pair score [N] under `strategy` (default `cfg.strategy`); inputs already validated."""
    strategy = strategy or cfg.strategy
    agg = dict(aggregate=cfg.aggregate, k=cfg.aggregate_k, chunk_size=cfg.chunk_size)

    def side(name: str, **extra) -> np.ndarray:  # normalise only the parts this strategy reads
        return similarity_scores(getattr(pool, name), gen_emb, **agg, **extra, what=f"pool_emb.{name}")

    if strategy in ("chosen", "rejected"):
        return side(strategy)
    if strategy in ("either", "both"):
        combine = np.maximum if strategy == "either" else np.minimum
        return combine(side("chosen"), side("rejected"))
    if strategy == "prompt_matched":
        gen_prompt = _unit(gen_prompt_emb, "gen_prompt_emb")
        groups = group_generations(gen_prompt, cfg.chunk_size) if gen_groups is None else gen_groups
        nearest = nearest_group(pool.prompt, gen_prompt, groups, cfg.chunk_size)
        return np.maximum(
            side("chosen", query_groups=nearest, gen_groups=groups),
            side("rejected", query_groups=nearest, gen_groups=groups),
        )
    raise FilterError(f"filter.strategy {strategy!r} has no similarity score; use one of {SIMILARITY_STRATEGIES}")


# ---------------------------------------------------------------------------- selection


def per_generation_rows(pool: PoolEmbeddings, gen: np.ndarray, strategy: str, budget: int, threshold: float,
                        chunk_size: int = 64) -> np.ndarray:
    """Union over generations of each one's ceil(budget / G) most similar pairs with similarity >= threshold.

    Chunked over generation columns: memory is N x chunk_size floats. The union is capped at
    `budget` by each pair's best similarity to any generation.
    """
    sides = {"chosen": ("chosen",), "rejected": ("rejected",), "either": ("chosen", "rejected"),
             "both": ("chosen", "rejected")}[strategy]
    mats = [_unit(getattr(pool, name), f"pool_emb.{name}") for name in sides]
    n, g = mats[0].shape[0], gen.shape[0]
    m = min(n, -(-budget // g))
    for _ in range(4):  # near-identical generations share neighbours: widen each one's share up to 8x
        best = np.full(n, -np.inf, dtype=np.float32)
        picked = np.zeros(n, dtype=bool)
        for start in range(0, g, chunk_size):
            cols = gen[start : start + chunk_size].T
            sims = [mat @ cols for mat in mats]
            sim = sims[0] if len(sims) == 1 else (np.maximum(*sims) if strategy == "either" else np.minimum(*sims))
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

    def pairs(self, pool: Sequence[PreferencePair]) -> list[PreferencePair]:
        return [pool[i] for i in self.indices]

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


def _validate(n_pairs: int, pool: PoolEmbeddings, gen_emb, gen_prompt_emb, strategy: str, gen_groups) -> np.ndarray | None:
    if n_pairs == 0:
        raise FilterError("cannot filter an empty preference pool (0 pairs)")
    if len(pool) != n_pairs:
        raise FilterError(f"pool_emb has {len(pool)} rows but there are {n_pairs} pairs; embed the same pool")
    needs_gen = strategy in SIMILARITY_STRATEGIES
    if gen_emb is None or len(gen_emb) == 0:
        if needs_gen:
            raise FilterError(
                f"filter.strategy {strategy!r} needs the policy's generations, but gen_emb is empty; "
                "sample from the policy first (or use the 'all' / 'random-k' baselines)"
            )
        return None
    gen = _unit(gen_emb, "gen_emb")
    if gen.shape[1] != pool.dim:
        raise FilterError(f"gen_emb has dim {gen.shape[1]} but pool_emb has dim {pool.dim}; use one embedding model")
    if strategy == "prompt_matched":
        if gen_prompt_emb is None or len(gen_prompt_emb) != len(gen):
            got = None if gen_prompt_emb is None else len(gen_prompt_emb)
            raise FilterError(f"prompt_matched needs gen_prompt_emb with one row per generation ({len(gen)}), got {got}")
        if _unit(gen_prompt_emb, "gen_prompt_emb").shape[1] != pool.dim:
            raise FilterError("gen_prompt_emb dim differs from pool_emb dim; use one embedding model")
        if gen_groups is not None and len(gen_groups) != len(gen):
            raise FilterError(f"gen_groups has {len(gen_groups)} entries for {len(gen)} generations")
    return gen


def select_pairs(
    pairs: Sequence[PreferencePair],
    pool_emb: PoolEmbeddings,
    gen_emb: np.ndarray | None,
    gen_prompt_emb: np.ndarray | None,
    cfg: "FilterConfig",
    seed: int = 0,
    gen_groups: np.ndarray | None = None,
) -> Selection:
    """Score every pair against the generations and select by `cfg` (see the module docstring).

    gen_emb: [G, d] embeddings of the policy's generations, composed like the pool
    (`embedding.compose_text` with `cfg.embed`). gen_prompt_emb: [G, d] embedding of each
    generation's prompt (needed by `prompt_matched`). gen_groups: optional [G] prompt id per
    generation, which replaces grouping by identical prompt embeddings.
    """
    t0 = time.perf_counter()
    strategy = cfg.strategy
    gen = _validate(len(pairs), pool_emb, gen_emb, gen_prompt_emb, strategy, gen_groups)
    n = len(pairs)
    if gen is None:
        scores = np.full(n, np.nan, dtype=np.float32)
    else:
        score_rule = strategy if strategy in SIMILARITY_STRATEGIES else "chosen"
        groups = None if gen_groups is None else np.asarray(gen_groups)
        scores = pool_scores(pool_emb, gen, gen_prompt_emb, cfg, score_rule, groups)

    threshold: float | None = None
    budget: int | None = None
    if strategy == "all":
        rule, chosen_rows = "all", np.arange(n)
    elif strategy == "random-k":
        rule, budget = "random-k", cfg.budget
        chosen_rows = np.random.default_rng(seed).choice(n, size=min(cfg.budget, n), replace=False)
    elif cfg.selection == "per_generation":
        if gen is None or strategy == "prompt_matched":
            raise FilterError("filter.selection 'per_generation' needs generations and a chosen/rejected/either/both strategy")
        rule, threshold, budget = "per_generation", float(cfg.threshold), cfg.budget
        chosen_rows = per_generation_rows(pool_emb, gen, strategy, cfg.budget, threshold, cfg.chunk_size)
    else:
        rule = cfg.selection
        order = np.argsort(-scores, kind="stable")
        if rule in ("threshold", "threshold_and_budget"):
            threshold = float(cfg.threshold)
            order = order[scores[order] >= threshold]
        if rule in ("budget", "threshold_and_budget"):
            budget = cfg.budget
            order = order[: cfg.budget]
        chosen_rows = order

    if gen is not None:  # best first
        indices = chosen_rows[np.argsort(-scores[chosen_rows], kind="stable")]
    else:
        indices = np.sort(chosen_rows)
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
