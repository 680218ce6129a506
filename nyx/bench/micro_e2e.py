"""The end-to-end path's own costs, beside their goals (issue: gateways and `nyx.Client`).

- **Overhead per hop beyond the configured mix delays.** A whole mixnet in this process
  (`nyx.bench.mixnet`: real gateways and mixes, real handshakes and Sphinx packets) with every
  mix delay set to 0 and links of 0 latency, so a request's round trip is nothing but overhead:
  Sphinx work at 9 hops (entry, L1, L2, L3, exit forward; L1, L2, L3, entry back), sessions,
  ACKs, SURBs, the event loop. Clients send 64-byte requests on open streams at Poisson times,
  SCL-001's 500 requests/s in all, and read each 64-byte echo. The figure is the p95 round trip
  divided by 9; the goal is 5 ms per hop. As ops/s: 1 / (p95 per hop) beside 1 / 5 ms, so a
  ratio >= 1 meets the goal. Two runs: unloaded (one request at a time: what a hop adds when
  nothing queues) and at 500 requests/s. One process plays every node in the second, so the
  whole network's CPU (every hop's X25519, every SURB made) queues on one core, where a deployed
  mix would carry a fifth of its layer's share on a core of its own: an upper bound, and the
  reason it misses the goal on this machine.
- **A gateway's forwarded packets/s over QUIC**, per backend: `python -m nyx.stream gateway` in
  its own process forwarding a client's packets to the next hop (its entry role), timed as
  `nyx.bench.micro_mix` times a mix process, beside the seed's 2,000 requests/s per node.
"""

from __future__ import annotations

import asyncio
import random
import time

from nyx.bench.micro_mix import node_configurations, node_process_runs
from nyx.bench.mixnet import MixnetShape, mixnet
from nyx.bench.timing import MicroRecord
from nyx.transport import LinkProfile

HOPS_PER_ROUND_TRIP = 9
GOAL_PER_HOP_S = 0.005
SCL_001_RATE = 500.0
SEED_RATE_PER_NODE = 2000.0
CLIENTS = 20


async def _overhead(rate: float | None, duration_s: float, seed: int = 1) -> tuple[list[float], int, int]:
    """Request round trips (s) at `rate` requests/s (Poisson, on an absolute schedule, so a busy
    loop does not lower the offered rate) for `duration_s`; (latencies, asked, done). `rate`
    None: one request at a time, 20 ms apart (the unloaded overhead)."""
    shape = MixnetShape(mixes_per_layer=2, gateways=2, mean_delay_s=0.0, profile=LinkProfile(latency_s=0.0))
    latencies: list[float] = []
    asked = done = 0
    rng = random.Random(seed)
    async with mixnet(shape, seed=seed) as net:
        clients = [net.client(gateway="gw-01", exit="gw-02") for _ in range(CLIENTS)]
        for client in clients:
            await client.start()
        try:
            streams = [await asyncio.wait_for(client.open_connection("echo"), 30) for client in clients]
            locks = [asyncio.Lock() for _ in streams]

            broken: set[int] = set()

            async def request(i: int) -> None:
                nonlocal done
                reader, writer = streams[i]
                async with locks[i]:  # one request at a time per stream: echoes come back in order
                    if i in broken:
                        return  # unanswered: counted as asked, not done
                    started = time.perf_counter()
                    try:
                        writer.write(bytes(64))
                        await writer.drain()
                        await asyncio.wait_for(reader.readexactly(64), 10)
                    except (TimeoutError, ConnectionError):
                        broken.add(i)  # an echo may still be under way: this stream is out of step
                        return
                    latencies.append(time.perf_counter() - started)
                    done += 1

            async with asyncio.TaskGroup() as tg:
                end = time.perf_counter() + duration_s
                due = time.perf_counter()
                while due < end:
                    if rate is None:
                        asked += 1
                        await request(0)
                        await asyncio.sleep(0.02)
                        due = time.perf_counter()
                        continue
                    due += rng.expovariate(rate)
                    await asyncio.sleep(max(0.0, due - time.perf_counter()))
                    tg.create_task(request(rng.randrange(CLIENTS)))
                    asked += 1
        finally:
            for client in clients:
                await client.close()
    return latencies, asked, done


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


def records(budget_s: float) -> list[MicroRecord]:
    """The overhead per hop at SCL-001's rate; each backend's gateway forwarding rate."""
    duration = max(2.0, min(10.0, budget_s * 20))
    out = []
    for rate, label in ((None, "unloaded"), (SCL_001_RATE, "500 req/s, whole network on one core")):
        latencies, asked, done = asyncio.run(_overhead(rate, duration))
        per_hop = _p95(latencies) / HOPS_PER_ROUND_TRIP if latencies else float("inf")
        print(f"micro e2e ({label}): {done} of {asked} requests answered in {duration:.0f} s; p95 round trip "
              f"{_p95(latencies) * 1000:.1f} ms = {per_hop * 1000:.2f} ms per hop (goal 5 ms)")
        out.append(MicroRecord(f"e2e 1/(overhead per hop, p95), {label}", 1.0 / per_hop,
                               "1/(5 ms per hop goal)", 1.0 / GOAL_PER_HOP_S))
    loop = "uvloop" if any(lp == "uvloop" for _, lp in node_configurations()) else "asyncio"
    backends = sorted({backend for backend, _ in node_configurations()})
    runs = node_process_runs(window_s=max(1.0, min(3.0, budget_s * 6)), pool=20_000,
                             configurations=[(backend, loop) for backend in backends], program="gateway")
    for (backend, run_loop), run in runs.items():
        out.append(MicroRecord(f"gateway process forward/s, {backend} {run_loop}", run.forward_pps,
                               "seed's 2,000 req/s per node", SEED_RATE_PER_NODE))
    return out
