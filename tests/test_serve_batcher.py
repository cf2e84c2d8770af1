"""serve/batcher.py: continuous batching on a real event loop and real worker threads (no Ray)."""

import asyncio
import threading

import pytest

from serve.batcher import ContinuousBatcher


class Recorder:
    """A batch function that records each batch; the first call can be held until released."""

    def __init__(self, hold_first: bool = False):
        self.batches: list[list] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        if not hold_first:
            self.release.set()

    def __call__(self, items):
        self.batches.append(list(items))
        self.entered.set()
        self.release.wait(10)
        return [x * 10 for x in items]


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


def test_a_lone_request_runs_at_once_alone():
    fn = Recorder()
    b = ContinuousBatcher(fn, max_batch_size=8)

    async def go():
        return [await b.submit(i) for i in range(3)]  # one after another: never merged

    assert run(go()) == [0, 10, 20]
    assert fn.batches == [[0], [1], [2]]
    assert (b.batches, b.requests) == (3, 3)


def test_requests_that_queue_during_a_forward_form_the_next_batch():
    fn = Recorder(hold_first=True)
    b = ContinuousBatcher(fn, max_batch_size=4)

    async def go():
        first = asyncio.ensure_future(b.submit(0))
        await asyncio.to_thread(fn.entered.wait, 10)  # the first forward is running (held)
        rest = [asyncio.ensure_future(b.submit(i)) for i in range(1, 7)]
        await asyncio.sleep(0.05)
        fn.release.set()
        return await first, await asyncio.gather(*rest)

    first, rest = run(go())
    assert first == 0 and rest == [10, 20, 30, 40, 50, 60]  # each caller gets its own result
    assert fn.batches == [[0], [1, 2, 3, 4], [5, 6]]  # in order, at most max_batch_size per batch


def test_linger_waits_for_more_requests():
    fn = Recorder()
    b = ContinuousBatcher(fn, max_batch_size=8, linger_s=0.5)

    async def go():
        first = asyncio.ensure_future(b.submit(1))
        await asyncio.sleep(0.02)  # inside the linger window of the first
        return await asyncio.gather(first, b.submit(2))

    assert run(go()) == [10, 20]
    assert fn.batches == [[1, 2]]


def test_an_error_reaches_every_caller_of_its_batch_and_the_batcher_goes_on():
    calls = []

    def fn(items):
        calls.append(list(items))
        if -1 in items:
            raise ValueError("bad item")
        return items

    b = ContinuousBatcher(fn, max_batch_size=8)

    async def go():
        with pytest.raises(ValueError, match="bad item"):
            await b.submit(-1)
        return await b.submit(5)

    assert run(go()) == 5
    assert calls == [[-1], [5]]


def test_a_wrong_number_of_results_is_an_error():
    b = ContinuousBatcher(lambda items: items[:-1], max_batch_size=8)
    with pytest.raises(RuntimeError, match="returned 0 results for 1 items"):
        run(b.submit(1))


def test_a_cancelled_caller_is_not_scored():
    fn = Recorder(hold_first=True)
    b = ContinuousBatcher(fn, max_batch_size=8)

    async def go():
        first = asyncio.ensure_future(b.submit(0))
        await asyncio.to_thread(fn.entered.wait, 10)
        gone, kept = asyncio.ensure_future(b.submit(1)), asyncio.ensure_future(b.submit(2))
        await asyncio.sleep(0)
        gone.cancel()  # its client went away while it queued
        fn.release.set()
        return await first, await kept

    assert run(go()) == (0, 20)
    assert fn.batches == [[0], [2]]


def test_max_batch_size_must_be_positive():
    with pytest.raises(ValueError, match="max_batch_size must be >= 1"):
        ContinuousBatcher(lambda x: x, max_batch_size=0)


class ThreadRecorder:
    """A batch function that records which thread ran each batch, after an optional pause."""

    def __init__(self, pause_s: float = 0.0):
        self.pause_s, self.threads, self.batches = pause_s, [], []

    def __call__(self, items):
        if self.pause_s:
            threading.Event().wait(self.pause_s)
        self.threads.append(threading.current_thread().name)
        self.batches.append(list(items))
        return [x * 10 for x in items]


def test_light_traffic_runs_short_lone_forwards_on_the_event_loop():
    fn = ThreadRecorder()
    b = ContinuousBatcher(fn, max_batch_size=8, inline_max_s=1.0)

    async def go():
        loop_thread = threading.current_thread().name
        alone = [await b.submit(i) for i in range(3)]  # one client: lone after lone
        burst = await asyncio.gather(*(b.submit(i) for i in range(10, 14)))  # several clients at once
        after = [await b.submit(i) for i in (20, 21)]
        return loop_thread, alone, burst, after

    loop_thread, alone, burst, after = run(go())
    assert alone == [0, 10, 20] and burst == [100, 110, 120, 130] and after == [200, 210]
    on_loop = [t == loop_thread for t in fn.threads]
    # the first lone forward has no timing yet: worker thread; then lone after lone: on the loop. The
    # burst is one batch, in the worker thread, and so is the lone request after it (traffic was not
    # light); the next lone one runs inline again.
    assert fn.batches == [[0], [1], [2], [10, 11, 12, 13], [20], [21]]
    assert on_loop == [False, True, True, False, False, True]
    assert b.inline == 3


def test_a_slow_lone_forward_never_blocks_the_event_loop():
    fn = ThreadRecorder(pause_s=0.05)
    slow = ContinuousBatcher(fn, max_batch_size=8, inline_max_s=0.01)
    off = ContinuousBatcher(ThreadRecorder(), max_batch_size=8, inline_max_s=0.0)  # 0: never inline

    async def go():
        loop_thread = threading.current_thread().name
        for i in range(3):
            assert await slow.submit(i) == i * 10 and await off.submit(i) == i * 10
        return loop_thread

    loop_thread = run(go())
    assert loop_thread not in fn.threads and loop_thread not in off._fn.threads
    assert slow.inline == off.inline == 0
