"""Filtering on constructed embeddings where the right pairs are known by construction."""

from __future__ import annotations

import json

import numpy as np
import pytest

from frft_ray.config import FilterConfig
from frft_ray.data.records import PreferencePair
from frft_ray.pool_embeddings import PoolEmbeddings
import filter_reference
from frft_ray.filtering import FilterError, mix_random, per_generation_rows, select_pairs, with_min_records
from frft_ray.strategies import similarity_strategies

D = 16


def vec(**axes: float) -> np.ndarray:
    """A unit vector from {"e<axis>": weight}: vec(e0=0.9, e4=0.436) has cosine ~0.9 with e0."""
    v = np.zeros(D, dtype=np.float32)
    for name, w in axes.items():
        v[int(name[1:])] = w
    return v / np.linalg.norm(v)


def pairs_for(n: int, sources=("a", "b")) -> list[PreferencePair]:
    return [PreferencePair(f"p{i}", f"prompt {i}", f"c{i}", f"r{i}", sources[i % len(sources)]) for i in range(n)]


def pool(chosen, rejected, prompt) -> PoolEmbeddings:
    return PoolEmbeddings(np.stack(chosen), np.stack(rejected), np.stack(prompt))


def run(pool_emb, gens, gen_prompts=None, seed=0, **cfg):
    pairs = pairs_for(len(pool_emb))
    return select_pairs(pairs, pool_emb, gens, gen_prompts, FilterConfig(**cfg), seed=seed)


# Generations all point along e0. Scores of each pair's (chosen, rejected) against them:
#   A (1.0, 0.0)  B (0.0, 1.0)  C (0.9, 1.0)  D (0.0, 0.0)  E (0.5, 0.85)
GENS = np.stack([vec(e0=1), vec(e0=1)])
GEN_PROMPTS = np.stack([vec(e8=1), vec(e8=1)])
POOL = pool(
    chosen=[vec(e0=1), vec(e3=1), vec(e0=0.9, e4=0.43589), vec(e5=1), vec(e0=0.5, e7=0.86603)],
    rejected=[vec(e2=1), vec(e0=1), vec(e0=1), vec(e6=1), vec(e0=0.85, e9=0.52678)],
    prompt=[vec(e8=1)] * 5,
)
A, B, C, D_, E = range(5)


@pytest.mark.parametrize(
    "strategy,expected",
    [
        ("chosen", [A, C]),
        ("rejected", [B, C, E]),
        ("either", [A, B, C, E]),
        ("both", [C]),
    ],
)
def test_each_strategy_picks_the_expected_pairs(strategy, expected):
    sel = run(POOL, GENS, GEN_PROMPTS, strategy=strategy, selection="threshold", threshold=0.8)
    assert sel.indices.tolist() == expected  # best first, ties in pool order
    assert sel.count == len(expected)
    assert sel.threshold == 0.8 and sel.strategy == strategy
    assert np.all(sel.scores[sel.indices] >= 0.8)


def test_either_and_both_scores_are_max_and_min_of_the_sides():
    ch = run(POOL, GENS, strategy="chosen").scores
    rj = run(POOL, GENS, strategy="rejected").scores
    np.testing.assert_allclose(run(POOL, GENS, strategy="either").scores, np.maximum(ch, rj), atol=1e-6)
    np.testing.assert_allclose(run(POOL, GENS, strategy="both").scores, np.minimum(ch, rj), atol=1e-6)
    np.testing.assert_allclose(ch, [1.0, 0.0, 0.9, 0.0, 0.5], atol=1e-4)


# Two policy prompts: e8 (its generation is e0) and e9 (its generation is e1).
PM_GENS = np.stack([vec(e0=1), vec(e1=1)])
PM_GEN_PROMPTS = np.stack([vec(e8=1), vec(e9=1)])
PM_POOL = pool(
    chosen=[vec(e0=1), vec(e1=1), vec(e1=1), vec(e3=1)],
    rejected=[vec(e5=1), vec(e5=1), vec(e5=1), vec(e0=1)],
    # P: on e8, writes like e8's generation. Q: on e8 but writes like e9's generation.
    # R: prompt close to e9, writes like e9's generation. S: on e9, its rejected looks like e8's generation.
    prompt=[vec(e8=1), vec(e8=1), vec(e9=0.9, e12=0.43589), vec(e9=1)],
)
P, Q, R, S = range(4)


