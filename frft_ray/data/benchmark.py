"""The bundled offline benchmark: a generated stand-in for a mixed-source preference set.

Why it exists: FRFT's claim is about a pool whose labels come from several annotator pools with
different biases, where only a minority of pairs resemble what the policy writes. Real sets
(HH-RLHF) cannot be judged exactly, so this module generates one that can: every prompt asks about
one of `TOPICS`, whose correct facts are known, and `gold_reward` scores any text against them.

What it generates from a `BenchmarkConfig` (no data files; same config -> same output):
- `sft`: demonstrations, mostly concise answers (some partly wrong) -- what the policy learns to write.
- `pool`: preference pairs in four segments, each `source` = "<style>@<annotator pool>":
  "concise@accurate" (15%, fine-grained concise pairs, labels follow gold 93% of the time),
  "verbose@length" (35%, a pool that prefers the longer reply 85% of the time),
  "refusal@safety" (20%, a pool that prefers the refusal 75% of the time),
  "mixed@random" (30%, any styles, labels follow gold 60% of the time).
- `eval_prompts`: prompts whose (topic, question template) combination appears in no training split.

The gold reward lives in `frft_ray/data/gold.py`; its formula is on `gold_breakdown` and in docs/benchmark.md.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

from frft_ray.config import BenchmarkConfig
from frft_ray.data.benchmark_topics import (
    CHATTER, CONCISE_LEADS, FILLERS, OPENERS, REFUSALS, RUDE, TEMPLATES, TOPICS,
)
from frft_ray.data.gold import (  # noqa: F401 (re-exported: the benchmark's public API)
    EMPTY_REWARD, gold_breakdown, gold_reward, gold_rewards, relabel_by_gold, topic_of,
)
from frft_ray.data.records import PreferencePair

SOURCES: tuple[str, ...] = ("concise", "partial", "verbose", "refusal", "offtopic", "rude")
"""Response styles (generation sources). Demo.source is one of these."""

HELDOUT_TEMPLATES_PER_TOPIC = 2
SFT_MIX = {"concise": 0.65, "partial": 0.22, "verbose": 0.08, "refusal": 0.05}


@dataclass(frozen=True)
class Demo:
    """One SFT demonstration: `response` continues `prompt`; `source` is its style."""

    prompt: str
    response: str
    source: str


@dataclass
class Benchmark:
    sft: list[Demo]
    pool: list[PreferencePair]
    eval_prompts: list[str]



# ----------------------------------------------------------------------------------------------
# Response styles
# ----------------------------------------------------------------------------------------------

_PREFIX_FILLERS = tuple(f for f in FILLERS if f.endswith(","))
_SENTENCE_FILLERS = tuple(f for f in FILLERS if not f.endswith(","))
_BY_KIND = {k: [i for i, t in enumerate(TOPICS) if t.kind == k] for k in TEMPLATES}


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _join(rng: random.Random, clauses: list[str], kind: str) -> str:
    """Clauses -> one short answer, in one of a few phrasings."""
    if len(clauses) == 1:
        return _cap(clauses[0]) + "."
    form = rng.randrange(4)
    if form == 0:
        return ". ".join(_cap(c) for c in clauses) + "."
    if form == 1:
        return _cap(", ".join(clauses[:-1])) + " and " + clauses[-1] + "."
    if kind == "about":
        return _cap(clauses[0]) + ". Also, " + ", ".join(clauses[1:]) + "."
    if form == 2:
        return _cap(", then ".join(clauses)) + "."
    middle = "".join(f" Then {c}." for c in clauses[1:-1])
    return f"First, {clauses[0]}.{middle} Finally, {clauses[-1]}."


def _pick_facts(rng: random.Random, ti: int, k: int) -> list[str]:
    facts = TOPICS[ti].facts
    return [facts[i] for i in sorted(rng.sample(range(len(facts)), k))]


def _wrong_fact(rng: random.Random, ti: int) -> str:
    if rng.random() < 0.6:
        return rng.choice(TOPICS[ti].wrong)
    other = rng.choice([j for j in _BY_KIND[TOPICS[ti].kind] if j != ti])
    return rng.choice(TOPICS[other].facts)


def _concise(rng, ti):
    """1-4 correct facts (2-3 mostly), nothing else: what the SFT policy mostly learns to write."""
    k = rng.choices((1, 2, 3, 4), (0.2, 0.35, 0.35, 0.1))[0]
    return rng.choice(CONCISE_LEADS) + _join(rng, _pick_facts(rng, ti, k), TOPICS[ti].kind)


def _partial(rng, ti):
    """Concise, but 1-2 wrong facts (this topic's corruptions or another topic's steps) mixed in."""
    clauses = _pick_facts(rng, ti, rng.choice((1, 2, 2, 3)))
    for _ in range(2 if rng.random() < 0.25 else 1):
        clauses.insert(rng.randrange(len(clauses) + 1), _wrong_fact(rng, ti))
    return rng.choice(CONCISE_LEADS) + _join(rng, clauses, TOPICS[ti].kind)


def _verbose(rng, ti):
    """1-3 correct facts padded with 2-3 filler sentences or prefixes (about 20-40 words)."""
    parts = [_cap(f) + "." for f in _pick_facts(rng, ti, rng.choice((1, 2, 2, 3)))]
    fillers = rng.sample(FILLERS, rng.choice((2, 2, 3)))
    prefixes = [f for f in fillers if f.endswith(",")]
    for i, prefix in zip(rng.sample(range(len(parts)), min(len(prefixes), len(parts))), prefixes):
        parts[i] = prefix + " " + parts[i][0].lower() + parts[i][1:]
    for filler in fillers:
        if not filler.endswith(","):
            parts.insert(rng.randrange(len(parts) + 1), filler)
    return " ".join(parts)


def _refusal(rng, ti):
    return " ".join(rng.sample(REFUSALS, rng.choice((1, 2))))


def _offtopic(rng, ti):
    """Chatter, or a concise answer to a different topic's question."""
    if rng.random() < 0.5:
        return " ".join(rng.sample(CHATTER, rng.choice((1, 2))))
    other = rng.choice([j for j in range(len(TOPICS)) if j != ti])
    return _join(rng, _pick_facts(rng, other, 2), TOPICS[other].kind)


