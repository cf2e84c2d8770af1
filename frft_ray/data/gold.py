"""The benchmark's gold reward: scores any (prompt, response) text exactly against the topic's known facts.

The prompt names one of `TOPICS`; the response is credited for distinct correct facts and penalised
for wrong facts, refusals, rudeness, filler, excess length, garbage and repetition. The formula is
documented on `gold_breakdown` and in docs/benchmark.md.
"""

from __future__ import annotations

import re
from functools import lru_cache

from frft_ray.data.benchmark_topics import (
    CHATTER, CONCISE_LEADS, FILLERS, OPENERS, REFUSAL_KEYS, REFUSALS, RUDE, RUDE_KEYS, TEMPLATES, TOPICS,
)
from frft_ray.data.records import PreferencePair

# --- gold reward constants (see gold_breakdown) ---
W_CORRECT, W_WRONG, W_NO_ANSWER = 1.0, 1.0, 1.0
W_REFUSAL, W_RUDE, W_FILLER = 2.0, 2.5, 0.5
LENGTH_FREE_WORDS, W_LENGTH = 30, 0.1
W_GARBAGE, W_REPEAT = 3.0, 2.0
EMPTY_REWARD = -3.0

# ----------------------------------------------------------------------------------------------
# Gold reward
# ----------------------------------------------------------------------------------------------

_WORD = re.compile(r"[a-z0-9]+")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _build_index():
    """Every recognisable phrase, keyed by its first word, longest first (leftmost-longest match)."""
    entries: list[tuple[tuple[str, ...], str, int]] = []  # (words, kind, id)
    fact_topic: list[int] = []  # fact id -> topic index
    fact_correct: list[bool] = []
    for ti, t in enumerate(TOPICS):
        for phrase, correct in [(f, True) for f in t.facts] + [(w, False) for w in t.wrong]:
            entries.append((tuple(_words(phrase)), "fact", len(fact_topic)))
            fact_topic.append(ti)
            fact_correct.append(correct)
    for kind, phrases in (("filler", FILLERS), ("refusal", REFUSAL_KEYS), ("rude", RUDE_KEYS)):
        entries += [(tuple(_words(p)), kind, i) for i, p in enumerate(phrases)]
    index: dict[str, list[tuple[tuple[str, ...], str, int]]] = {}
    for e in sorted(entries, key=lambda e: -len(e[0])):
        index.setdefault(e[0][0], []).append(e)
    return index, fact_topic, fact_correct


_INDEX, _FACT_TOPIC, _FACT_CORRECT = _build_index()
_CONNECTORS = "first then finally also and just"
_VOCAB = frozenset(
    _words(" ".join(
        [p for t in TOPICS for p in (t.subject, *t.facts, *t.wrong)]
        + [tpl for tpls in TEMPLATES.values() for tpl in tpls]
        + list(OPENERS + CONCISE_LEADS + FILLERS + REFUSALS + RUDE + CHATTER)
        + [_CONNECTORS, "human assistant"]
    ))
)
_SUBJECTS = sorted(
    ((" " + " ".join(_words(t.subject)) + " ", i) for i, t in enumerate(TOPICS)), key=lambda s: -len(s[0])
)


@lru_cache(maxsize=8192)
def topic_of(prompt: str) -> int:
    """Index into TOPICS of the topic the last Human turn of `prompt` asks about."""
    last = prompt.rsplit("Human:", 1)[-1].split("Assistant:", 1)[0]
    padded = " " + " ".join(_words(last)) + " "
    for subject, i in _SUBJECTS:
        if subject in padded:
            return i
    raise ValueError(f"gold reward: prompt names no benchmark topic: {prompt[-120:]!r}")


def _match(words: list[str]) -> list[tuple[str, int]]:
    found, i, n = [], 0, len(words)
    while i < n:
        for phrase, kind, pid in _INDEX.get(words[i], ()):
            if tuple(words[i : i + len(phrase)]) == phrase:
                found.append((kind, pid))
                i += len(phrase)
                break
        else:
            i += 1
    return found