def test_prompt_matched_compares_only_with_the_matched_prompts_generations():
    sel = run(PM_POOL, PM_GENS, PM_GEN_PROMPTS, strategy="prompt_matched", selection="threshold", threshold=0.8)
    assert sorted(sel.indices.tolist()) == [P, R]
    np.testing.assert_allclose(sel.scores, [1.0, 0.0, 1.0, 0.0], atol=1e-5)
    # Without prompt matching every pair has a response that looks like some generation.
    either = run(PM_POOL, PM_GENS, PM_GEN_PROMPTS, strategy="either", selection="threshold", threshold=0.8)
    assert sorted(either.indices.tolist()) == [P, Q, R, S]


def test_prompt_matched_groups_repeated_prompts_despite_float_noise_or_explicit_groups():
    gens = np.stack([vec(e0=1), vec(e2=1), vec(e1=1), vec(e6=1)])  # two samples per prompt
    noise = np.random.default_rng(0).normal(scale=1e-7, size=(4, D)).astype(np.float32)
    prompts = np.stack([vec(e8=1), vec(e8=1), vec(e9=1), vec(e9=1)]) + noise
    cfg = FilterConfig(strategy="prompt_matched", selection="threshold_and_budget", aggregate="topk_mean", aggregate_k=2)
    implicit = select_pairs(pairs_for(4), PM_POOL, gens, prompts, cfg)
    explicit = select_pairs(pairs_for(4), PM_POOL, gens, prompts, cfg, gen_groups=np.array([7, 7, 3, 3]))
    # P's chosen matches one of e8's two generations: top-2 mean is (1 + 0) / 2.
    np.testing.assert_allclose(implicit.scores, [0.5, 0.0, 0.5, 0.0], atol=1e-5)
    np.testing.assert_allclose(explicit.scores, implicit.scores, atol=1e-6)


def test_topk_mean_rewards_consistent_similarity_over_one_lucky_match():
    gens = np.stack([vec(e0=1), vec(e1=1), vec(e1=1), vec(e1=1)])
    emb = pool([vec(e0=1), vec(e1=1), vec(e0=0.7, e1=0.71414)], [vec(e5=1)] * 3, [vec(e8=1)] * 3)
    mx = run(emb, gens, aggregate="max").scores
    top3 = run(emb, gens, aggregate="topk_mean", aggregate_k=3).scores
    np.testing.assert_allclose(mx, [1.0, 1.0, 0.71414], atol=1e-4)
    np.testing.assert_allclose(top3, [1 / 3, 1.0, 0.71414], atol=1e-4)  # its top 3 are all e1 samples
    # k larger than the number of generations averages over all of them.
    np.testing.assert_allclose(run(emb, gens[:2], aggregate="topk_mean", aggregate_k=50).scores, [0.5, 0.5, 0.70707], atol=1e-4)


def random_unit(rng, n, d=32):
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def big():
    rng = np.random.default_rng(42)
    n, g = 500, 20
    emb = PoolEmbeddings(random_unit(rng, n), random_unit(rng, n), random_unit(rng, n))
    gens = random_unit(rng, g)
    gen_prompts = np.repeat(random_unit(rng, 5), 4, axis=0)  # 5 prompts x 4 samples
    brute = (emb.chosen @ gens.T).max(axis=1)  # the unchunked reference for `chosen` + `max`
    return emb, gens, gen_prompts, brute


def test_budget_keeps_the_top_k_best_first(big):
    emb, gens, _, brute = big
    sel = run(emb, gens, strategy="chosen", selection="budget", budget=50)
    assert sel.count == 50 and sel.threshold is None and sel.budget == 50
    assert set(sel.indices.tolist()) == set(np.argsort(-brute)[:50].tolist())
    assert np.all(np.diff(sel.scores[sel.indices]) <= 0)
    np.testing.assert_allclose(sel.scores, brute, atol=1e-5)


def test_random_share_swaps_the_lowest_scored_pairs_for_unselected_random_ones(big):
    """filter.random_share: the refit's size stays, its best (1 - share) stay in order, the rest are
    distinct pool rows the filter did not pick, drawn by the seed; the report says how many."""
    emb, gens, _, _ = big
    pairs = pairs_for(500)
    sel = run(emb, gens, strategy="chosen", selection="budget", budget=80)
    mixed = mix_random(pairs, sel, 0.25, seed=3)
    assert mixed.count == 80 and len(set(mixed.indices.tolist())) == 80
    assert mixed.indices[:60].tolist() == sel.indices[:60].tolist()
    drawn = mixed.indices[60:]
    assert not set(drawn.tolist()) & set(sel.indices.tolist())
    assert drawn.tolist() == mix_random(pairs, sel, 0.25, seed=3).indices[60:].tolist()
    assert drawn.tolist() != mix_random(pairs, sel, 0.25, seed=4).indices[60:].tolist()
    d = mixed.to_dict()
    assert d["random_share"] == 0.25 and d["random_rows"] == 20 and sum(d["source_mix"].values()) == 80
    assert mix_random(pairs, sel, 0.0) is sel and "random_rows" not in sel.to_dict()
    every = run(emb, gens, strategy="chosen", selection="budget", budget=500)
    assert mix_random(pairs, every, 0.5).indices.tolist() == every.indices.tolist()  # nothing left to draw
    with pytest.raises(ValueError, match="random_share"):
        FilterConfig(random_share=1.0)


