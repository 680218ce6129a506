"""SCL-046 Directoryキャッシュ無効化: lookups with the cache off, under load; p95 <= 180 ms.

A real `DirectoryService` (aiohttp, the service's own SQLite `Store` and 4-shard `ShardMap`) on
127.0.0.1 with `cache_ttl_s = 0`: no lookup cache in the service, and `Cache-Control: no-cache`
on every answer, so every lookup reads its row from the shard that holds the id ("cache miss
100%"). Its store holds 50,000 x --scale (at least 1,000) node records as SCL-011 builds them
(3 layers of mixes, 5% gateways with an X-Wing key, 7 regions), written in one transaction
before the service takes traffic.

**Precondition: DB readiness.** Before the clock: the store's per-shard row counts must add up to
the records written, and one lookup per shard over HTTP must answer 200 with the right record.

**Load.** The source gives no rate (its load model is the cache state only), so we choose one:
500 lookups/s x --scale, open loop (arrival i at i / rate whatever happened before, latency from
that scheduled time), each a GET /v1/nodes/{id} of a node id drawn uniformly from all of them, over
a keep-alive aiohttp client (at most 64 connections). Why 500/s: on these 2-core machines the
generator, the client and the service share one event loop (the store's SQLite reads run on its
own thread), and that loop carries about 1,300 lookups/s in all (0.75 ms per lookup, client
included; beyond it arrivals queue without bound and the generator itself falls behind). 500/s
loads it to about 40%: enough for queueing to show in the tail, far enough from saturation that
the figure is the service's and not the generator's. It is also more than the directory needs
from lookups: clients route from the whole signed document, never from lookups
(docs/directory.md); lookups are for tools and for nodes checking one peer's record.

**Value.** p95, in ms, from each lookup's scheduled time to its parsed and checked answer (the
record's node id must be the one asked; anything else, an error status or 10 s without an answer,
is a failed lookup, listed in the notes). Beside it the service's own `directory_lookup_latency`
(mean handler time per lookup over each second, as `/metrics` exports it, scraped every second).
INCONCLUSIVE when fewer than 95% of the asked lookups per second were started; a failed lookup is
still offered load, and its share is reported.
"""

from __future__ import annotations

import asyncio
import math
import random
import re
import tempfile
import time
from pathlib import Path

import aiohttp

from nyx.bench.loadgen import Schedule, drive_async, percentile
from nyx.bench.report import Measurement
from nyx.bench.scenarios import RunOptions
from nyx.bench.scenarios.scl_011 import SHARDS, make_record
from nyx.directory.service import DirectoryService, ServiceSettings
from nyx.directory.authority import Registration

RECORDS = 50_000
MIN_RECORDS = 1_000
LOOKUPS_PER_S = 500.0
CONNECTIONS = 64
TIMEOUT_S = 10.0
DEFAULT_DURATION_S = 30.0
QUICK = (3.0, 0.5)

_METRIC = re.compile(r"^directory_lookup_latency(?:\{[^}]*\})? (\S+)$", re.MULTILINE)


async def replay(options: RunOptions) -> Measurement:
    rng = random.Random(options.seed)
    count = max(MIN_RECORDS, round(RECORDS * min(1.0, options.scale)))
    records = [make_record(i, rng, rng.randbytes(32).hex()) for i in range(count)]
    ids = [r.node_id for r in records]
    settings = ServiceSettings(cache_ttl_s=0.0, shards=tuple(SHARDS.items()))
    with tempfile.TemporaryDirectory(prefix="nyx-scl046-") as tmp:
        async with DirectoryService(Path(tmp) / "directory", settings) as service:
            assert service.store is not None
            store = service.store
            issued_ms = int(time.time() * 1000)
            entries = [(service.shard_map.shard_for(r.node_id), Registration(r, rng.randbytes(345), issued_ms))
                       for r in records]
            await store.call(store.save_registrations, entries)
            connector = aiohttp.TCPConnector(limit=CONNECTIONS)
            async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=TIMEOUT_S)) as http:
                readiness = await _ready(service, http, ids, count)
                return await _load(options, service, http, ids, count, readiness)


