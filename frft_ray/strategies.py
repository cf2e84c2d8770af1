"""FRFT filtering strategies: how a preference pair is scored against the policy's generations.

Every strategy is declared once, as a `Strategy` in the registry at the bottom of this file, and
everything that needs to know about strategies asks the registry: scoring (`pool_scores`), the
per-generation selection (`Strategy.sides` / `Strategy.merge`), input checks in
`filtering.select_pairs`, and the config check (`check_combination`, called by `FilterConfig`).
Similarities are torch tensors (`frft_ray.pool_scan`), so `combine` works on tensors; this module
itself imports no torch, so the config's check stays cheap to import.
Adding a strategy means one `register(Strategy(...))` here (with its definition in this docstring)
plus its name in the `Literal` of `FilterConfig.strategy`.

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
  prompt embeddings (cosine >= 1 - 1e-5). It does not combine with selection `per_generation`
  (which ranks pool rows per generation, with no prompt matching).

Baselines: `all` (every pair) and `random-k` (`budget` pairs uniformly at random, seeded; the one
random draw is `random_rows`). They need no generations and no embeddings, ignore
`filter.selection`, and report the `chosen` score for diagnostics when generations are given.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import reduce
from typing import TYPE_CHECKING, Callable

import numpy as np

from frft_ray.similarity import FilterError, unit_rows

if TYPE_CHECKING:
    import torch

    from frft_ray.config import FilterConfig
    from frft_ray.pool_scan import DevicePool

POOL_PARTS = ("chosen", "rejected", "prompt")  # the PoolEmbeddings arrays a strategy can compare

# score(strategy, pool, gen, gen_prompt_emb, cfg, gen_groups) -> [N] scores; gen is L2-normalised, on pool.device.
ScoreFn = Callable[["Strategy", "DevicePool", "torch.Tensor", "np.ndarray | None", "FilterConfig", "np.ndarray | None"],
                   np.ndarray]
# pick(n_pairs, budget, seed) -> rows (a baseline's selection, which does not look at scores).
PickFn = Callable[[int, int, int], np.ndarray]


@dataclass(frozen=True)
class Strategy:
    """One filtering strategy. A similarity strategy has `needs_generations=True` and is scored over
    `sides`; a baseline has `needs_generations=False` and a `pick` rule instead."""

    name: str
    sides: tuple[str, ...] = ("chosen",)  # pool parts compared with the generations
    combine: Callable[["torch.Tensor", "torch.Tensor"], "torch.Tensor"] | None = None  # merges per-side similarities
    needs_generations: bool = True
    needs_prompt_embeddings: bool = False  # needs gen_prompt_emb, one row per generation
    supports_per_generation: bool = True  # allowed with selection 'per_generation' (baselines ignore it)
    score: ScoreFn | None = None  # custom scorer; None: `side_scores` (each side's score, merged)
    pick: PickFn | None = None  # baselines: which rows to keep
    reports_budget: bool = False  # baselines: Selection.budget is the budget (random-k) or None (all)

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a strategy needs a name")
        if not self.sides or any(s not in POOL_PARTS for s in self.sides):
            raise ValueError(f"strategy {self.name!r}: sides must be a non-empty subset of {POOL_PARTS}")
        if len(self.sides) > 1 and self.combine is None:
            raise ValueError(f"strategy {self.name!r}: several sides need `combine` (e.g. larger)")
        if (self.pick is None) == (not self.needs_generations):
            raise ValueError(f"strategy {self.name!r}: a baseline (needs_generations=False) needs `pick`, "
                             "and only a baseline has one")
        if self.score is not None and self.needs_generations and self.supports_per_generation:
            raise ValueError(f"strategy {self.name!r}: per_generation selection ranks by sides + combine, "
                             "so a strategy with a custom `score` must set supports_per_generation=False")

    @property
    def is_baseline(self) -> bool:
        return self.pick is not None

    def merge(self, per_side: list["torch.Tensor"]) -> "torch.Tensor":
        """Combine per-side similarities (same shapes) into the strategy's similarity."""
        return per_side[0] if len(per_side) == 1 else reduce(self.combine, per_side)


REGISTRY: dict[str, Strategy] = {}  # name -> Strategy, in declaration order


def register(strategy: Strategy) -> Strategy:
    """Add a strategy to the registry; its name must be new (and in `FilterConfig.strategy` to be configured)."""
    if strategy.name in REGISTRY:
        raise ValueError(f"filter strategy {strategy.name!r} is already registered")
    REGISTRY[strategy.name] = strategy
    return strategy


