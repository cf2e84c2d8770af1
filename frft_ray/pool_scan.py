"""The similarity maths of FRFT selection, in torch, on whatever device holds the pool's embeddings.

Selection is an [N, G] cosine-similarity product (N pool pairs, G policy generations) reduced along
both axes: each pair's score (aggregated over the generations, `filter.aggregate`) and, for selection
`per_generation`, each generation's nearest pairs. `scan` computes the product one block of
`filter.chunk_size` pool rows at a time and makes every reduction the call needs from that block
while it is hot, so one pass costs about one matrix product and memory stays at G x chunk_size
floats per side. The maths is fp32 on every device: a threshold must decide the same way here and
on a GPU.

The same code runs in the driver on the CPU and in an embedder actor on its GPU
(`placement.embedder.num_gpus > 0`, see actors/embedder.py); `DevicePool` holds the pool's sides on
that device, validated and normalised once per run. On the CPU a side read from the embedding cache (a
read-only memmap, see `pool_embeddings.cached_pool_embeddings`) is not copied whole: `HostSide` copies and
normalises one block of rows at a time as the scan reads it, so the driver holds the file's pages
(shared with the page cache) plus one block, not a second normalised copy of the pool.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from frft_ray.similarity import FilterError

if TYPE_CHECKING:
    from frft_ray.pool_embeddings import PoolEmbeddings
    from frft_ray.strategies import Strategy

SAME_PROMPT_COS = 1.0 - 1e-5  # prompts this similar are the same prompt (float noise from batching)
WIDEN_STEPS = 3  # per_generation doubles each generation's share up to 3 times (8x) when too few rows come back
ONE_PASS_TOP = 64  # per_generation keeps the widest share from the first pass when it is this small (cheap top-k)


class HostSide:
    """One pool side left where it lives (a memmap of the cache) and read a block of rows at a time:
    `side[start:stop]` is that block L2-normalised, bit for bit the rows `unit_tensor` makes of the
    whole side (row norms do not depend on the other rows). The side is checked for NaN/inf once, a
    block at a time, when it is first read; a block is then normalised straight from the mapped pages
    (no copy besides the normalised result)."""

    def __init__(self, a: np.ndarray, what: str, block: int = 8192):
        if a.ndim != 2:
            raise FilterError(f"{what} must be a 2-D array [rows, dim], got shape {a.shape}")
        if a.dtype != np.float32:
            raise FilterError(f"{what} must be float32 to be read in place, got {a.dtype}")
        for start in range(0, a.shape[0], block):
            if not np.isfinite(a[start : start + block]).all():
                raise FilterError(f"{what} contains NaN or infinite values")
        self.a, self.shape = a, a.shape

    def __getitem__(self, rows: slice) -> torch.Tensor:
        with warnings.catch_warnings():  # read-only pages: only read here, never written
            warnings.simplefilter("ignore", UserWarning)
            t = torch.from_numpy(self.a[rows])
        return t / torch.linalg.vector_norm(t, dim=1, keepdim=True).clamp_min_(1e-12)


class DevicePool:
    """The pool's embeddings on `device`; each side (chosen, rejected, prompt) is copied there, checked
    and L2-normalised the first time a strategy reads it, then kept. A memmapped side on the CPU is a
    `HostSide` instead (read per block; a pass costs one extra block copy and normalisation, ~1/G of
    its matrix product)."""

    def __init__(self, pool: "PoolEmbeddings", device: str | torch.device = "cpu"):
        self.pool, self.device, self._sides = pool, torch.device(device), {}

    def __len__(self) -> int:
        return len(self.pool)

    @property
    def dim(self) -> int:
        return self.pool.dim

    def side(self, name: str) -> "torch.Tensor | HostSide":
        if name not in self._sides:
            a, what = getattr(self.pool, name), f"pool_emb.{name}"
            lazy = self.device.type == "cpu" and isinstance(a, np.memmap) and a.dtype == np.float32
            self._sides[name] = HostSide(a, what) if lazy else unit_tensor(a, what, self.device)
        return self._sides[name]


def as_device_pool(pool: "PoolEmbeddings | DevicePool", device: str | torch.device | None = None) -> DevicePool:
    return pool if isinstance(pool, DevicePool) else DevicePool(pool, device or "cpu")


def unit_tensor(a, what: str, device: torch.device) -> torch.Tensor:
    """`a` as L2-normalised fp32 rows on `device`; a FilterError naming `what` if not 2-D or not finite."""
    t = torch.tensor(np.asarray(a, dtype=np.float32), device=device)
    if t.ndim != 2:
        raise FilterError(f"{what} must be a 2-D array [rows, dim], got shape {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise FilterError(f"{what} contains NaN or infinite values")
    return t.div_(torch.linalg.vector_norm(t, dim=1, keepdim=True).clamp_min_(1e-12))


def aggregate_columns(sim: torch.Tensor, how: str, k: int) -> torch.Tensor:
    """Reduce a [G, rows] similarity block to [rows]; -inf entries are masked-out generations."""
    if how == "max":
        return sim.amax(dim=0)
    if how != "topk_mean":
        raise FilterError(f"filter.aggregate must be 'max' or 'topk_mean', got {how!r}")
    top = sim.topk(min(k, sim.shape[0]), dim=0).values
    valid = torch.isfinite(top)
    return torch.where(valid, top, 0.0).sum(dim=0) / valid.sum(dim=0).clamp_min(1)


def _top_rows(sim: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's k largest entries of a [G, rows] block, largest first: (values, column indices)."""
    if k == 1:
        v, i = sim.max(dim=1, keepdim=True)
        return v, i
    return sim.topk(k, dim=1)


