"""SCL-035 TLS再交渉負荷: 5,000 TLS re-handshakes per minute with session tickets ready; p95 <= 120 ms.

A gateway-like `QuicTransport` listens on 127.0.0.1. A pool of returning clients first connects
once each (the precondition "session tickets ready": each now holds a ticket from the gateway,
filed under the gateway's pinned certificate); that warm-up is not measured. Then reconnections
arrive open-loop at 5,000 per minute (83/s at scale 1), round-robin over the pool: each is a new
`QuicTransport` on its own UDP socket with the client's ticket cache, which opens a link to the
gateway (`connect`: a resumed QUIC/TLS 1.3 handshake) and closes it. The latency of an arrival
runs from its scheduled time to the end of `connect`; the value is the p95. The notes give the
share of handshakes that actually resumed (read from the gateway's counter, not assumed).

Always QUIC: `--transport sim` has no handshake to measure.
"""

from __future__ import annotations

import time

from nyx.bench.loadgen import Schedule, drive_async, percentile
from nyx.bench.report import Measurement
from nyx.bench.scenarios import RunOptions
from nyx.transport.certs import NodeIdentity
from nyx.transport.quic import QuicTransport
from nyx.transport.tickets import ClientTicketCache

HANDSHAKES_PER_S = 5000 / 60
GATEWAY = "gw-1"
CLIENT_POOL = 32
DEFAULT_DURATION_S = 10.0
QUICK = (4.0, 1.0)


async def _connect(name: str, identity: NodeIdentity, tickets: ClientTicketCache, gateway_address) -> float:
    """Open one link to the gateway and close it; the seconds `connect` took."""
    client = QuicTransport(name, identity, keepalive_s=60.0, client_tickets=tickets)
    try:
        await client.listen()
        client.add_peer(GATEWAY, gateway_address)
        opened = time.perf_counter()
        await client.connect(GATEWAY)
        return time.perf_counter() - opened
    finally:
        await client.close()


async def replay(options: RunOptions) -> Measurement:
    gateway = QuicTransport(GATEWAY, NodeIdentity.generate(GATEWAY))
    client_identity = NodeIdentity.generate("client")
    pool = [ClientTicketCache() for _ in range(CLIENT_POOL)]
    handshake_s: list[float] = []
    latencies: list[float] = []
    try:
        address = await gateway.listen()
        for i, tickets in enumerate(pool):  # precondition: every client holds a ticket
            await _connect(f"client-{i}", client_identity, tickets, address)
        warm_full, warm_resumed = gateway.handshakes, gateway.handshakes_resumed
        schedule = Schedule(HANDSHAKES_PER_S * options.scale, options.duration_s)
        start = time.perf_counter()

        async def returning_client(index: int) -> bool:
            slot = index % CLIENT_POOL
            try:
                handshake_s.append(await _connect(f"client-{slot}", client_identity, pool[slot], address))
            except ConnectionError:
                return False
            latencies.append(time.perf_counter() - start - schedule.due_s(index))
            return True

        result = await drive_async(schedule, returning_client, timeout_s=5.0, tick=options.tick)
        handshakes = gateway.handshakes - warm_full
        resumed = gateway.handshakes_resumed - warm_resumed
    finally:
        await gateway.close()
    return Measurement(
        value=1000 * percentile(latencies, 95),
        duration_s=result.elapsed_s,
        offered_rate=schedule.rate_per_s,
        achieved_rate=result.achieved_rate,
        full_rate=HANDSHAKES_PER_S,
        rate_unit="handshakes/s",
        detail=(
            f"p95 over {len(latencies):,} reconnections of {CLIENT_POOL} returning clients, from each "
            "scheduled arrival to an established link"
        ),
        notes=(
            f"handshake alone (tls_handshake_duration's sample): p50 {1000 * percentile(handshake_s, 50):.1f} ms, "
            f"p95 {1000 * percentile(handshake_s, 95):.1f} ms",
            f"the gateway counted {handshakes:,} handshakes, {resumed:,} of them resumed from a session ticket "
            f"({100 * resumed / max(handshakes, 1):.1f}%)",
            f"{result.failed} failed, {result.missed} missed",
            "always over QUIC (--transport does not apply: the simulation has no handshake)",
        ),
        latencies_s=tuple(latencies),
    )
