"""The bundled MiniLM embedder and the pool-embedding cache."""

from __future__ import annotations

import json

import numpy as np
import pytest

from frft_ray.config import FilterConfig
from frft_ray.data.records import PreferencePair
from frft_ray.embedding import EmbeddingError, compose_text, dedup_texts, embed_texts, load_embedder, model_identity
from frft_ray.pool_embeddings import PoolEmbeddings, cached_pool_embeddings, pool_fingerprint
from frft_ray.filtering import select_pairs
from frft_ray.similarity import FilterError, normalise_rows, unit_rows

ANCHORS = [
    "How do I bake a loaf of sourdough bread at home?",
    "The stock market fell sharply after the interest rate announcement.",
    "My cat keeps scratching the sofa, how can I stop her?",
    "What is the capital city of France?",
]
PARAPHRASES = [
    "What steps do I follow to make homemade sourdough bread?",
    "Share prices dropped steeply once the central bank raised rates.",
    "How can I keep my cat from clawing the couch?",
    "Which city is the capital of France?",
]
UNRELATED = [
    "The chemical formula of table salt is NaCl.",
    "He scored two goals in the second half of the football match.",
    "Quantum computers use qubits instead of classical bits.",
    "Tie the rope with a bowline knot before climbing.",
]


@pytest.fixture(scope="module")
def model():
    return load_embedder("bundled")


class CountingCompute:
    """A real compute_fn (the bundled model) that counts its calls and the texts it saw."""

    def __init__(self, model):
        self.model, self.calls, self.texts = model, 0, []

    def __call__(self, texts):
        self.calls += 1
        self.texts.append(list(texts))
        return embed_texts(self.model, texts, batch_size=16)


def make_pairs() -> list[PreferencePair]:
    return [
        PreferencePair(f"id{i}", f"Human: question {i % 2}\n\nAssistant:", PARAPHRASES[i], UNRELATED[i], f"src{i % 2}")
        for i in range(4)
    ]


def test_embeddings_are_normalised_float32_rows(model):
    e = embed_texts(model, ANCHORS, batch_size=2)
    assert e.shape == (4, 384) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    assert embed_texts(model, []).shape == (0, 384)


def test_paraphrases_outrank_unrelated_text(model):
    a, p, u = (embed_texts(model, t) for t in (ANCHORS, PARAPHRASES, UNRELATED))
    to_para, to_unrelated = a @ p.T, a @ u.T
    for i in range(len(ANCHORS)):
        others = np.delete(to_para[i], i)
        assert to_para[i, i] > 0.5, (ANCHORS[i], to_para[i, i])
        assert to_para[i, i] > max(to_unrelated[i].max(), others.max()) + 0.2


def test_filter_with_real_embeddings_keeps_the_paraphrase_pairs(model, tmp_path):
    """Generations are the anchors; pairs whose chosen is a paraphrase must be the ones kept."""
    pairs = [PreferencePair(f"p{i}", "Q:", PARAPHRASES[i], UNRELATED[i], "para") for i in range(4)]
    pairs += [PreferencePair(f"u{i}", "Q:", UNRELATED[i], PARAPHRASES[i], "unrel") for i in range(4)]
    cfg = FilterConfig(strategy="chosen", selection="budget", budget=4, cache_dir=str(tmp_path))
    pool = cached_pool_embeddings(pairs, cfg, CountingCompute(model))
    sel = select_pairs(pairs, pool, embed_texts(model, ANCHORS), None, cfg)
    assert sorted(sel.indices.tolist()) == [0, 1, 2, 3]
    assert sel.source_mix == {"para": 4}