def test_threshold_and_budget_respect_both_limits(big):
    emb, gens, _, brute = big
    thr = float(np.quantile(brute, 0.8))
    over = int((brute >= thr).sum())
    sel_thr = run(emb, gens, selection="threshold", threshold=thr)
    assert sel_thr.count == over and set(sel_thr.indices.tolist()) == set(np.flatnonzero(brute >= thr).tolist())
    capped = run(emb, gens, selection="threshold_and_budget", threshold=thr, budget=30)
    assert capped.count == 30 and np.all(capped.scores[capped.indices] >= thr)
    assert capped.indices.tolist() == sel_thr.indices[:30].tolist()
    uncapped = run(emb, gens, selection="threshold_and_budget", threshold=thr, budget=1000)
    assert uncapped.count == over
    assert run(emb, gens, selection="threshold", threshold=1.0).count == 0  # nothing is that similar


def test_random_k_is_seeded_and_sized(big):
    emb, gens, _, _ = big
    a = run(emb, None, strategy="random-k", budget=50, seed=1)
    b = run(emb, None, strategy="random-k", budget=50, seed=1)
    c = run(emb, None, strategy="random-k", budget=50, seed=2)
    assert a.count == 50 and len(set(a.indices.tolist())) == 50
    assert a.indices.tolist() == b.indices.tolist() and a.indices.tolist() != c.indices.tolist()
    assert np.all(np.isnan(a.scores)) and sum(a.histogram.values()) == 0
    assert run(emb, None, strategy="random-k", budget=10_000).count == len(emb)
    # With generations the same random set is reported best first, with diagnostic scores.
    scored = run(emb, gens, strategy="random-k", budget=50, seed=1)
    assert sorted(scored.indices.tolist()) == sorted(a.indices.tolist())
    assert np.all(np.diff(scored.scores[scored.indices]) <= 0)


def test_all_keeps_every_pair(big):
    emb, gens, _, _ = big
    assert run(emb, None, strategy="all").indices.tolist() == list(range(len(emb)))
    assert run(emb, gens, strategy="all").count == len(emb)


@pytest.mark.parametrize("aggregate", ["max", "topk_mean"])
@pytest.mark.parametrize("strategy", similarity_strategies())
def test_chunked_equals_unchunked(big, strategy, aggregate):
    emb, gens, gen_prompts, _ = big
    kw = dict(strategy=strategy, aggregate=aggregate, aggregate_k=3, selection="budget", budget=40)
    small = run(emb, gens, gen_prompts, chunk_size=7, **kw)
    whole = run(emb, gens, gen_prompts, chunk_size=100_000, **kw)
    np.testing.assert_allclose(small.scores, whole.scores, atol=1e-6)
    assert small.indices.tolist() == whole.indices.tolist()


def test_report_histogram_and_source_mix(big):
    emb, gens, _, _ = big
    sel = run(emb, gens, selection="budget", budget=60)
    assert sum(sel.histogram.values()) == len(emb) and len(sel.histogram) == 20
    assert "[0.9,1.0]" in sel.histogram and "[-1.0,-0.9)" in sel.histogram
    assert set(sel.source_mix) <= {"a", "b"} and sum(sel.source_mix.values()) == 60
    d = json.loads(json.dumps(sel.to_dict(include_indices=True)))
    assert d["count"] == 60 and d["pool_size"] == len(emb) and d["indices"] == sel.indices.tolist()
    assert d["selected_score"]["min"] <= d["selected_score"]["max"]


