"""Embedder pool: Ray Data `map_batches` over an actor pool of Sentence-BERT models.

Texts are de-duplicated first (template-built and real preference sets repeat many responses), embedded
by `ActorPoolStrategy(size=filter.num_embedders)` actors, and scattered back in input order.
"""

from __future__ import annotations

import numpy as np


def embed_texts_ray(texts: list[str], model_name: str, batch_size: int, num_embedders: int,
                    num_cpus_per_embedder: float = 0.25) -> np.ndarray:
    import ray.data
    from ray.data import ActorPoolStrategy, DataContext

    from frft_ray.embedding import BatchEmbedder

    if not texts:
        raise ValueError("embed_texts_ray: no texts to embed")
    DataContext.get_current().enable_progress_bars = False
    unique, inverse = np.unique(np.asarray(texts, dtype=object).astype(str), return_inverse=True)
    ds = ray.data.from_items([{"idx": i, "text": t} for i, t in enumerate(unique.tolist())])
    # Results are read with iter_batches() in this process. select_columns() or to_numpy_refs() would
    # add stages whose tasks ask for a whole CPU each, and they wait forever on a node whose CPUs are
    # partly held by the learner, rollout workers and Serve replicas.
    out = ds.map_batches(
        BatchEmbedder,
        fn_constructor_kwargs={"model_name": model_name, "batch_size": batch_size, "text_column": "text"},
        batch_size=max(batch_size, 256),
        batch_format="numpy",
        compute=ActorPoolStrategy(size=num_embedders),
        num_cpus=num_cpus_per_embedder,
    )
    parts = list(out.iter_batches(batch_size=None, batch_format="numpy"))
    idx = np.concatenate([p["idx"] for p in parts])
    emb = np.concatenate([np.stack(list(p["embedding"])) if p["embedding"].dtype == object else p["embedding"]
                          for p in parts]).astype(np.float32)
    ordered = np.empty_like(emb)
    ordered[idx] = emb
    return ordered[inverse]