def test_cache_hit_skips_compute_and_returns_the_same_arrays(model, tmp_path):
    cfg = FilterConfig(cache_dir=str(tmp_path))  # strategy `chosen`: only the chosen side is embedded at first
    compute = CountingCompute(model)
    pairs = make_pairs()
    first = cached_pool_embeddings(pairs, cfg, compute)
    assert compute.calls == 1 and not first.from_cache and first.loaded == ("chosen",)
    assert compute.texts[0] == [p.chosen for p in pairs]
    # another side is embedded when first read, and joins the same entry; several at once share one call
    assert first.rejected.shape == (4, 384) and compute.calls == 2
    assert compute.texts[1] == [p.rejected for p in pairs]
    matched = FilterConfig(cache_dir=str(tmp_path), strategy="prompt_matched", selection="budget")
    second = cached_pool_embeddings(pairs, matched, compute)
    # distinct texts only: the 4 prompts are 2 distinct ones
    assert compute.calls == 3 and compute.texts[2] == [pairs[0].prompt, pairs[1].prompt]
    assert second.loaded == ("chosen", "rejected", "prompt") and not second.from_cache
    third = cached_pool_embeddings(pairs, FilterConfig(cache_dir=str(tmp_path), strategy="either"), compute)
    assert compute.calls == 3 and third.from_cache
    for part in ("chosen", "rejected", "prompt"):
        np.testing.assert_array_equal(getattr(first, part), getattr(second, part))
        np.testing.assert_array_equal(getattr(second, part), getattr(third, part))
    assert compute.calls == 3
    np.testing.assert_allclose(first.prompt[0], first.prompt[2], atol=1e-6)  # same prompt text

    (entry,) = [p for p in tmp_path.iterdir()]  # one entry, no temporary files left behind
    assert sorted(f.name for f in entry.iterdir()) == ["chosen.npy", "meta.json", "prompt.npy", "rejected.npy"]
    meta = json.loads((entry / "meta.json").read_text())
    assert meta["n"] == 4 and meta["dim"] == 384 and meta["fingerprint"] == first.fingerprint
    assert meta["model"] == model_identity("bundled")


def test_bf16_embeddings_are_close_to_fp32_and_cached_apart(model, tmp_path):
    """filter.embed_precision=bf16: rows within cosine 0.9995 of fp32's, unit length, and a cache entry of
    their own (an fp32 run never reads bf16 rows, nor the other way round)."""
    import torch

    texts = ANCHORS + PARAPHRASES + UNRELATED
    fp32, bf16 = embed_texts(model, texts), embed_texts(model, texts, dtype=torch.bfloat16)
    assert bf16.dtype == np.float32 and not np.allclose(bf16, fp32, atol=1e-5)
    assert (fp32 * bf16).sum(axis=1).min() > 0.9995
    np.testing.assert_allclose(np.linalg.norm(bf16, axis=1), 1.0, atol=1e-5)
    cfg, pairs = FilterConfig(cache_dir=str(tmp_path)), make_pairs()
    low = CountingCompute(model)
    a = cached_pool_embeddings(pairs, cfg, lambda t: embed_texts(model, t, dtype=torch.bfloat16), precision="bf16")
    b = cached_pool_embeddings(pairs, cfg, low)
    assert low.calls == 1 and not b.from_cache and a.model != b.model == model_identity("bundled")
    assert cached_pool_embeddings(pairs, cfg, None, precision="bf16").from_cache and len(list(tmp_path.iterdir())) == 2
    assert (np.asarray(a.chosen) * np.asarray(b.chosen)).sum(axis=1).min() > 0.9995