def test_bad_inputs_fail_with_a_clear_error(big):
    emb, gens, _, _ = big
    cfg = FilterConfig()
    with pytest.raises(FilterError, match="needs the policy's generations"):
        select_pairs(pairs_for(len(emb)), emb, np.zeros((0, 32), np.float32), None, cfg)
    with pytest.raises(FilterError, match="empty preference pool"):
        select_pairs([], PoolEmbeddings(*(np.zeros((0, 32), np.float32),) * 3), gens, None, cfg)
    with pytest.raises(FilterError, match="pool_emb has 500 rows but there are 3 pairs"):
        select_pairs(pairs_for(3), emb, gens, None, cfg)
    with pytest.raises(FilterError, match="gen_emb has dim 8"):
        select_pairs(pairs_for(len(emb)), emb, gens[:, :8], None, cfg)
    with pytest.raises(FilterError, match="prompt_matched needs gen_prompt_emb"):
        select_pairs(pairs_for(len(emb)), emb, gens, None, FilterConfig(strategy="prompt_matched", selection="budget"))
    with pytest.raises(FilterError, match="gen_emb contains NaN"):
        select_pairs(pairs_for(len(emb)), emb, np.full_like(gens, np.nan), None, cfg)
    broken = PoolEmbeddings(emb.chosen.copy(), emb.rejected, emb.prompt)
    broken.chosen[123, 0] = np.inf
    with pytest.raises(FilterError, match="pool_emb.chosen contains NaN or infinite"):
        select_pairs(pairs_for(len(emb)), broken, gens, None, cfg)


def _unit_rows(a):
    a = np.asarray(a, dtype=np.float32)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def test_per_generation_selection_follows_the_policy_distribution_not_its_rare_mode():
    """90% of generations are in mode A, 10% in mode B. Pool pairs in mode B match a generation
    almost exactly (cos ~1.0), pairs in mode A only at ~0.9. A global top-k fills the budget with mode B;
    per-generation selection gives each generation its share, so mode A dominates."""
    dim = 8
    a, b = np.eye(dim)[0], np.eye(dim)[1]
    rng = np.random.default_rng(0)
    spread = np.eye(dim)[2:].sum(0)  # noise only in dims 2.., so modes stay apart
    gens = _unit_rows(np.concatenate([a + 0.2 * rng.normal(size=(90, dim)) * spread,
                                      b + 0.2 * rng.normal(size=(10, dim)) * spread]))
    near_a = _unit_rows(a + 0.6 * rng.normal(size=(300, dim)) * spread)  # cos ~0.8-0.9 to mode A
    exact_b = _unit_rows(b + 0.05 * rng.normal(size=(300, dim)) * spread)  # cos ~1.0 to mode B
    chosen = np.concatenate([near_a, exact_b])
    pool = PoolEmbeddings(chosen, chosen.copy(), chosen.copy())
    pairs = [PreferencePair(str(i), "p", "c", "r", "A" if i < 300 else "B") for i in range(600)]
    base = FilterConfig(strategy="chosen", threshold=0.8, budget=100, min_records=0)
    glob = select_pairs(pairs, pool, gens, None, base.model_copy(update={"selection": "threshold_and_budget"}))
    per = select_pairs(pairs, pool, gens, None, base.model_copy(update={"selection": "per_generation"}))
    assert glob.source_mix.get("A", 0) / glob.count <= 0.2  # the rare mode takes the global top-k
    assert per.count <= 100 and per.selection == "per_generation"
    assert per.source_mix.get("A", 0) / per.count >= 0.55  # the common mode leads per generation
    assert (per.scores[per.indices] >= 0.8).all()


def test_per_generation_respects_threshold_and_rejects_prompt_matched():
    gens = _unit_rows([[1, 0, 0, 0]] * 4)
    chosen = _unit_rows([[1, 0, 0, 0], [0, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0]])
    pool = PoolEmbeddings(chosen, chosen.copy(), chosen.copy())
    pairs = [PreferencePair(str(i), "p", "c", "r", "s") for i in range(4)]
    cfg = FilterConfig(strategy="chosen", selection="per_generation", threshold=0.5, budget=8)
    sel = select_pairs(pairs, pool, gens, None, cfg)
    assert sorted(sel.indices.tolist()) == [0, 2]  # cos 1.0 and 0.71 pass; 0.0 do not
    with pytest.raises(FilterError, match="per_generation"):
        select_pairs(pairs, pool, gens, gens, cfg.model_copy(update={"strategy": "prompt_matched"}))


# ---------------------------------------------------------------- torch selection == the numpy selection it replaced

SELECTIONS = ("threshold", "budget", "threshold_and_budget", "per_generation")
ALLOWED = [(st, se) for st in similarity_strategies() for se in SELECTIONS if (st, se) != ("prompt_matched", "per_generation")]


@pytest.fixture(scope="module")
def clustered():
    """Pool pairs and generations around 6 shared centres: a pair's best cosine to a generation is ~0.7-0.87."""
    rng = np.random.default_rng(7)
    n, g, d = 600, 40, 24
    centres = random_unit(rng, 6, d)

    def around(k, spread):
        return _unit_rows(centres[rng.integers(0, 6, k)] + spread * rng.normal(size=(k, d)))

    emb = PoolEmbeddings(around(n, 0.15), around(n, 0.15), around(n, 0.2))
    gen_prompts = np.repeat(around(8, 0.2), 5, axis=0)  # 8 prompts x 5 samples
    return emb, around(g, 0.1), gen_prompts


