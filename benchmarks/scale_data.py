"""A synthetic preference pool whose text lengths follow HH-RLHF's, written as an HH-RLHF `.jsonl.gz`.

`benchmarks/scale.py` grows the pool to 1M pairs offline, so it cannot download the real file. The
length model below is seeded and states the HH-RLHF train-split figures it follows (approximate,
from the dataset's published transcripts; `frft-ray data stats FILE --format hh-rlhf` prints the
exact ones of a real file):

- 160,800 pairs; a transcript has k Human turns, k - 1 earlier Assistant turns and the final
  Assistant response, k >= 1 with mean ~2.2 (about half the prompts are single-turn);
- a Human turn ~80 characters on average (median ~60), an earlier Assistant turn ~270 (median ~180);
- the final responses ~280 characters on average (median ~170), long tail to several thousand;
- so a prompt averages ~550 characters, and a small share of long multi-turn conversations run to
  tens of thousands (modelled here as 0.5% of prompts with 10-30 turns of ~800-character answers).

Words are whole-word entries of the bundled MiniLM vocabulary, so a character costs about as many
word pieces as English text does, and every text is distinct (as HH-RLHF's almost all are).
"""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import numpy as np

TURNS_Q = 0.55  # k = 1 + Geometric: P(k) = (1 - q) q^(k-1), mean 1 / (1 - q) = 2.2
LONG_SHARE, LONG_TURNS, LONG_ANSWER_MEDIAN = 0.005, (10, 30), 800
HUMAN_MEDIAN, HUMAN_SIGMA = 60, 0.75
ASSISTANT_MEDIAN, ASSISTANT_SIGMA, ASSISTANT_CAP = 180, 0.9, 3_000
RESPONSE_MEDIAN, RESPONSE_SIGMA, RESPONSE_CAP = 170, 1.0, 6_000
MAX_TURNS = 30


def _words(embedder: str = "bundled") -> list[str]:
    """The alphabetic words of the Sentence-BERT model's vocabulary (`embedder` as `filter.embedding_model`)."""
    from frft_ray.embedding import resolve_model_path

    vocab = Path(resolve_model_path(embedder)) / "vocab.txt"
    return [w for w in vocab.read_text().split() if w.isalpha() and w.isascii() and len(w) >= 3]


class LengthModel:
    """Seeded character lengths of Human turns, earlier Assistant turns and final responses."""

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)

    def _lognormal(self, median: float, sigma: float, n: int, cap: int) -> np.ndarray:
        return np.clip(self.rng.lognormal(np.log(median), sigma, n), 2, cap).astype(np.int64)

    def turns(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Human turns per prompt, and which prompts are long multi-turn conversations."""
        k = np.minimum(self.rng.geometric(1 - TURNS_Q, n), MAX_TURNS)
        long = self.rng.random(n) < LONG_SHARE
        k[long] = self.rng.integers(*LONG_TURNS, long.sum(), endpoint=True)
        return k, long

    def human(self, n: int) -> np.ndarray:
        return self._lognormal(HUMAN_MEDIAN, HUMAN_SIGMA, n, ASSISTANT_CAP)

    def assistant(self, n: int, long: bool = False) -> np.ndarray:
        return self._lognormal(LONG_ANSWER_MEDIAN if long else ASSISTANT_MEDIAN, ASSISTANT_SIGMA, n, ASSISTANT_CAP)

    def response(self, n: int) -> np.ndarray:
        return self._lognormal(RESPONSE_MEDIAN, RESPONSE_SIGMA, n, RESPONSE_CAP)


class TextSource:
    """Distinct text of a given length: a slice of a long seeded run of words at a random offset."""

    def __init__(self, seed: int = 0, chars: int = 8_000_000, embedder: str = "bundled"):  # 8M characters: ~1.5 s
        rng = np.random.default_rng(seed + 1)
        words = np.array(_words(embedder))
        self.corpus = " ".join(words[rng.integers(0, len(words), chars // 6)])
        self.offsets = random.Random(seed)  # per-call draws: ~10x cheaper than numpy's scalar ones

    def __call__(self, length: int) -> str:
        start = self.offsets.randrange(len(self.corpus) - length - 1)
        return self.corpus[start : start + length].strip() or "ok"


def write_pool(path: str | Path, n: int, seed: int = 0, embedder: str = "bundled") -> dict:
    """Write `n` HH-RLHF-format pairs to `path` (gzip), their words from `embedder`'s vocabulary; returns
    their length statistics."""
    lengths, text = LengthModel(seed), TextSource(seed, min(8_000_000, max(1_000_000, 4_000 * n)), embedder)
    k, long = lengths.turns(n)
    resp = lengths.response(2 * n).reshape(n, 2)
    humans = lengths.human(int(k.sum()))  # all turns drawn at once, consumed in order
    answers = np.where(np.repeat(long, k - 1), lengths.assistant(int((k - 1).sum()), True),
                       lengths.assistant(int((k - 1).sum())))
    prompt_chars = np.zeros(n, dtype=np.int64)
    h = a = 0
    with gzip.open(path, "wt", compresslevel=1, encoding="utf-8") as f:
        for i in range(n):
            turns = []
            for j in range(int(k[i])):
                turns.append(f"\n\nHuman: {text(int(humans[h + j]))}")
                turns.append(f"\n\nAssistant: {text(int(answers[a + j]))}" if j < k[i] - 1 else "\n\nAssistant:")
            h, a = h + int(k[i]), a + int(k[i]) - 1
            prompt = "".join(turns)
            prompt_chars[i] = len(prompt)
            chosen, rejected = " " + text(int(resp[i, 0])), " " + text(int(resp[i, 1]))
            f.write(json.dumps({"chosen": prompt + chosen, "rejected": prompt + rejected}) + "\n")
    return {"pairs": n, "prompt_chars_mean": round(float(prompt_chars.mean())),
            "prompt_chars_max": int(prompt_chars.max()), "response_chars_mean": round(float(resp.mean())),
            "turns_mean": round(float(k.mean()), 2)}
