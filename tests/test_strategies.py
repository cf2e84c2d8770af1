"""The strategy registry: every configurable strategy x selection runs, rejected ones fail at config
load, random selection needs no embeddings, and a new strategy needs only a registry entry."""

from __future__ import annotations

import json
import subprocess
import sys
import typing

import numpy as np
import pytest
from pydantic import ValidationError

from frft_ray import strategies
from frft_ray.config import ConfigError, FilterConfig, config_from_dict
from frft_ray.data.records import PreferencePair
from frft_ray.pool_embeddings import PoolEmbeddings
from frft_ray.filtering import FilterError, per_generation_rows, random_selection, select_pairs
from frft_ray.strategies import REGISTRY, Strategy, check_combination, get_strategy, register, strategy_names
from test_filtering import random_unit

CONFIG_STRATEGIES = typing.get_args(FilterConfig.model_fields["strategy"].annotation)
CONFIG_SELECTIONS = typing.get_args(FilterConfig.model_fields["selection"].annotation)
COMBOS = [(st, se) for st in CONFIG_STRATEGIES for se in CONFIG_SELECTIONS]
REJECTED = {("prompt_matched", "per_generation")}  # what the registry says today; a change must be deliberate


def unit(rng, n):
    return random_unit(rng, n, d=16)


@pytest.fixture(scope="module")
def synthetic():
    rng = np.random.default_rng(1234)
    n, g = 120, 12
    pairs = [PreferencePair(f"p{i}", f"q{i % 7}", f"c{i}", f"r{i}", "ab"[i % 2]) for i in range(n)]
    pool = PoolEmbeddings(unit(rng, n), unit(rng, n), unit(rng, n))
    gens, gen_prompts = unit(rng, g), np.repeat(unit(rng, 3), 4, axis=0)
    return pairs, pool, gens, gen_prompts


def test_config_literal_and_registry_name_the_same_strategies():
    assert set(CONFIG_STRATEGIES) == set(strategy_names())
    assert strategies.__doc__ and all(f"`{name}`" in strategies.__doc__ for name in strategy_names())  # documented


def allowed(strategy: str, selection: str) -> bool:
    try:
        check_combination(strategy, selection)
        return True
    except FilterError:
        return False


def test_the_registry_rejects_exactly_the_known_combinations():
    assert {c for c in COMBOS if not allowed(*c)} == REJECTED


@pytest.mark.parametrize("strategy,selection", [c for c in COMBOS if c not in REJECTED])
def test_every_allowed_combination_returns_a_valid_selection(synthetic, strategy, selection):
    pairs, pool, gens, gen_prompts = synthetic
    cfg = FilterConfig(strategy=strategy, selection=selection, threshold=0.2, budget=30, chunk_size=17)
    sel = select_pairs(pairs, pool, gens, gen_prompts, cfg, seed=3)
    n = len(pairs)
    assert sel.strategy == strategy and sel.indices.dtype == np.int64 and sel.scores.shape == (n,)
    assert len(set(sel.indices.tolist())) == sel.count and np.all((sel.indices >= 0) & (sel.indices < n))
    assert np.all(np.isfinite(sel.scores)) and np.all(np.diff(sel.scores[sel.indices]) <= 0)  # best first
    assert sum(sel.histogram.values()) == n and sum(sel.source_mix.values()) == sel.count
    if get_strategy(strategy).is_baseline:
        assert sel.selection == strategy and sel.count == (n if strategy == "all" else 30)
    else:
        capped = "budget" in selection or selection == "per_generation"
        assert sel.selection == selection and sel.count <= (30 if capped else n)
        if sel.threshold is not None:
            assert np.all(sel.scores[sel.indices] >= 0.2)
    json.dumps(sel.to_dict(include_indices=True))


@pytest.mark.parametrize("strategy,selection", sorted(REJECTED))
def test_a_rejected_combination_fails_at_config_load_naming_both(strategy, selection):
    with pytest.raises(ValidationError, match=f"(?s){selection}.*{strategy}"):
        FilterConfig(strategy=strategy, selection=selection)
    with pytest.raises(ConfigError, match=f"(?s)filter.*{selection}.*{strategy}"):
        config_from_dict({"filter": {"strategy": strategy, "selection": selection}})


