"""The Ray Data embedder pool returns embeddings in input order, even when most CPUs are held."""

import numpy as np
import ray

from frft_ray.embedding import embed_texts, load_embedder


@ray.remote(num_cpus=1.5)
class CpuHolder:
    """Stands in for the learner, rollout workers and Serve replicas holding CPUs during a run."""

    def ping(self) -> bool:
        return True


def test_embedder_pool_matches_in_process_embeddings_with_cpus_held(ray_local):
    from actors.embedder import embed_texts_ray

    holder = CpuHolder.remote()
    try:
        assert ray.get(holder.ping.remote())
        texts = ["A man is eating food.", "The stock market fell.", "A man is eating food.", "Dogs bark at night."]
        got = embed_texts_ray(texts, "bundled", batch_size=8, num_embedders=1, num_cpus_per_embedder=0.25)
    finally:
        ray.kill(holder)
    want = embed_texts(load_embedder("bundled"), texts)
    assert got.shape == (4, 384)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert np.array_equal(got[0], got[2])  # duplicates embedded once, scattered back in order