def get_strategy(name: str) -> Strategy:
    try:
        return REGISTRY[name]
    except KeyError:
        raise FilterError(f"unknown filter.strategy {name!r}; registered: {', '.join(REGISTRY)}") from None


def strategy_names() -> tuple[str, ...]:
    return tuple(REGISTRY)


def similarity_strategies() -> tuple[str, ...]:
    """Strategies that score pairs against generations (not baselines)."""
    return tuple(n for n, s in REGISTRY.items() if not s.is_baseline)


def baselines() -> tuple[str, ...]:
    return tuple(n for n, s in REGISTRY.items() if s.is_baseline)


def check_combination(strategy: str, selection: str) -> None:
    """Raise a FilterError (a ValueError) naming both when `selection` cannot run `strategy`."""
    s = get_strategy(strategy)
    if selection == "per_generation" and not s.supports_per_generation:
        raise FilterError(f"filter.selection 'per_generation' does not combine with strategy {strategy!r}; "
                          "use selection 'threshold_and_budget' (or 'budget') with it")


# ---------------------------------------------------------------------------- scoring


def pool_scores(
    pool: "DevicePool",
    gen: "torch.Tensor",
    gen_prompt_emb: np.ndarray | None,
    cfg: "FilterConfig",
    strategy: str | None = None,
    gen_groups: np.ndarray | None = None,
) -> np.ndarray:
    """Per-pair score [N] under `strategy` (default `cfg.strategy`); inputs already validated, `gen`
    L2-normalised on the pool's device. A baseline scores like its sides (`chosen`), for diagnostics."""
    from frft_ray.pool_scan import scan

    s = get_strategy(strategy or cfg.strategy)
    if s.score is not None:
        return s.score(s, pool, gen, gen_prompt_emb, cfg, gen_groups)
    return scan(pool, gen, s, cfg.chunk_size, aggregate=cfg.aggregate, k=cfg.aggregate_k).scores.cpu().numpy()


def _prompt_matched_score(s: Strategy, pool, gen, gen_prompt_emb, cfg, gen_groups) -> np.ndarray:
    import torch

    from frft_ray.pool_scan import group_generations, nearest_group, scan

    gen_prompt = torch.as_tensor(unit_rows(gen_prompt_emb, "gen_prompt_emb"), device=pool.device)
    groups = (group_generations(gen_prompt, cfg.chunk_size) if gen_groups is None
              else torch.as_tensor(np.asarray(gen_groups), device=pool.device))
    nearest = nearest_group(pool.side("prompt"), gen_prompt, groups, cfg.chunk_size)
    return scan(pool, gen, s, cfg.chunk_size, aggregate=cfg.aggregate, k=cfg.aggregate_k, query_groups=nearest,
                gen_groups=groups).scores.cpu().numpy()


def random_rows(n: int, budget: int, seed: int) -> np.ndarray:
    """`budget` distinct rows of `n` uniformly at random (all of them when budget >= n), seeded."""
    if budget < 1:
        raise FilterError(f"random-k needs a budget >= 1, got {budget}")
    return np.random.default_rng(seed).choice(n, size=min(budget, n), replace=False)


def _all_rows(n: int, budget: int, seed: int) -> np.ndarray:
    return np.arange(n)


def larger(a: "torch.Tensor", b: "torch.Tensor") -> "torch.Tensor":
    """Elementwise max of two similarity tensors: `either`'s combine."""
    return a.maximum(b)


def smaller(a: "torch.Tensor", b: "torch.Tensor") -> "torch.Tensor":
    """Elementwise min of two similarity tensors: `both`'s combine."""
    return a.minimum(b)


# ---------------------------------------------------------------------------- the registry

register(Strategy("chosen", sides=("chosen",)))
register(Strategy("rejected", sides=("rejected",)))
register(Strategy("either", sides=("chosen", "rejected"), combine=larger))
register(Strategy("both", sides=("chosen", "rejected"), combine=smaller))
register(Strategy("prompt_matched", sides=("chosen", "rejected"), combine=larger, needs_prompt_embeddings=True,
                  supports_per_generation=False, score=_prompt_matched_score))
register(Strategy("all", sides=("chosen",), needs_generations=False, pick=_all_rows))
register(Strategy("random-k", sides=("chosen",), needs_generations=False, pick=random_rows, reports_budget=True))
