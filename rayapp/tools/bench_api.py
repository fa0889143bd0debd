"""Load on the HTTP API: latency percentiles and requests/s per endpoint under bounded concurrency.

Requests go over real HTTP to 127.0.0.1 from one asyncio client (``httpx``) keeping at most
``concurrency`` requests in flight; every answer must be 200, errors are counted and reported.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass
from typing import Any

from rayapp.catalog import GOLD_MERCHANT, SILVER
from rayapp.consumer.keys import KeyStore, Scope
from rayapp.lake import Lake


@dataclass(frozen=True)
class Endpoint:
    name: str
    method: str
    paths: list[str]
    bodies: list[Any] | None = None


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0–1) by linear interpolation between closest ranks."""
    if not values:
        return float("nan")
    s = sorted(values)
    pos = (len(s) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


async def _load(base: str, key: str, ep: Endpoint, requests: int, concurrency: int) -> dict[str, Any]:
    import httpx

    latencies: list[float] = []
    errors: dict[str, int] = {}
    limit = asyncio.Semaphore(concurrency)
    headers = {"authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60,
                                 limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)) as client:  # fmt: skip

        async def one(i: int) -> None:
            async with limit:
                path = ep.paths[i % len(ep.paths)]
                t0 = time.perf_counter()
                if ep.method == "POST":
                    assert ep.bodies is not None
                    resp = await client.post(path, json=ep.bodies[i % len(ep.bodies)])
                else:
                    resp = await client.get(path)
                latencies.append(time.perf_counter() - t0)
                if resp.status_code != 200:
                    errors[str(resp.status_code)] = errors.get(str(resp.status_code), 0) + 1

        await asyncio.gather(*(one(i) for i in range(min(concurrency, requests))))  # warm-up: connections, caches
        latencies.clear()
        errors.clear()
        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(requests)))
        wall = time.perf_counter() - t0
    return {
        "endpoint": ep.name, "requests": requests, "concurrency": concurrency, "seconds": round(wall, 3),
        "requests_per_s": round(requests / wall, 1), "p50_ms": round(percentile(latencies, 0.5) * 1000, 1),
        "p95_ms": round(percentile(latencies, 0.95) * 1000, 1), "errors": errors,
    }  # fmt: skip


def api_benchmark(lake: Lake, base: str, requests: int = 300, concurrency: int = 8, seed: int = 7) -> list[dict[str, Any]]:
    """Time ``/v1/datasets``, ``/v1/search`` and ``/v1/transactions/{id}`` (and one dataset's file
    list) on the API at ``base``, whose lake (and stores) ``lake`` names; a temporary key is used and revoked."""
    rng = random.Random(seed)
    ids = lake.read(SILVER, columns=["transaction_id"])["transaction_id"].to_pylist()
    merchants = lake.read(GOLD_MERCHANT, columns=["merchant_id"])["merchant_id"].unique().to_pylist()
    words = ["fuel", "grocery", "travel", "electronics", "online order", "restaurant", "pharmacy", "card purchase"]
    endpoints = [
        Endpoint("GET /v1/datasets", "GET", ["/v1/datasets"]),
        Endpoint("GET /v1/datasets/{name}/files", "GET", ["/v1/datasets/merchant_daily_stats/files"]),
        Endpoint("POST /v1/search", "POST", ["/v1/search"],
                 [{"query": f"{rng.choice(words)} {rng.choice(merchants) if merchants else ''}", "kind": "merchants", "k": 10}
                  for _ in range(64)]),  # fmt: skip
        Endpoint("GET /v1/transactions/{id}", "GET", [f"/v1/transactions/{rng.choice(ids)}" for _ in range(min(requests, 1000))]),
    ]
    store = KeyStore(lake)
    record, key = store.create(f"benchmark-{time.time_ns()}", tuple(Scope))
    try:
        return [asyncio.run(_load(base, key, ep, requests, concurrency)) for ep in endpoints]
    finally:
        store.revoke(record.key_id)


def summary_lines(results: list[dict[str, Any]]) -> list[str]:
    return [f"  {r['endpoint']:<32} {r['requests_per_s']:>8} req/s  p50 {r['p50_ms']:>7} ms  p95 {r['p95_ms']:>7} ms"
            f"  (c={r['concurrency']}, n={r['requests']}{', errors ' + json.dumps(r['errors']) if r['errors'] else ''})" for r in results]  # fmt: skip
