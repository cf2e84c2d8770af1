"""The run's embedder actors return embeddings in input order, even when most CPUs are held."""

import numpy as np
import ray

from frft_ray.config import FilterConfig, PlacementConfig
from frft_ray.embedding import embed_texts, load_embedder


@ray.remote(num_cpus=1.5)
class CpuHolder:
    """Stands in for the learner, rollout workers and Serve replicas holding CPUs during a run."""

    def ping(self) -> bool:
        return True


def test_embedder_pool_matches_in_process_embeddings_with_cpus_held(ray_local):
    from actors.embedder import EmbedderPool

    holder = CpuHolder.remote()
    texts = ["A man is eating food.", "The stock market fell.", "A man is eating food.", "Dogs bark at night."]
    cfg = FilterConfig(embedding_model="bundled", embed_batch_size=8, num_embedders=2)
    pool = EmbedderPool(cfg, PlacementConfig().embedder)  # 0.25 CPU per embedder by default
    try:
        assert ray.get(holder.ping.remote())
        pool.wait_ready()
        got = pool.embed(texts)
        many = [f"sentence number {i} about {'cats' if i % 3 else 'the weather'}" for i in range(600)]
        again = pool.embed(many + texts)  # 3 blocks of 256 over 2 actors, in order; the pool is reused
    finally:
        pool.shutdown()
        ray.kill(holder)
    model = load_embedder("bundled")
    want = embed_texts(model, texts)
    assert got.shape == (4, 384) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert np.array_equal(got[0], got[2])  # duplicates embedded once, scattered back in order
    np.testing.assert_allclose(again[:600], embed_texts(model, many), atol=1e-5)
    np.testing.assert_allclose(again[600:], want, atol=1e-5)
