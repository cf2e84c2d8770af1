"""The run's embedder actors return embeddings in input order, even when most CPUs are held, and run FRFT
selection (on their GPU when placement.embedder has one) with the driver's result."""

import logging

import numpy as np
import pytest
import ray

from frft_ray.config import FilterConfig, PlacementConfig
from frft_ray.embedding import embed_texts, load_embedder


@ray.remote(num_cpus=1.5)
class CpuHolder:
    """Stands in for the learner, rollout workers and Serve replicas holding CPUs during a run."""

    def ping(self) -> bool:
        return True


def _assert_rows_match(got: np.ndarray, want: np.ndarray, precision: str) -> None:
    """fp32: equal to float rounding; bf16 (autocast): every row within cosine 0.9995 of fp32's."""
    if precision == "fp32":
        np.testing.assert_allclose(got, want, atol=1e-5)
    else:
        assert (got * want).sum(axis=1).min() > 0.9995 and not np.allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_embedder_pool_matches_in_process_embeddings_with_cpus_held(ray_local, precision, caplog):
    from actors.embedder import EmbedderPool

    holder = CpuHolder.remote()
    texts = ["A man is eating food.", "The stock market fell.", "A man is eating food.", "Dogs bark at night."]
    cfg = FilterConfig(embedding_model="bundled", embed_batch_size=8, num_embedders=2, embed_precision=precision)
    # 0.25 CPU per embedder by default; a progress line every 10 ms while blocks are out
    pool = EmbedderPool(cfg, PlacementConfig().embedder, progress_every_s=0.01)
    try:
        assert ray.get(holder.ping.remote())
        assert pool.precision == precision and ray.get(pool.actors[0].ready.remote()) == f"cpu/{precision}"
        pool.wait_ready()
        got = pool.embed(texts)
        many = [f"sentence number {i} about {'cats' if i % 3 else 'the weather'}" for i in range(600)]
        with caplog.at_level(logging.INFO, logger="frft_ray"):
            again = pool.embed(many + texts)  # 3 blocks of 256 over 2 actors, in order; the pool is reused
    finally:
        pool.shutdown()
        ray.kill(holder)
    model = load_embedder("bundled")
    want = embed_texts(model, texts)  # fp32, in this process
    assert got.shape == (4, 384) and got.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    _assert_rows_match(got, want, precision)
    assert np.array_equal(got[0], got[2])  # duplicates embedded once, scattered back in order
    _assert_rows_match(again[:600], embed_texts(model, many), precision)
    _assert_rows_match(again[600:], want, precision)
    progress = [r.getMessage() for r in caplog.records if "embedding 604 texts, blocks:" in r.getMessage()]
    assert progress and all("/3 (" in m for m in progress), caplog.text  # 603 distinct texts in 3 blocks


def _texts_and_pairs():
    from frft_ray.data.records import PreferencePair

    topics = ["the weather", "cooking pasta", "stock markets", "training dogs", "python errors"]
    pairs = [PreferencePair(f"p{i}", f"Tell me about {topics[i % 5]}.", f"A clear answer about {topics[i % 5]} number {i}.",
                            f"I will not talk about {topics[(i + 2) % 5]} ({i}).", "ab"[i % 2]) for i in range(60)]
    samples = [f"Here is what I know about {topics[i % 3]}, take {i}." for i in range(12)]
    return pairs, samples