@dataclass
class Scan:
    """What one pass over the pool computed; tensors stay on the pool's device."""

    scores: torch.Tensor | None  # [N] each pair's score: per-side aggregate over generations, merged
    best: torch.Tensor | None  # [N] the largest merged similarity of each pair to any generation
    top_values: torch.Tensor | None  # [G, m] each generation's m most similar pairs, largest first
    top_rows: torch.Tensor | None  # [G, m] their pool rows


def scan(pool: DevicePool, gen: torch.Tensor, strategy: "Strategy", chunk_size: int, *, aggregate: str = "max",
         k: int = 1, scores: bool = True, best: bool = False, top: int = 0, query_groups: torch.Tensor | None = None,
         gen_groups: torch.Tensor | None = None) -> Scan:
    """One chunked pass of the L2-normalised generations `gen` [G, d] over the pool (see the module docstring).

    With `query_groups` [N] / `gen_groups` [G], a pair's score compares it only with the generations of
    its group. `top` > 0 asks for each generation's `top` nearest pairs (`top` <= N).
    """
    n, dev = len(pool), pool.device
    sides = [pool.side(name) for name in strategy.sides]
    # One side scored by its max over generations: the score is the best similarity, reduce once.
    shared = scores and aggregate == "max" and query_groups is None and len(sides) == 1
    out_scores = torch.empty(n, device=dev) if scores else None
    out_best = out_scores if shared else (torch.empty(n, device=dev) if best else None)
    top_v, top_i = [], []
    for start in range(0, n, chunk_size):
        stop = min(n, start + chunk_size)
        blocks = [gen @ side[start:stop].T for side in sides]  # [G, rows]
        if scores and not shared:
            if query_groups is not None:
                other = gen_groups[:, None] != query_groups[None, start:stop]
                blocks_scored = [b.masked_fill(other, float("-inf")) for b in blocks]
            else:
                blocks_scored = blocks
            out_scores[start:stop] = strategy.merge([aggregate_columns(b, aggregate, k) for b in blocks_scored])
        if out_best is not None or top:
            merged = strategy.merge(blocks)
            if out_best is not None:
                out_best[start:stop] = merged.amax(dim=0)
            if top:
                v, i = _top_rows(merged, min(top, stop - start))
                top_v.append(v)
                top_i.append(i + start)
    values = rows = None
    if top:
        values, rows = torch.cat(top_v, dim=1), torch.cat(top_i, dim=1)
        if values.shape[1] > top:  # several chunks: keep the best `top` of their candidates
            values, j = values.topk(top, dim=1)
            rows = rows.gather(1, j)
    return Scan(out_scores, out_best if best else None, values, rows)


