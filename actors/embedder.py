"""The embedder role: `filter.num_embedders` Sentence-BERT actors kept for the whole run.

Each actor loads the model once (its device from `placement.embedder`: CUDA when it has GPUs) and
embeds blocks of texts, in the dtype `filter.embed_precision` resolves to (`devices.embed_dtype`,
once for all actors, in the driver; the pool cache's key names it). `EmbedderPool.embed(texts)` de-duplicates the texts
(`embedding.dedup_texts`: preference sets repeat many responses), deals the distinct ones out in
blocks of `max(filter.embed_batch_size, 256)` across the actors, and scatters the rows back in input
order (round-robin, each block queued on its actor; `submit` returns before they are done). The
distinct texts go in sorted order, so a block's composition does not depend on the caller's order.
A `background` pass (the pool embedded from the run's start, `filter.embed_early`) runs at idle CPU
priority on each actor's thread. The actors start when the pool is built (model load ~7 s on 2 CPU cores), so a
driver that builds it early overlaps that with other work; after that a pass costs its compute
plus a few ms per block.

Selection on the embedder's GPU: when `placement.embedder.num_gpus > 0`, FRFT selection
(`filtering.rank_rows`) runs on the first actor's device, where the pool's embeddings are kept. The
driver puts the pool's `PoolEmbeddings` in the object store once per run and passes that ObjectRef with
every call; the actor fetches, checks and normalises it the first time it sees the ref
(`pool_scan.DevicePool`) and reuses it after, so a refit sends only the generations.

Why not a Ray Data `map_batches` pipeline: it starts a new actor pool for every pass (10-15 s on
2 cores, every FRFT iteration), and its result-reading stages ask for whole CPUs that a busy node
does not have. The texts of one pass fit in the driver, so a plain actor pool does the same work.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import ray

from frft_ray.config import FilterConfig, RolePlacement
from frft_ray.filtering import Ranked

log = logging.getLogger("frft_ray")


@ray.remote
class EmbedderActor:
    def __init__(self, model_name: str, batch_size: int, num_gpus: float, precision: str):
        from actors.common import setup_process

        setup_process(None)  # offline env; torch threads as Ray gives them (one per reserved CPU)
        import torch

        from frft_ray.devices import role_device
        from frft_ray.embedding import load_embedder

        # `precision` comes resolved from the driver (EmbedderPool): the pool cache's key names it
        self.device = role_device(num_gpus, "embedder")
        self.dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]
        self.model, self.batch_size = load_embedder(model_name, str(self.device)), batch_size
        self.pool_key, self.pool = None, None  # the ObjectRef the cached DevicePool came from
        self.background = False  # whether this thread runs at idle priority (`embed(..., background=True)`)

    def ready(self) -> str:
        """Where this actor embeds: 'cpu/bf16', 'cuda:0/fp32'."""
        from frft_ray.devices import describe

        return describe(self.device, self.dtype)

    def embed(self, texts: list[str], background: bool = False) -> np.ndarray:
        """`background`: a block embedded ahead of need (the pool, while SFT runs) computes at idle CPU
        priority, so it takes only the cycles the other roles on this node leave unused."""
        from frft_ray.embedding import embed_texts

        if self.device.type == "cpu" and background != self.background:
            self._set_priority(background)
        return embed_texts(self.model, texts, self.batch_size, self.dtype)

    def _set_priority(self, background: bool) -> None:
        """Linux SCHED_IDLE for this thread while `background` (it runs only when nothing else on its
        core is runnable: Ray starts every worker at nice 15, so nice 19 alone would still take ~30% of a
        core from the learner); back to SCHED_OTHER after. Elsewhere, or if refused, it stays as it is."""
        import os
        import threading

        policy = getattr(os, "SCHED_IDLE", None) if background else getattr(os, "SCHED_OTHER", None)
        try:
            if policy is not None:
                os.sched_setscheduler(threading.get_native_id(), policy, os.sched_param(0))
                self.background = background
        except (OSError, AttributeError):
            pass

    def rank(self, pool_box: list, n_pairs: int, gen_emb: np.ndarray, gen_prompt_emb: np.ndarray | None,
             cfg: FilterConfig, seed: int, gen_groups: np.ndarray | None) -> Ranked:
        """`filtering.rank_rows` on this actor's device. pool_box: [ObjectRef of the PoolEmbeddings]
        (boxed so Ray passes the ref, not the arrays: a pool already on the device is not fetched again)."""
        from frft_ray.filtering import rank_rows
        from frft_ray.pool_scan import DevicePool

        ref = pool_box[0]
        if self.pool_key != ref.hex():
            self.pool_key, self.pool = ref.hex(), DevicePool(ray.get(ref), self.device)
        return rank_rows(n_pairs, self.pool, gen_emb, gen_prompt_emb, cfg, seed, gen_groups)


class PendingEmbedding:
    """Embeddings on their way from the actors: `result()` gathers them, in the input's order."""

    def __init__(self, refs: list, inverse: np.ndarray):
        self.refs, self.inverse = refs, inverse

    def result(self, every_s: float = 10.0) -> np.ndarray:
        """The embeddings; while they come, a line every `every_s` s says how many blocks are done."""
        from frft_ray.progress import line, wait

        label, started = f"embedding {len(self.inverse)} texts, blocks", time.monotonic()
        blocks = wait(self.refs, lambda ready: [line(label, len(ready), len(self.refs), started)], every_s)
        return np.concatenate(blocks).astype(np.float32, copy=False)[self.inverse]