def test_sides_embedded_together_share_their_distinct_texts(tmp_path):
    """One call for the missing sides: a text that is chosen in one pair and rejected in another is embedded once."""
    pairs = [PreferencePair("a", "Q:", "yes", "no", "s"), PreferencePair("b", "Q:", "no", "maybe", "s")]
    calls = []
    emb = cached_pool_embeddings(pairs, FilterConfig(cache_dir=str(tmp_path), strategy="both"),
                                 lambda texts: (calls.append(list(texts)), seeded_vectors(texts))[1])
    assert calls == [["yes", "no", "maybe"]]
    np.testing.assert_array_equal(emb.chosen[1], emb.rejected[0])
    needs_prompts = FilterConfig(cache_dir=str(tmp_path), strategy="prompt_matched", selection="budget")
    with pytest.raises(EmbeddingError, match="not in the cache and no embedder"):
        cached_pool_embeddings(pairs, needs_prompts, None)
    import pickle

    shipped = pickle.loads(pickle.dumps(emb))  # what ray.put sends to an embedder actor: the loaded sides, no loader
    np.testing.assert_array_equal(shipped.rejected, emb.rejected)
    with pytest.raises(EmbeddingError, match="side.*prompt.*not loaded"):
        shipped.prompt


def test_changed_pair_or_mode_changes_the_fingerprint_and_recomputes(model, tmp_path):
    cfg = FilterConfig(cache_dir=str(tmp_path))
    compute = CountingCompute(model)
    pairs = make_pairs()
    base = cached_pool_embeddings(pairs, cfg, compute)
    edited = list(pairs)
    edited[2] = PreferencePair("id2", pairs[2].prompt, pairs[2].chosen + " Indeed.", pairs[2].rejected, "src0")
    changed = cached_pool_embeddings(edited, cfg, compute)
    assert changed.fingerprint != base.fingerprint and compute.calls == 2
    assert not np.allclose(changed.chosen[2], base.chosen[2]) and np.allclose(changed.chosen[0], base.chosen[0], atol=1e-5)
    # Only the source differs: embeddings cannot differ, so the cache entry is reused.
    resourced = [PreferencePair(p.id, p.prompt, p.chosen, p.rejected, "other") for p in pairs]
    assert pool_fingerprint(resourced, "response") == base.fingerprint
    with_prompt = cached_pool_embeddings(pairs, FilterConfig(cache_dir=str(tmp_path), embed="prompt_response"), compute)
    assert with_prompt.fingerprint != base.fingerprint and compute.calls == 3
    assert not np.allclose(with_prompt.chosen, base.chosen)


def test_broken_cache_entry_is_recomputed(model, tmp_path):
    cfg = FilterConfig(cache_dir=str(tmp_path))
    compute = CountingCompute(model)
    good = np.array(cached_pool_embeddings(make_pairs(), cfg, compute).chosen)  # a copy: the file is broken below
    (entry,) = list(tmp_path.iterdir())
    (entry / "chosen.npy").write_bytes(b"not an array")  # in place: a memmap of it would now fault (SIGBUS)
    again = cached_pool_embeddings(make_pairs(), cfg, compute)
    assert compute.calls == 2 and not again.from_cache
    np.testing.assert_allclose(again.chosen, good, atol=1e-6)
    assert cached_pool_embeddings(make_pairs(), cfg, compute).from_cache


def test_bad_inputs_fail_with_a_clear_error(tmp_path):
    cfg = FilterConfig(cache_dir=str(tmp_path))
    with pytest.raises(EmbeddingError, match=r"compute_fn returned shape \(3, 8\) for 4 texts"):
        cached_pool_embeddings(make_pairs(), cfg, lambda texts: np.ones((3, 8)))
    with pytest.raises(EmbeddingError, match="empty preference pool"):
        cached_pool_embeddings([], cfg, lambda texts: np.ones((0, 8)))
    with pytest.raises(EmbeddingError, match="filter.embed must be one of"):
        compose_text("p", "r", "prompt_only")
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_prompt_response_text_keeps_the_response_when_the_prompt_is_long():
    text = compose_text("Human: " + "blah " * 1000 + "\n\nAssistant:", " Sure, here it is.", "prompt_response")
    assert text.endswith("Assistant:\nSure, here it is.") and len(text) < 700
    assert compose_text("Human: hi\n\nAssistant:", " Hello!", "response") == " Hello!"