def _rude(rng, ti):
    """An insult, often followed by 1-2 correct facts."""
    text = rng.choice(RUDE)
    if rng.random() < 0.6:
        text += " Just " + _join(rng, _pick_facts(rng, ti, rng.choice((1, 2))), TOPICS[ti].kind).lower()
    if rng.random() < 0.3:
        text += " " + rng.choice([r for r in RUDE if r not in text])
    return text


_STYLE_FN = {"concise": _concise, "partial": _partial, "verbose": _verbose,
             "refusal": _refusal, "offtopic": _offtopic, "rude": _rude}


def respond(rng: random.Random, style: str, topic: int) -> str:
    """One response of `style` to a question about TOPICS[topic], HH-RLHF style (leading space)."""
    if style not in _STYLE_FN:
        raise ValueError(f"unknown style {style!r}; styles are {', '.join(SOURCES)}")
    return " " + _STYLE_FN[style](rng, topic)


# ----------------------------------------------------------------------------------------------
# Prompts, annotators, splits
# ----------------------------------------------------------------------------------------------


def _prompt(ti: int, template: int, opener: int) -> str:
    t = TOPICS[ti]
    return f"\n\nHuman: {OPENERS[opener]}{TEMPLATES[t.kind][template].format(x=t.subject)}\n\nAssistant:"


def _rng(seed: int, stream: str) -> random.Random:
    return random.Random(f"frft-benchmark:{seed}:{stream}")


