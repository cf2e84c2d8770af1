"""The load generator of `serve_bench.py`: concurrent clients POSTing OpenRLHF-style `/get_reward`
bodies, one request at a time each, with their latencies.

`aiohttp` (the default there): coroutines on one event loop sharing one session, every request on
its own connection, as OpenRLHF's remote-RM client sends them (one request per sample, all at
once). `threads`: one thread with a `requests.Session` per client.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import statistics
import time

import requests


def texts(n: int) -> list[str]:
    topics = ["cats", "the weather", "python lists", "a recipe for soup", "the moon", "taxes", "chess openings"]
    return [
        f"Human: Could you tell me something useful about {topics[i % 7]}, please? I asked {i} times.\n\n"
        f"Assistant: Sure. Here is what I know about {topics[(i * 3) % 7]}: it is {i % 13} parts "
        f"interesting and {i % 5} parts surprising, and people often ask about it."
        for i in range(n)
    ]


def load(url: str, concurrency: int, per_client: int, batch: int = 1, client: str = "aiohttp",
         queries: list[str] | None = None) -> dict:
    """`concurrency` clients each send `per_client` POSTs of `batch` queries, one at a time; latencies
    in ms. `aiohttp`: coroutines on one event loop sharing one session, every request on its own
    connection (OpenRLHF's remote-RM client: aiohttp, one request per sample, all at once);
    `threads`: one thread and `requests.Session` per client. The queries cycle through `queries`
    (default: `texts(64)`)."""
    run = _load_aiohttp if client == "aiohttp" else _load_threads
    t0 = time.perf_counter()
    results = run(url, concurrency, per_client, batch, queries or texts(64))
    wall = time.perf_counter() - t0
    lat = sorted(x for r, _ in results for x in r)
    q = statistics.quantiles(lat, n=100, method="inclusive") if len(lat) > 1 else lat * 99
    return {"req_s": len(lat) / wall, "queries_s": len(lat) * batch / wall, "p50_ms": q[49], "p99_ms": q[98],
            "errors": sum(e for _, e in results), "requests": len(lat)}


def _body(k: int, j: int, batch: int, qs: list[str]) -> dict:
    return {"query": [qs[(k * 7 + j + b) % len(qs)] for b in range(batch)]}


def _load_threads(url: str, concurrency: int, per_client: int, batch: int,
                  qs: list[str]) -> list[tuple[list[float], int]]:
    def client(k: int) -> tuple[list[float], int]:
        s, lat, errors = requests.Session(), [], 0
        for j in range(per_client):
            t = time.perf_counter()
            try:
                r = s.post(url, json=_body(k, j, batch, qs), timeout=300)
                errors += not r.ok or len(r.json()["rewards"]) != batch
            except requests.RequestException:
                errors += 1
            lat.append((time.perf_counter() - t) * 1000)
        return lat, errors

    with cf.ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(client, range(concurrency)))


def _load_aiohttp(url: str, concurrency: int, per_client: int, batch: int,
                  qs: list[str]) -> list[tuple[list[float], int]]:
    import aiohttp

    async def main() -> list[tuple[list[float], int]]:
        timeout = aiohttp.ClientTimeout(total=300)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as s:

            async def client(k: int) -> tuple[list[float], int]:
                lat, errors = [], 0
                for j in range(per_client):
                    t = time.perf_counter()
                    try:
                        async with s.post(url, json=_body(k, j, batch, qs)) as r:
                            errors += r.status != 200 or len((await r.json())["rewards"]) != batch
                    except (aiohttp.ClientError, asyncio.TimeoutError):
                        errors += 1
                    lat.append((time.perf_counter() - t) * 1000)
                return lat, errors

            return list(await asyncio.gather(*(client(k) for k in range(concurrency))))

    return asyncio.run(main())