def per_generation(pool: DevicePool, gen: torch.Tensor, strategy: "Strategy", budget: int, threshold: float,
                   chunk_size: int, aggregate: str = "max", k: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(rows, scores): selection `per_generation` and every pair's score.

    Rows: the union over generations of each one's m = ceil(budget / G) most similar pairs with
    similarity >= threshold, capped at `budget` by each pair's best similarity to any generation. When
    the union holds fewer than `budget` rows, m doubles (up to WIDEN_STEPS times, until enough rows or
    m = N): near-identical generations share neighbours. Each doubling reads a prefix of every
    generation's widest share (8m rows). The first pass keeps that share when it is at most
    ONE_PASS_TOP rows; otherwise it keeps m rows, and a widening pass covers only the generations whose
    m-th neighbour passed the threshold (the others cannot add rows), once, at the widest share.
    """
    n, g = len(pool), gen.shape[0]
    m = min(n, -(-budget // g))
    widest = min(n, m << WIDEN_STEPS)
    first = scan(pool, gen, strategy, chunk_size, aggregate=aggregate, k=k, best=True,
                 top=widest if widest <= ONE_PASS_TOP else m)
    passed = first.top_values[:, :m] >= threshold  # [G, m], largest first: a prefix of each row
    picked = torch.zeros(n, dtype=torch.bool, device=pool.device)
    picked[first.top_rows[:, :m][passed]] = True
    active = passed[:, -1]  # the generations that could still add rows
    if int(picked.sum()) < budget and m < n and bool(active.any()):
        done = torch.zeros_like(picked)  # the rows of the generations that cannot
        done[first.top_rows[:, :m][passed & ~active[:, None]]] = True
        if first.top_values.shape[1] >= widest:
            wide_v, wide_r = first.top_values[active], first.top_rows[active]
        else:
            wide = scan(pool, gen[active], strategy, chunk_size, scores=False, top=widest)
            wide_v, wide_r = wide.top_values, wide.top_rows
        for _ in range(WIDEN_STEPS):
            m = min(n, 2 * m)
            picked = done.clone()
            picked[wide_r[:, :m][wide_v[:, :m] >= threshold]] = True
            if int(picked.sum()) >= budget or m >= n:
                break
    rows = picked.nonzero().squeeze(1).cpu().numpy()
    best = first.best.cpu().numpy()
    rows = rows[np.argsort(-best[rows], kind="stable")][:budget]
    return rows, first.scores.cpu().numpy()


def group_generations(gen_prompt: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """Group id per generation: generations whose prompt embeddings are identical share a group.

    The id is the index of the first generation with that prompt, so ids are stable and float noise
    from batching cannot split a prompt into two groups.
    """
    parts = []
    for start in range(0, gen_prompt.shape[0], chunk_size):
        same = (gen_prompt[start : start + chunk_size] @ gen_prompt.T) >= SAME_PROMPT_COS
        parts.append(same.to(torch.uint8).argmax(dim=1))  # the first generation with this prompt
    return torch.cat(parts)


def nearest_group(pool_prompt: torch.Tensor, gen_prompt: torch.Tensor, gen_groups: torch.Tensor,
                  chunk_size: int) -> torch.Tensor:
    """For each pool prompt, the group of the most similar policy prompt (both sides normalised)."""
    ids, first = np.unique(gen_groups.cpu().numpy(), return_index=True)
    rep_prompt = gen_prompt[torch.as_tensor(first, device=gen_prompt.device)]  # one prompt row per group
    ids_t = torch.as_tensor(ids, device=gen_prompt.device)
    return torch.cat([ids_t[(pool_prompt[s : s + chunk_size] @ rep_prompt.T).argmax(dim=1)]
                      for s in range(0, pool_prompt.shape[0], chunk_size)])
