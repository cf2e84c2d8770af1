"""Continuous batching across concurrent requests: a batch is what queued while the model was busy.

Why not `@serve.batch`: in Ray 2.60 its loop closes the next batch as soon as the previous one is
handed to its task, before that batch has finished (the `max_concurrent_batches` semaphore is taken
inside the task). With `batch_wait_timeout_s=0` every batch under load therefore holds one request;
with a wait, every request pays it, a lone one included. Measured with `benchmarks/serve_bench.py`
on a 2-core CPU, tiny RM (docs/serve.md): a 5 ms wait put a lone client at 14 ms p50 against the
forward's 2 ms, and no wait halved throughput at 16 clients.

Here the next batch is formed when the model becomes free: a lone request runs at once, and under
load a batch holds every request that arrived during the previous forward (up to `max_batch_size`
requests). `linger_s` > 0 waits that long for more before a batch that is not full (a GPU serving
moderate traffic may prefer fuller batches to lower latency). One batch runs at a time, in a worker
thread, so the event loop keeps accepting the requests that form the next one.

Light traffic runs inline (`inline_max_s`, ours): a lone request whose batch follows another lone
one is run on the event loop itself when the last lone forward took less than `inline_max_s`. The
hop to the worker thread and back cost the replica 0.2-0.7 ms of CPU per request at one client on a
2-core CPU (tiny RM, replica CPU per request over 4 x 600 requests, two runs of each mode taking
turns: fp32 3.1-4.1 ms inline against 4.0-4.8 ms; bf16 4.3-4.8 against 4.5-5.0). Under load
most batches hold several requests and keep to the worker thread, and a forward longer than
`inline_max_s` never blocks the loop (GET /v1/model counted 0% inline from 16 aiohttp clients up,
30% at 16 staggered thread clients, 0% from 64).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Any


class ContinuousBatcher:
    """`await submit(item)` returns `fn([... item ...])[i]`; `fn` maps a list of items to a list of
    results of the same length and runs in a worker thread (or on the loop: `inline_max_s`). An
    exception raised by `fn` goes to every caller of that batch; a caller that went away (its task
    cancelled) is left out of the next batch."""

    def __init__(self, fn: Callable[[list], list], max_batch_size: int, linger_s: float = 0.0,
                 inline_max_s: float = 0.0):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        self._fn = fn
        self.max_batch_size = max_batch_size
        self.linger_s = linger_s
        self.inline_max_s = inline_max_s
        self._lone_s: float | None = None  # how long the last lone batch took
        self._last_size = 0  # requests in the last batch
        self._queue: deque[tuple[Any, asyncio.Future]] = deque()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self.batches = 0  # batches run, the requests in them, those run inline: for tests and GET /v1/model
        self.requests = 0
        self.inline = 0

    async def submit(self, item: Any) -> Any:
        loop = asyncio.get_running_loop()
        if self._wake is None:
            self._wake = asyncio.Event()
        fut = loop.create_future()
        self._queue.append((item, fut))
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run(), name="rm-continuous-batcher")
        return await fut

    def _take(self) -> list[tuple[Any, asyncio.Future]]:
        batch = []
        while self._queue and len(batch) < self.max_batch_size:
            item, fut = self._queue.popleft()
            if not fut.done():  # a cancelled caller's request is not scored
                batch.append((item, fut))
        return batch

    def _runs_inline(self, batch: list) -> bool:
        """A lone request after a lone batch, nothing queued, and the last lone forward was short."""
        return (len(batch) == 1 and self._last_size == 1 and not self._queue and self._lone_s is not None
                and self._lone_s < self.inline_max_s)

    async def _run(self) -> None:
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
            if self.linger_s > 0 and len(self._queue) < self.max_batch_size:
                await asyncio.sleep(self.linger_s)
            batch = self._take()
            if not batch:
                continue
            self.batches += 1
            self.requests += len(batch)
            inline = self._runs_inline(batch)
            self.inline += inline
            self._last_size = len(batch)
            items, t0 = [item for item, _ in batch], time.perf_counter()
            try:
                results = self._fn(items) if inline else await asyncio.to_thread(self._fn, items)
                if len(results) != len(batch):
                    raise RuntimeError(f"batch function returned {len(results)} results for {len(batch)} items")
            except Exception as e:  # every caller of this batch gets the error; the loop goes on
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            if len(batch) == 1:
                self._lone_s = time.perf_counter() - t0
            for (_, fut), res in zip(batch, results):
                if not fut.done():
                    fut.set_result(res)