class _Prompts:
    """Splits (topic, template) combinations into training and held-out sets for one seed."""

    def __init__(self, seed: int):
        rng = _rng(seed, "holdout")
        self.heldout, self.train = [], []
        for ti, t in enumerate(TOPICS):
            n = len(TEMPLATES[t.kind])
            held = set(rng.sample(range(n), HELDOUT_TEMPLATES_PER_TOPIC))
            self.train.append([j for j in range(n) if j not in held])
            self.heldout += [(ti, j) for j in sorted(held)]

    def sample_train(self, rng: random.Random) -> tuple[int, str]:
        ti = rng.randrange(len(TOPICS))
        return ti, _prompt(ti, rng.choice(self.train[ti]), rng.randrange(len(OPENERS)))

    def eval_prompts(self, n: int, rng: random.Random) -> list[str]:
        every = [_prompt(ti, j, o) for ti, j in self.heldout for o in range(len(OPENERS))]
        if n > len(every):
            raise ValueError(f"data.benchmark.eval_prompts is {n}; the benchmark holds out at most {len(every)}")
        return rng.sample(every, n)


@dataclass(frozen=True)
class Annotator:
    """How one annotator pool labels a pair. With probability `bias` it judges by its own `rule`
    (gold: the gold reward; length: the longer reply; safety: the refusal) and follows that rule with
    probability `follows`; otherwise it judges by gold and follows it with probability `gold_follows`.
    A rule that cannot tell the two replies apart gives a coin flip."""

    rule: str
    follows: float
    bias: float = 1.0
    gold_follows: float = 0.5


# Annotator presets (`data.benchmark.annotators`); each names the pool of every SEGMENTS source.
# adversarial: strong biases, labels that agree with gold about half the time pooled (FRFT's premise).
# hh_like: the same biases, milder, pooled agreement ~0.70, nearer real human preference sets.
# uniform: built per config by `annotator_pools` (every pool follows gold at `label_accuracy`).
ANNOTATORS: dict[str, dict[str, Annotator]] = {
    "adversarial": {"accurate": Annotator("gold", 0.93), "length": Annotator("length", 0.85),
                    "safety": Annotator("safety", 0.75), "random": Annotator("gold", 0.6)},
    "hh_like": {"accurate": Annotator("gold", 0.9), "length": Annotator("length", 0.85, bias=0.25, gold_follows=0.8),
                "safety": Annotator("safety", 0.75, bias=0.25, gold_follows=0.8), "random": Annotator("gold", 0.7)},
}


def annotator_pools(cfg: BenchmarkConfig) -> dict[str, Annotator]:
    """The annotator of every pool under `cfg.annotators`."""
    if cfg.annotators == "uniform":
        return {pool: Annotator("gold", cfg.label_accuracy) for pool in ANNOTATORS["adversarial"]}
    return ANNOTATORS[cfg.annotators]


def _rule_keys(rule, prompt, a, sa, b, sb):
    if rule == "gold":
        return gold_reward(prompt, a), gold_reward(prompt, b)
    if rule == "length":
        return len(a.split()), len(b.split())
    return sa == "refusal", sb == "refusal"  # safety


def _annotate(rng, annotator: Annotator, prompt, a, sa, b, sb) -> bool:
    """True if `annotator` prefers a over b."""
    rule, follows = annotator.rule, annotator.follows
    if annotator.bias < 1 and rng.random() >= annotator.bias:  # (no draw at bias 1: adversarial draws stay as they were)
        rule, follows = "gold", annotator.gold_follows
    ka, kb = _rule_keys(rule, prompt, a, sa, b, sb)
    if ka == kb:
        return rng.random() < 0.5
    return (ka > kb) == (rng.random() < follows)


# (source, share of the pool, [(style a, style b, weight)])
SEGMENTS: tuple[tuple[str, float, tuple[tuple[str, str, float], ...]], ...] = (
    ("concise@accurate", 0.15, (("concise", "concise", 0.4), ("concise", "partial", 0.45),
                                ("partial", "partial", 0.15))),
    ("verbose@length", 0.35, (("verbose", "concise", 0.7), ("verbose", "partial", 0.15), ("verbose", "verbose", 0.15))),
    ("refusal@safety", 0.20, (("refusal", "concise", 0.4), ("refusal", "verbose", 0.3), ("refusal", "partial", 0.15),
                              ("refusal", "rude", 0.15))),
    ("mixed@random", 0.30, tuple((a, b, 1.0) for i, a in enumerate(SOURCES) for b in SOURCES[i:])),
)
POLICY_LIKE_SOURCE = "concise@accurate"