_PART_NAMES = ("correct", "wrong", "no_answer", "refusal", "rude", "filler", "length", "garbage", "repetition")


@lru_cache(maxsize=1 << 16)
def _score(topic: int, response: str) -> tuple[float, ...]:
    """Gold terms of `response` for TOPICS[topic], in _PART_NAMES order; () for an empty response."""
    words = _words(response)
    if not words:
        return ()
    correct, wrong, kinds, fillers = set(), set(), set(), 0
    for kind, pid in _match(words):
        if kind == "fact":
            (correct if _FACT_TOPIC[pid] == topic and _FACT_CORRECT[pid] else wrong).add(pid)
        elif kind == "filler":
            fillers += 1
        else:
            kinds.add(kind)
    n = len(words)
    trigrams = list(zip(words, words[1:], words[2:]))
    return (
        W_CORRECT * len(correct),
        -W_WRONG * len(wrong),
        -W_NO_ANSWER * (not correct),
        -W_REFUSAL * ("refusal" in kinds),
        -W_RUDE * ("rude" in kinds),
        -W_FILLER * fillers,
        -W_LENGTH * max(0, n - LENGTH_FREE_WORDS),
        -W_GARBAGE * len([w for w in words if w not in _VOCAB]) / n,
        -W_REPEAT * (1 - len(set(trigrams)) / len(trigrams)) if trigrams else 0.0,
    )


def gold_breakdown(prompt: str, response: str) -> dict[str, float]:
    """The gold reward of `response` to `prompt`, term by term (key "total" is the reward).

    Words are lowercase runs of letters/digits; phrases match whole word sequences,
    leftmost-longest, so a wrong fact that contains a correct one counts only as wrong.

        total = 1.0 * C            C: distinct correct facts of the prompt's topic
              - 1.0 * W            W: distinct wrong facts (this topic's wrong ones, any other topic's)
              - 1.0 * [C == 0]     answers nothing
              - 2.0 * [refusal]    any refusal key phrase
              - 2.5 * [rude]       any rude key phrase
              - 0.5 * F            F: filler sentences, every occurrence
              - 0.1 * max(0, N - 30)                N: words
              - 3.0 * (out-of-vocabulary words / N)  garbage
              - 2.0 * (1 - distinct / all word trigrams)  repetition
    An empty (or punctuation-only) response scores -3.0. Raises ValueError only when the prompt
    names no benchmark topic, TypeError when the response is not a string.
    """
    if not isinstance(response, str):
        raise TypeError(f"gold reward: response must be str, got {type(response).__name__}")
    terms = _score(topic_of(prompt), response)
    if not terms:
        return {"empty": EMPTY_REWARD, "total": EMPTY_REWARD}
    parts = dict(zip(_PART_NAMES, terms))
    parts["total"] = round(sum(terms), 6)
    return parts


def gold_reward(prompt: str, response: str) -> float:
    """Exact gold score of any response text to a benchmark prompt (formula: gold_breakdown)."""
    if not isinstance(response, str):
        raise TypeError(f"gold reward: response must be str, got {type(response).__name__}")
    terms = _score(topic_of(prompt), response)
    return round(sum(terms), 6) if terms else EMPTY_REWARD


def gold_rewards(prompts: list[str], responses: list[str]) -> list[float]:
    if len(prompts) != len(responses):
        raise ValueError(f"gold_rewards: {len(prompts)} prompts but {len(responses)} responses")
    return [gold_reward(p, r) for p, r in zip(prompts, responses)]


def relabel_by_gold(pairs: list[PreferencePair]) -> list[PreferencePair]:
    """Orient each pair so `chosen` has the higher gold reward; drop exact ties. Keeps id/source."""
    out = []
    for p in pairs:
        gc, gr = gold_reward(p.prompt, p.chosen), gold_reward(p.prompt, p.rejected)
        if gc > gr:
            out.append(p)
        elif gr > gc:
            out.append(PreferencePair(p.id, p.prompt, p.rejected, p.chosen, p.source))
    return out