def test_dedup_texts_keeps_first_occurrence_or_sorted_order():
    texts = ["b", "a", "b", "c", "a", "é", "b\x00"]
    unique, inverse = dedup_texts(texts)
    assert unique == ["b", "a", "c", "é", "b\x00"] and inverse.dtype == np.int64
    assert [unique[i] for i in inverse] == texts
    srt, inv = dedup_texts(texts, sort=True)
    assert srt == sorted(set(texts)) and [srt[i] for i in inv] == texts  # a trailing NUL is kept
    # Sorted order is np.unique's order (what the Ray embedder used), without a fixed-width copy.
    plain = texts[:-1]
    np_unique, np_inverse = np.unique(np.asarray(plain, dtype=object).astype(str), return_inverse=True)
    srt, inv = dedup_texts(plain, sort=True)
    assert srt == np_unique.tolist() and inv.tolist() == np_inverse.tolist()
    empty, inv = dedup_texts([])
    assert empty == [] and inv.shape == (0,)


def test_one_row_normaliser_for_embeddings_and_filtering():
    a = np.array([[3.0, 4.0], [0.0, 0.0]])
    out = normalise_rows(a)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0]], atol=1e-7)
    np.testing.assert_array_equal(unit_rows(a, "x"), out)  # the validating version is the same numbers
    with pytest.raises(FilterError, match="x contains NaN"):
        unit_rows(np.array([[np.nan, 1.0]]), "x")
    import frft_ray.embedding as embedding
    import frft_ray.pool_embeddings as pool_embeddings  # the pool cache normalises with the shared helper

    assert pool_embeddings.normalise_rows is normalise_rows and not hasattr(embedding, "_normalise")


def seeded_vectors(texts: list[str]) -> np.ndarray:
    """A compute_fn of fixed random vectors per text (not unit length: the cache normalises them)."""
    import zlib

    return np.stack([np.random.default_rng(zlib.crc32(t.encode())).normal(size=384) for t in texts])


@pytest.mark.parametrize("strategy,selection", [("chosen", "per_generation"), ("both", "per_generation"),
                                                ("either", "threshold_and_budget"), ("prompt_matched", "budget")])
def test_cached_pool_is_a_memmap_and_selects_exactly_like_arrays_in_memory(tmp_path, strategy, selection):
    pairs = [PreferencePair(f"p{i}", f"Human: topic {i % 40}\n\nAssistant:", f"yes {i}", f"no {i}", "s")
             for i in range(2_500)]
    cfg = FilterConfig(cache_dir=str(tmp_path), strategy=strategy, selection=selection, budget=300, threshold=0.1,
                       min_records=0)
    cold = cached_pool_embeddings(pairs, cfg, seeded_vectors)
    warm = cached_pool_embeddings(pairs, cfg, seeded_vectors)
    assert not cold.from_cache and warm.from_cache
    for part in ("chosen", "rejected", "prompt"):
        a = getattr(warm, part)
        assert isinstance(a, np.memmap) and not a.flags.writeable and a.shape == (2_500, 384)
        assert isinstance(getattr(cold, part), np.memmap)  # a miss maps the written files back too
    in_memory = PoolEmbeddings(*(np.array(getattr(warm, p)) for p in ("chosen", "rejected", "prompt")))
    assert not isinstance(in_memory.chosen, np.memmap)
    rng = np.random.default_rng(3)
    gens, gen_prompts = rng.normal(size=(64, 384)), np.repeat(rng.normal(size=(8, 384)), 8, axis=0)
    for chunk_size in (1024, 97):  # the last block is short either way (2,500 rows)
        c = cfg.model_copy(update={"chunk_size": chunk_size})
        mapped = select_pairs(pairs, warm, gens, gen_prompts, c)
        held = select_pairs(pairs, in_memory, gens, gen_prompts, c)
        np.testing.assert_array_equal(mapped.scores, held.scores)  # bit for bit
        assert mapped.indices.tolist() == held.indices.tolist() and mapped.count > 0