def _segment_counts(n: int) -> list[int]:
    """Exact per-segment counts summing to n (largest remainder)."""
    raw = [share * n for _, share, _ in SEGMENTS]
    counts = [int(r) for r in raw]
    for i in sorted(range(len(raw)), key=lambda i: counts[i] - raw[i])[: n - sum(counts)]:
        counts[i] += 1
    return counts


def _make_pair(rng, prompts, pid, source, mix, annotators: dict[str, Annotator]) -> PreferencePair:
    pool = source.split("@")[1]
    styles, weights = [(a, b) for a, b, _ in mix], [w for *_, w in mix]
    sa, sb = rng.choices(styles, weights)[0]
    ti, prompt = prompts.sample_train(rng)
    for _ in range(8):  # distinct texts; the accurate pool also needs a gold difference to judge
        a, b = respond(rng, sa, ti), respond(rng, sb, ti)
        if a != b and (pool != "accurate" or gold_reward(prompt, a) != gold_reward(prompt, b)):
            break
    if _annotate(rng, annotators[pool], prompt, a, sa, b, sb):
        return PreferencePair(pid, prompt, a, b, source)
    return PreferencePair(pid, prompt, b, a, source)


def make_benchmark(cfg: BenchmarkConfig) -> Benchmark:
    """Generate the SFT demos, the preference pool and the held-out eval prompts for `cfg`."""
    prompts = _Prompts(cfg.seed)
    rng = _rng(cfg.seed, "sft")
    styles, weights = list(SFT_MIX), list(SFT_MIX.values())
    sft = []
    for _ in range(cfg.sft_size):
        style = rng.choices(styles, weights)[0]
        ti, prompt = prompts.sample_train(rng)
        sft.append(Demo(prompt, respond(rng, style, ti), style))
    rng = _rng(cfg.seed, "pool")
    order = [s for s, c in zip(SEGMENTS, _segment_counts(cfg.pool_size)) for _ in range(c)]
    rng.shuffle(order)
    annotators = annotator_pools(cfg)
    pool = [_make_pair(rng, prompts, f"bench{cfg.seed}-{i:06d}", src, mix, annotators)
            for i, (src, _, mix) in enumerate(order)]
    return Benchmark(sft, pool, prompts.eval_prompts(cfg.eval_prompts, _rng(cfg.seed, "eval")))


def style_samples(style: str, n: int, seed: int = 0) -> list[tuple[str, str]]:
    """n (training prompt, response) pairs of one style: for checking the gold reward per style."""
    prompts, rng = _Prompts(seed), _rng(seed, f"style:{style}")
    out = []
    for _ in range(n):
        ti, prompt = prompts.sample_train(rng)
        out.append((prompt, respond(rng, style, ti)))
    return out


def describe(benchmark: Benchmark) -> dict:
    """Counts by source, the policy-like share, and label agreement with gold per pool (ties excluded)."""
    agree, ties = Counter(), Counter()
    for p in benchmark.pool:
        gc, gr = gold_reward(p.prompt, p.chosen), gold_reward(p.prompt, p.rejected)
        ties[p.source] += gc == gr
        agree[p.source] += gc > gr
    by_source = Counter(p.source for p in benchmark.pool)
    n_untied = {s: by_source[s] - ties[s] for s in by_source}
    total_untied = sum(n_untied.values())
    return {
        "sft": len(benchmark.sft),
        "pool": len(benchmark.pool),
        "eval_prompts": len(benchmark.eval_prompts),
        "topics": len(TOPICS),
        "sft_by_source": dict(Counter(d.source for d in benchmark.sft)),
        "pool_by_source": dict(by_source),
        "policy_like_share": by_source[POLICY_LIKE_SOURCE] / max(1, len(benchmark.pool)),
        "gold_agreement": sum(agree.values()) / max(1, total_untied),
        "gold_agreement_by_pool": {s: agree[s] / max(1, n_untied[s]) for s in sorted(by_source)},
        "gold_ties": sum(ties.values()),
    }
