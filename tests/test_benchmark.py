"""The bundled benchmark: deterministic, held-out eval prompts, a gold reward that ranks styles as
designed, and a pool whose policy-like pairs are a minority labelled by the accurate annotators."""

from __future__ import annotations

import statistics

import pytest

from frft_ray.config import BenchmarkConfig
from frft_ray.data.benchmark import (
    EMPTY_REWARD, SEGMENTS, SOURCES, Benchmark, Demo, describe, gold_breakdown, gold_reward, gold_rewards,
    make_benchmark, relabel_by_gold, style_samples,
)
from frft_ray.data.benchmark_topics import (
    CHATTER, FILLERS, OPENERS, REFUSAL_KEYS, REFUSALS, RUDE, RUDE_KEYS, TEMPLATES, TOPICS,
)
from frft_ray.data.records import PreferencePair

SMALL = BenchmarkConfig(seed=3, sft_size=300, pool_size=4000, eval_prompts=100)


@pytest.fixture(scope="module")
def bench() -> Benchmark:
    return make_benchmark(SMALL)


@pytest.fixture(scope="module")
def stats(bench) -> dict:
    return describe(bench)


def _question(prompt: str) -> str:
    """The question without its opener: identifies the (topic, template) combination."""
    q = prompt.split("Human: ", 1)[1].split("\n\nAssistant:")[0]
    for o in sorted(OPENERS, key=len, reverse=True):
        if o and q.startswith(o):
            return q[len(o):]
    return q


def _prompt_for(topic) -> str:
    return f"\n\nHuman: {TEMPLATES[topic.kind][0].format(x=topic.subject)}\n\nAssistant:"


def _norm(text: str) -> str:
    return " " + " ".join("".join(c if c.isalnum() else " " for c in text.lower()).split()) + " "


# --- tables --------------------------------------------------------------------------------------


def test_topic_tables_are_unambiguous():
    assert 30 <= len(TOPICS) <= 60
    phrases = [_norm(p) for t in TOPICS for p in t.facts + t.wrong]
    assert len(phrases) == len(set(phrases)), "a fact phrase appears twice"
    stock = [_norm(s) for s in FILLERS + REFUSALS + RUDE + CHATTER + REFUSAL_KEYS + RUDE_KEYS]
    assert not [(p, s) for p in phrases for s in stock if p in s or s in p]
    subjects = [_norm(t.subject) for t in TOPICS]
    assert not [(a, b) for a in subjects for b in subjects if a != b and a in b]
    assert all(len(t.facts) == 5 and len(t.wrong) == 3 for t in TOPICS)


# --- generation ----------------------------------------------------------------------------------


def test_same_seed_same_output_different_seed_differs(bench):
    again = make_benchmark(SMALL)
    assert again == bench
    other = make_benchmark(SMALL.model_copy(update={"seed": 4}))
    assert other.pool != bench.pool and other.sft != bench.sft and other.eval_prompts != bench.eval_prompts


def test_sizes_format_and_sources(bench):
    assert len(bench.sft) == SMALL.sft_size and len(bench.pool) == SMALL.pool_size
    assert len(bench.eval_prompts) == len(set(bench.eval_prompts)) == SMALL.eval_prompts
    assert all(isinstance(d, Demo) and d.source in SOURCES for d in bench.sft)
    assert all(isinstance(p, PreferencePair) for p in bench.pool)
    assert {p.source for p in bench.pool} == {s for s, _, _ in SEGMENTS}
    assert len({p.id for p in bench.pool}) == len(bench.pool)
    prompts = [d.prompt for d in bench.sft] + [p.prompt for p in bench.pool] + bench.eval_prompts
    assert all(p.startswith("\n\nHuman: ") and p.endswith("\n\nAssistant:") for p in prompts)
    responses = [d.response for d in bench.sft] + [r for p in bench.pool for r in (p.chosen, p.rejected)]
    assert all(r.startswith(" ") and not r.startswith("  ") for r in responses)
    assert all(p.chosen != p.rejected for p in bench.pool)


def test_eval_prompts_are_held_out_phrasings(bench):
    train = {d.prompt for d in bench.sft} | {p.prompt for p in bench.pool}
    assert not train & set(bench.eval_prompts)
    # stronger: the question templates of eval prompts never appear, with any opener, in training
    assert not {_question(p) for p in train} & {_question(p) for p in bench.eval_prompts}
    # and every topic still appears in training
    assert len({_question(p).lower() for p in train}) > len(TOPICS)


def test_too_many_eval_prompts_is_a_clear_error():
    with pytest.raises(ValueError, match="data.benchmark.eval_prompts"):
        make_benchmark(BenchmarkConfig(sft_size=1, pool_size=10, eval_prompts=100_000))


def test_responses_are_short_enough_for_a_tiny_policy():
    for style in SOURCES:
        words = [len(r.split()) for _, r in style_samples(style, 300)]
        assert max(words) <= 50, style
        if style in ("concise", "partial"):
            assert statistics.mean(words) <= 20 and max(words) <= 36, style


# --- gold reward ---------------------------------------------------------------------------------


def test_gold_ranks_styles_as_designed():
    mean = {s: statistics.mean(gold_reward(p, r) for p, r in style_samples(s, 400)) for s in SOURCES}
    assert mean["concise"] > mean["partial"] > max(mean["refusal"], mean["offtopic"], mean["rude"])
    assert mean["concise"] > mean["verbose"] > max(mean["refusal"], mean["offtopic"], mean["rude"])