def assert_same_rows(got: np.ndarray, want: np.ndarray, scores: np.ndarray, tol: float = 2e-6) -> None:
    """The same rows in the same order, but for pairs whose scores tie within float rounding (torch and
    numpy round the products differently, so such pairs may swap)."""
    assert sorted(got.tolist()) == sorted(want.tolist())
    np.testing.assert_allclose(scores[got], scores[want], atol=tol)


@pytest.mark.parametrize("threshold", [-1.0, 0.6, 0.85, 1.0])
@pytest.mark.parametrize("aggregate", ["max", "topk_mean"])
@pytest.mark.parametrize("strategy,selection", ALLOWED)
def test_torch_selection_equals_the_numpy_reference(clustered, strategy, selection, aggregate, threshold):
    emb, gens, gen_prompts = clustered
    cfg = FilterConfig(strategy=strategy, selection=selection, aggregate=aggregate, aggregate_k=3, threshold=threshold,
                       budget=120, chunk_size=97)
    want_rows, want_scores = filter_reference.selected_rows(emb, gens, gen_prompts, cfg)
    sel = select_pairs(pairs_for(len(emb)), emb, gens, gen_prompts, cfg)
    np.testing.assert_allclose(sel.scores, want_scores, atol=2e-6)
    assert_same_rows(sel.indices, want_rows, want_scores)
    if threshold <= 0.6:
        assert sel.count > 0


@pytest.mark.parametrize("strategy", ["all", "random-k"])
def test_baselines_report_the_reference_chosen_scores(clustered, strategy):
    emb, gens, _ = clustered
    cfg = FilterConfig(strategy=strategy, budget=50)
    sel = select_pairs(pairs_for(len(emb)), emb, gens, None, cfg, seed=4)
    want = filter_reference.pool_scores(emb, gens, None, cfg, "chosen")
    np.testing.assert_allclose(sel.scores, want, atol=2e-6)
    assert sel.indices.tolist() == sel.indices[np.argsort(-want[sel.indices], kind="stable")].tolist()


@pytest.mark.parametrize("budget,threshold", [(120, 0.85), (200, 0.8), (600, 0.5), (40, 0.88)])
def test_per_generation_widening_equals_the_reference_loop(clustered, budget, threshold):
    """Thresholds where the first share (ceil(budget / G) rows per generation) keeps too few rows, so the
    share widens; the rows equal the reference loop's, which recomputed the whole product each time."""
    emb, gens, _ = clustered
    for strategy in ("chosen", "both"):
        got = per_generation_rows(emb, gens, strategy, budget, threshold, chunk_size=50)
        want = filter_reference.per_generation_rows(emb, filter_reference.unit_rows(gens, "g"), strategy, budget,
                                                    threshold, chunk_size=7)
        assert got.tolist() == want.tolist()


def test_nothing_over_the_threshold_then_min_records_rows_come_back(clustered):
    emb, gens, _ = clustered
    pairs = pairs_for(len(emb))
    cfg = FilterConfig(strategy="chosen", selection="per_generation", threshold=1.0, budget=100, min_records=30)
    sel = select_pairs(pairs, emb, gens, None, cfg)
    assert sel.count == 0  # nothing is that similar, however wide each generation's share
    topped = with_min_records(pairs, sel, cfg, reselect=None)  # a similarity strategy reuses the scores
    budget_cfg = cfg.model_copy(update={"selection": "budget", "budget": 30})
    want_rows, _ = filter_reference.selected_rows(emb, gens, None, budget_cfg)
    assert_same_rows(topped.indices, want_rows, topped.scores)
    assert topped.count == 30
    assert (topped.selection, topped.budget, topped.threshold) == ("budget", 30, None)
    again = select_pairs(pairs, emb, gens, None, budget_cfg)  # what the driver re-ran before
    a, b = topped.to_dict(include_indices=True), again.to_dict(include_indices=True)
    a.pop("seconds"), b.pop("seconds")
    assert a == b
    random_k = cfg.model_copy(update={"strategy": "random-k", "budget": 10})
    few = select_pairs(pairs, emb, gens, None, random_k, seed=2)
    more = with_min_records(pairs, few, random_k, lambda c: select_pairs(pairs, emb, gens, None, c, seed=2))
    assert few.count == 10 and more.count == 30 and more.strategy == "random-k"