def test_random_selection_needs_no_embeddings_and_equals_select_pairs_random_k(synthetic):
    pairs, pool, gens, _ = synthetic
    for budget, seed in [(30, 0), (30, 7), (1, 2), (10_000, 1)]:
        sel = random_selection(pairs, budget, seed)
        want = np.sort(np.random.default_rng(seed).choice(len(pairs), size=min(budget, len(pairs)), replace=False))
        assert sel.indices.tolist() == want.tolist() and sel.indices.dtype == np.int64
        assert np.all(np.isnan(sel.scores)) and set(sel.histogram.values()) == {0}
        assert (sel.strategy, sel.selection, sel.budget, sel.threshold) == ("random-k", "random-k", budget, None)
        cfg = FilterConfig(strategy="random-k", budget=budget)
        for emb in (pool, None):  # the random-refit arm has no pool embeddings
            via = select_pairs(pairs, emb, None, None, cfg, seed)
            assert np.array_equal(via.indices, sel.indices) and np.array_equal(via.scores, sel.scores, equal_nan=True)
            a, b = via.to_dict(include_indices=True), sel.to_dict(include_indices=True)
            a.pop("seconds"), b.pop("seconds")
            assert a == b
        scored = select_pairs(pairs, pool, gens, None, cfg, seed)  # generations only add diagnostic scores
        assert sorted(scored.indices.tolist()) == sel.indices.tolist() and np.all(np.isfinite(scored.scores))


def test_without_pool_embeddings_only_baselines_without_generations_run(synthetic):
    pairs, _, gens, _ = synthetic
    assert select_pairs(pairs, None, None, None, FilterConfig(strategy="all")).count == len(pairs)
    with pytest.raises(FilterError, match="'chosen' scores pairs and needs pool_emb"):
        select_pairs(pairs, None, gens, None, FilterConfig(strategy="chosen"))
    with pytest.raises(FilterError, match="needs pool_emb"):
        select_pairs(pairs, None, gens, None, FilterConfig(strategy="random-k"))
    with pytest.raises(FilterError, match="empty preference pool"):
        random_selection([], 5, 0)
    with pytest.raises(FilterError, match="budget >= 1"):
        random_selection(pairs, 0, 0)


def test_a_strategy_registered_at_runtime_works_everywhere(synthetic, monkeypatch):
    pairs, pool, gens, _ = synthetic
    mean = Strategy("mean_of_sides", sides=("chosen", "rejected"), combine=lambda a, b: (a + b) / 2)
    monkeypatch.setitem(REGISTRY, mean.name, mean)
    base = FilterConfig(selection="budget", budget=20, chunk_size=13)
    ch = select_pairs(pairs, pool, gens, None, base).scores
    rj = select_pairs(pairs, pool, gens, None, base.model_copy(update={"strategy": "rejected"})).scores
    # model_copy skips validation: the Literal in FilterConfig.strategy is the one other place to edit
    sel = select_pairs(pairs, pool, gens, None, base.model_copy(update={"strategy": mean.name}))
    np.testing.assert_allclose(sel.scores, (ch + rj) / 2, atol=1e-6)
    assert sel.count == 20 and sel.strategy == mean.name
    rows = per_generation_rows(pool, gens, mean.name, budget=20, threshold=-1.0, chunk_size=5)
    assert 0 < len(rows) <= 20
    check_combination(mean.name, "per_generation")
    with pytest.raises(ValueError, match="already registered"):
        register(mean)


def test_strategy_declarations_are_checked():
    with pytest.raises(ValueError, match="need `combine`"):
        Strategy("x", sides=("chosen", "rejected"))
    with pytest.raises(ValueError, match="needs `pick`"):
        Strategy("x", needs_generations=False)
    with pytest.raises(ValueError, match="custom `score`"):
        Strategy("x", score=lambda *a: None)
    with pytest.raises(ValueError, match="subset"):
        Strategy("x", sides=("answer",))
    with pytest.raises(FilterError, match="unknown filter.strategy 'nope'"):
        get_strategy("nope")


@pytest.mark.parametrize("first", ["frft_ray.config", "frft_ray.strategies", "frft_ray.filtering", "actors.embedder"])
def test_modules_import_first_without_a_cycle(first):
    code = f"import {first}; import frft_ray.config as c; c.FilterConfig(strategy='prompt_matched', selection='budget')"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