def test_gold_fine_differences_within_a_style():
    for t in TOPICS:
        prompt = _prompt_for(t)
        a, b, c = (f.capitalize() for f in t.facts[:3])
        one, three = f" {a}.", f" {a}. {b}. {c}."
        assert gold_reward(prompt, three) - gold_reward(prompt, one) == pytest.approx(2.0)
        with_wrong = f" {a}. {b}. {t.wrong[0].capitalize()}."
        assert gold_reward(prompt, f" {a}. {b}.") > gold_reward(prompt, with_wrong)
        padded = f" {FILLERS[0]} {a}. {FILLERS[7]} {b}."
        assert gold_reward(prompt, f" {a}. {b}.") > gold_reward(prompt, padded)
        # facts of another topic count as wrong here
        other = TOPICS[(TOPICS.index(t) + 1) % len(TOPICS)]
        assert gold_breakdown(prompt, f" {other.facts[0]}.")["wrong"] == -1.0


def test_gold_counts_distinct_facts_and_penalises_repetition():
    t = TOPICS[0]
    prompt, fact = _prompt_for(t), t.facts[0]
    once, thrice = gold_breakdown(prompt, f" {fact}."), gold_breakdown(prompt, f" {fact}. {fact}. {fact}.")
    assert once["correct"] == thrice["correct"] == 1.0
    assert thrice["total"] < once["total"] and thrice["repetition"] < 0


def test_gold_on_garbage_and_empty_is_low_and_never_raises():
    prompt = _prompt_for(TOPICS[5])
    floor = min(gold_reward(p, r) for p, r in style_samples("concise", 200))
    garbage = ["", "   ", "!!!", "\n\nHuman:", "qzx vbn wrtp kkk", "the the the the the the", "a" * 5000,
               " ".join(["zz"] * 300), "\x00\ufffd ☃ 🤖", "Ωmega ñandú"]
    for text in garbage:
        g = gold_reward(prompt, text)
        assert g < 0 and g < floor, (text[:20], g)
    assert gold_reward(prompt, "") == EMPTY_REWARD


def test_gold_input_errors_are_clear():
    with pytest.raises(ValueError, match="names no benchmark topic"):
        gold_reward("\n\nHuman: What is the meaning of life?\n\nAssistant:", " Forty two.")
    with pytest.raises(TypeError, match="response must be str"):
        gold_reward(_prompt_for(TOPICS[0]), None)
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        gold_rewards(["a", "b"], ["c"])


def test_gold_rewards_matches_gold_reward(bench):
    pairs = bench.pool[:50]
    assert gold_rewards([p.prompt for p in pairs], [p.chosen for p in pairs]) == [
        gold_reward(p.prompt, p.chosen) for p in pairs
    ]


# --- the pool's label structure ------------------------------------------------------------------


def test_policy_like_pairs_are_a_minority_unlike_the_sft_mix(bench, stats):
    assert 0.10 <= stats["policy_like_share"] <= 0.20
    sft_concise = sum(d.source in ("concise", "partial") for d in bench.sft) / len(bench.sft)
    assert sft_concise >= 0.8


def test_annotator_pools_agree_with_gold_as_designed(stats):
    by_pool = stats["gold_agreement_by_pool"]
    assert by_pool["concise@accurate"] > 0.85
    assert by_pool["verbose@length"] < 0.45 and by_pool["refusal@safety"] < 0.45
    assert 0.45 < by_pool["mixed@random"] < 0.75
    assert 0.35 < stats["gold_agreement"] < 0.65  # pooled: the signal averages out


def _agreement_tolerance(rate: float, n: int) -> float:
    """Four binomial standard errors: a measured agreement further than this from `rate` is not noise."""
    return 4 * (rate * (1 - rate) / n) ** 0.5


@pytest.mark.parametrize("rate", [0.72, 0.9])
def test_uniform_annotators_follow_gold_at_label_accuracy(rate):
    cfg = SMALL.model_copy(update={"annotators": "uniform", "label_accuracy": rate})
    b = make_benchmark(cfg)
    s = describe(b)
    untied = len(b.pool) - s["gold_ties"]
    assert abs(s["gold_agreement"] - rate) < _agreement_tolerance(rate, untied)
    for source, agree in s["gold_agreement_by_pool"].items():
        n = sum(p.source == source for p in b.pool) * untied / len(b.pool)  # about; ties are spread over pools
        assert abs(agree - rate) < _agreement_tolerance(rate, n), source


def test_hh_like_annotators_keep_milder_biases_and_agree_like_human_sets():
    s = describe(make_benchmark(SMALL.model_copy(update={"annotators": "hh_like"})))
    by_pool = s["gold_agreement_by_pool"]
    assert 0.65 <= s["gold_agreement"] <= 0.75  # real human preference sets: ~65-75%
    for biased in ("verbose@length", "refusal@safety"):  # still biased (below the accurate pool), but milder
        assert 0.55 < by_pool[biased] < by_pool["concise@accurate"] - 0.1
    assert by_pool["concise@accurate"] > 0.85


def test_adversarial_is_the_default_preset():
    assert BenchmarkConfig().annotators == "adversarial"


def test_relabel_by_gold_orients_every_pair_and_drops_ties(bench, stats):
    fixed = relabel_by_gold(bench.pool)
    assert len(fixed) == len(bench.pool) - stats["gold_ties"]
    assert all(gold_reward(p.prompt, p.chosen) > gold_reward(p.prompt, p.rejected) for p in fixed)
    original = {p.id: p for p in bench.pool}
    assert all({p.chosen, p.rejected} == {original[p.id].chosen, original[p.id].rejected} for p in fixed)
    assert all(p.source == original[p.id].source for p in fixed)
