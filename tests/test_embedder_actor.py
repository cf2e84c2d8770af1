"""The Ray Data embedder pool returns embeddings in input order, even when most CPUs are held."""

import numpy as np
import ray

from frft_ray.config import FilterConfig, PlacementConfig, RolePlacement
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
        cfg = FilterConfig(embedding_model="bundled", embed_batch_size=8, num_embedders=1)
        got = embed_texts_ray(texts, cfg, PlacementConfig().embedder)  # 0.25 CPU per embedder by default
    finally:
        ray.kill(holder)
    want = embed_texts(load_embedder("bundled"), texts)
    assert got.shape == (4, 384) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert np.array_equal(got[0], got[2])  # duplicates embedded once, scattered back in order


def test_placement_becomes_map_batches_resources():
    from actors.embedder import map_batches_resources

    assert map_batches_resources(PlacementConfig().embedder) == {"num_cpus": 0.25}  # a CPU pool asks for CPUs only
    gpu = RolePlacement(num_cpus=1, num_gpus=0.5, resources={"embed_node": 0.01})
    assert map_batches_resources(gpu) == {"num_cpus": 1.0, "num_gpus": 0.5, "resources": {"embed_node": 0.01}}