class EmbedderPool:
    """Start with the run's `filter:` section and `placement.embedder`; `shutdown()` at the end."""

    def __init__(self, cfg: FilterConfig, placement: RolePlacement, progress_every_s: float = 10.0):
        from frft_ray.devices import dtype_name, embed_dtype

        self.block, self.progress_every_s = max(cfg.embed_batch_size, 256), progress_every_s
        # resolved once, here (on the driver's CPU for `auto`), so every actor and the cache key agree
        self.setting, self.precision = cfg.embed_precision, dtype_name(embed_dtype(cfg.embed_precision, placement.num_gpus > 0))
        self.actors = [EmbedderActor.options(**placement.ray_options()).remote(
            cfg.embedding_model, cfg.embed_batch_size, placement.num_gpus, self.precision)
            for _ in range(cfg.num_embedders)]

    def wait_ready(self) -> None:
        """Block until every actor has loaded its model (it raises here if one could not); logs where they embed."""
        where = ray.get([a.ready.remote() for a in self.actors])
        log.info("embedders: %d x %s (filter.embed_precision=%s)", len(where), ", ".join(sorted(set(where))),
                 self.setting)

    def embed(self, texts: list[str]) -> np.ndarray:
        """Embeddings [len(texts), dim], L2-normalised float32, row i for texts[i]."""
        return self.submit(texts).result(self.progress_every_s)

    def submit(self, texts: list[str], background: bool = False) -> "PendingEmbedding":
        """Start embedding `texts` (blocks dealt round-robin to the actors, each queued behind what its
        actor already has) and return at once; `.result()` waits. `background`: at the lowest CPU priority."""
        from frft_ray.embedding import dedup_texts

        if not texts:
            raise ValueError("EmbedderPool.embed: no texts to embed")
        unique, inverse = dedup_texts(texts, sort=True)
        blocks = [unique[i : i + self.block] for i in range(0, len(unique), self.block)]
        n = len(self.actors)
        return PendingEmbedding([self.actors[i % n].embed.remote(b, background) for i, b in enumerate(blocks)], inverse)

    def rank(self, pool_ref: ray.ObjectRef, n_pairs: int, gen_emb: np.ndarray, gen_prompt_emb: np.ndarray | None,
             cfg: FilterConfig, seed: int, gen_groups: np.ndarray | None = None) -> Ranked:
        """`filtering.rank_rows` on the first actor, against the pool in `pool_ref` (`ray.put` once per run)."""
        return ray.get(self.actors[0].rank.remote([pool_ref], n_pairs, gen_emb, gen_prompt_emb, cfg, seed, gen_groups))

    def shutdown(self) -> None:
        for a in self.actors:
            ray.kill(a)
        self.actors = []