def _selection_paths(tmp_path, num_gpus: float):
    """(selection through phases.PoolEmbeddingCache with placement.embedder.num_gpus, driver-side select_pairs)."""
    from actors.embedder import EmbedderPool
    from frft_ray.config import config_from_dict
    from frft_ray.filtering import finish, select_pairs
    from frft_ray.phases import PoolEmbeddingCache

    pairs, samples = _texts_and_pairs()
    cfg = config_from_dict({"filter": {"cache_dir": str(tmp_path), "num_embedders": 1, "threshold": 0.3, "budget": 24,
                                       "min_records": 0, "chunk_size": 16},
                            "placement": {"embedder": {"num_cpus": 0.25, "num_gpus": num_gpus}}})
    embedders = EmbedderPool(cfg.filter, cfg.placement.embedder)
    try:
        cache = PoolEmbeddingCache(cfg, pairs, embedders)
        gen = embedders.embed(samples)
        via_cache = [cache.select(gen[:k], None, cfg.filter, seed=0) for k in (12, 6)]  # the pool is sent once
        ref = ray.put(cache.pool_embeddings())  # the second call finds the pool already on the actor's device
        actor = [finish(pairs, embedders.rank(ref, len(pairs), gen[:k], None, cfg.filter, 0), 0.0) for k in (12, 6)]
    finally:
        embedders.shutdown()
    local = [select_pairs(pairs, cache.pool_embeddings(), gen[:k], None, cfg.filter) for k in (12, 6)]
    return via_cache, actor, local


def test_selection_on_an_embedder_actor_equals_the_driver_path(ray_local, tmp_path):
    via_cache, actor, local = _selection_paths(tmp_path, num_gpus=0)
    for on_actor, in_cache, in_driver in zip(actor, via_cache, local):
        assert 0 < on_actor.count <= 24 and on_actor.selection == "per_generation"
        assert on_actor.indices.tolist() == in_driver.indices.tolist() == in_cache.indices.tolist()
        np.testing.assert_allclose(on_actor.scores, in_driver.scores, atol=1e-6)
    assert actor[0].indices.tolist() != actor[1].indices.tolist()


@pytest.mark.gpu
def test_selection_on_the_embedder_gpu_equals_the_cpu_path(ray_local, tmp_path):
    via_gpu, _, local = _selection_paths(tmp_path, num_gpus=0.5)
    for gpu, cpu in zip(via_gpu, local):
        assert gpu.indices.tolist() == cpu.indices.tolist()
        np.testing.assert_allclose(gpu.scores, cpu.scores, atol=1e-5)


def test_the_pool_embedded_early_in_the_background_is_what_the_first_refit_reads(ray_local, tmp_path):
    from actors.embedder import EmbedderPool
    from frft_ray.config import config_from_dict
    from frft_ray.pool_embeddings import cached_pool_embeddings, texts_to_embed
    from frft_ray.phases import PoolEmbeddingCache

    pairs, samples = _texts_and_pairs()
    cfg = config_from_dict({"filter": {"cache_dir": str(tmp_path / "cache"), "num_embedders": 2, "embed_batch_size": 8,
                                       "embed_precision": "fp32"},
                            "placement": {"embedder": {"num_cpus": 0.25}}})
    assert texts_to_embed(pairs, cfg.filter) == list(dict.fromkeys(p.chosen for p in pairs))  # strategy chosen
    embedders = EmbedderPool(cfg.filter, cfg.placement.embedder)
    try:
        cache = PoolEmbeddingCache(cfg, pairs, embedders)
        cache.prefetch()  # returns at once; the actors embed at the lowest CPU priority
        gen = embedders.embed(samples)  # a foreground call after it, queued behind the pool's blocks
        early = cache.pool_embeddings()  # collects what prefetch started
        assert cache._early is None and not early.from_cache and early.loaded == ("chosen",)
        assert texts_to_embed(pairs, cfg.filter) == []  # now in the cache: a later run has nothing to prefetch
        warm = PoolEmbeddingCache(cfg, pairs, embedders)
        warm.prefetch()
        assert warm._early is None and warm.pool_embeddings().from_cache
    finally:
        embedders.shutdown()
    model = load_embedder("bundled")
    want = cached_pool_embeddings(pairs, cfg.filter.model_copy(update={"cache_dir": str(tmp_path / "other")}),
                                  lambda texts: embed_texts(model, texts))
    np.testing.assert_allclose(early.chosen, want.chosen, atol=1e-5)
    np.testing.assert_allclose(gen, embed_texts(model, samples), atol=1e-5)