async def _ready(service: DirectoryService, http: aiohttp.ClientSession, ids: list[str], count: int) -> str:
    """The precondition: every row is in the store, and each shard answers a lookup over HTTP."""
    assert service.store is not None
    sizes = await service.store.call(service.store.shard_sizes)
    if sum(sizes.values()) != count:
        raise RuntimeError(f"DB not ready: the store holds {sum(sizes.values())} of {count} records")
    first_on: dict[str, str] = {}
    for node_id in ids:
        first_on.setdefault(service.shard_map.shard_for(node_id), node_id)
    for shard, node_id in sorted(first_on.items()):
        async with http.get(f"{service.url}/v1/nodes/{node_id}") as response:
            body = await response.json() if response.status == 200 else {}
        if body.get("shard") != shard or body.get("record", {}).get("node_id") != node_id:
            raise RuntimeError(f"DB not ready: lookup of {node_id} on {shard} answered {response.status} {body}")
    return ", ".join(f"{shard} {n:,}" for shard, n in sorted(sizes.items()))


async def _load(options: RunOptions, service: DirectoryService, http: aiohttp.ClientSession, ids: list[str],
                count: int, readiness: str) -> Measurement:
    rng = random.Random(options.seed + 1)
    asked = [rng.choice(ids) for _ in range(Schedule(LOOKUPS_PER_S * options.scale, options.duration_s).arrivals)]
    failures: dict[str, int] = {}
    lookups_before, misses_before = service.lookups, service.lookup_misses
    windows: list[float] = []

    async def lookup(index: int) -> bool:
        node_id = asked[index]
        try:
            async with http.get(f"{service.url}/v1/nodes/{node_id}") as response:
                if response.status != 200:
                    failures[f"HTTP {response.status}"] = failures.get(f"HTTP {response.status}", 0) + 1
                    return False
                body = await response.json()
        except (aiohttp.ClientError, ValueError) as exc:
            failures[type(exc).__name__] = failures.get(type(exc).__name__, 0) + 1
            return False
        if body.get("record", {}).get("node_id") != node_id:
            failures["wrong record"] = failures.get("wrong record", 0) + 1
            return False
        return True

    async def scrape() -> None:
        """The service's directory_lookup_latency as Prometheus would read it, once a second."""
        while True:
            await asyncio.sleep(1.0)
            service.metrics.publish()  # what DirectoryService.run does every second
            async with http.get(f"{service.url}/metrics") as response:
                match = _METRIC.search(await response.text())
            if match:
                windows.append(float(match.group(1)))

    schedule = Schedule(LOOKUPS_PER_S * options.scale, options.duration_s)
    service.metrics.publish()  # start the first window with the clock
    scraper = asyncio.create_task(scrape())
    try:
        result = await drive_async(schedule, lookup, max_outstanding=1024, timeout_s=TIMEOUT_S, tick=options.tick)
    finally:
        scraper.cancel()
    timeouts = result.failed - sum(failures.values())
    if timeouts:
        failures[f"no answer within {TIMEOUT_S:g} s"] = timeouts
    latencies = result.latencies_s
    p95_ms = 1000 * percentile(latencies, 95)
    served = service.lookups - lookups_before
    misses = service.lookup_misses - misses_before
    busy = [w for w in windows if w > 0]
    server_ms = (f"mean {1000 * sum(busy) / len(busy):.2f} ms over {len(busy)} one-second windows, "
                 f"max window {1000 * max(busy):.2f} ms") if busy else "no window with a lookup"
    failed_text = "; ".join(f"{k}: {n}" for k, n in sorted(failures.items())) or "none"
    return Measurement(
        value=p95_ms if latencies else math.nan,
        duration_s=result.elapsed_s,
        offered_rate=schedule.rate_per_s,
        achieved_rate=result.achieved_rate,
        full_rate=LOOKUPS_PER_S,
        rate_unit="lookups/s",
        detail=(
            f"p95 over {result.completed:,} lookups of random ids among {count:,} records (cache off: "
            f"{misses:,} of {served:,} lookups read the store), from each lookup's scheduled time to its checked answer"
        ),
        notes=(
            f"directory_lookup_latency (the service's handler time, /metrics): {server_ms}",
            f"client p50 {1000 * percentile(latencies, 50):.2f} ms, p99 {1000 * percentile(latencies, 99):.2f} ms, "
            f"max {1000 * max(latencies, default=math.nan):.2f} ms; failed lookups {result.failed:,} "
            f"({failed_text}); {result.missed:,} arrivals missed",
            f"DB readiness: rows per shard {readiness}; one lookup per shard answered before the clock",
            f"the rate is ours ({LOOKUPS_PER_S:g} lookups/s at scale 1): the source gives none",
        ),
        latencies_s=tuple(latencies),
        counts={
            "records": count,
            "completed": result.completed,
            "failed": result.failed,
            "missed": result.missed,
            "served": served,
            "cache_misses": misses,
        },
    )
