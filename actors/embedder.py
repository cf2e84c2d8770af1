"""Embedder pool: Ray Data `map_batches` over an actor pool of Sentence-BERT models.

Texts are de-duplicated first (`embedding.dedup_texts`: template-built and real preference sets
repeat many responses), embedded by `ActorPoolStrategy(size=filter.num_embedders)` actors that each
reserve what `placement.embedder` asks for, and scattered back in input order. The distinct texts
reach the model in sorted order: `encode` pads per batch, so the order fixes the last bits of the
embeddings, and sorted order is what earlier versions (and cached pool embeddings) used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from frft_ray.config import FilterConfig, RolePlacement


def map_batches_resources(placement: "RolePlacement") -> dict:
    """`map_batches` keyword arguments for one embedder actor: num_cpus always, num_gpus and
    resources only when set (so a CPU-only placement asks exactly for its CPUs)."""
    opts: dict = {"num_cpus": placement.num_cpus}
    if placement.num_gpus > 0:
        opts["num_gpus"] = placement.num_gpus
    if placement.resources:
        opts["resources"] = dict(placement.resources)
    return opts


def embed_texts_ray(texts: list[str], cfg: "FilterConfig", placement: "RolePlacement") -> np.ndarray:
    """Embeddings [len(texts), dim] of `texts` (L2-normalised float32, row i for texts[i]).

    Model, model batch size and pool size come from `cfg` (embedding_model, embed_batch_size,
    num_embedders); what each actor reserves comes from `placement` (normally `placement.embedder`).
    An actor with GPUs loads the model on CUDA.
    """
    import ray.data
    from ray.data import ActorPoolStrategy, DataContext

    from frft_ray.embedding import BatchEmbedder, dedup_texts

    if not texts:
        raise ValueError("embed_texts_ray: no texts to embed")
    DataContext.get_current().enable_progress_bars = False
    unique, inverse = dedup_texts(texts, sort=True)
    ds = ray.data.from_items([{"idx": i, "text": t} for i, t in enumerate(unique)])
    # Results are read with iter_batches() in this process. select_columns() or to_numpy_refs() would
    # add stages whose tasks ask for a whole CPU each, and they wait forever on a node whose CPUs are
    # partly held by the learner, rollout workers and Serve replicas.
    out = ds.map_batches(
        BatchEmbedder,
        fn_constructor_kwargs={"model_name": cfg.embedding_model, "batch_size": cfg.embed_batch_size,
                               "text_column": "text", "device": "cuda" if placement.num_gpus > 0 else "cpu"},
        batch_size=max(cfg.embed_batch_size, 256),
        batch_format="numpy",
        compute=ActorPoolStrategy(size=cfg.num_embedders),
        **map_batches_resources(placement),
    )
    parts = list(out.iter_batches(batch_size=None, batch_format="numpy"))
    idx = np.concatenate([p["idx"] for p in parts])
    emb = np.concatenate([np.stack(list(p["embedding"])) if p["embedding"].dtype == object else p["embedding"]
                          for p in parts]).astype(np.float32)
    ordered = np.empty_like(emb)
    ordered[idx] = emb
    return ordered[inverse]
