"""SCL-006 Transport帯域飽和: 1 Gbps equivalent through 20 transport nodes, MTU 1280; loss < 0.5%.

At 1,280 bytes per packet on the wire, 1 Gbps is 97,656 packets/s. Twenty nodes (the real
`SimTransport` on a `SimNetwork`, or `QuicTransport` on 127.0.0.1 with `--transport quic`) each
send to three others (60 directed links, connected before the load starts), packets of the
largest size one datagram carries (1,170 bytes: a 1,200-byte UDP payload on a 1,280-byte MTU
path). Packets are offered open-loop through `Transport.send`, which never blocks: a full
queue refuses the packet and counts it.

The value is the end-to-end loss: packets offered minus packets delivered to the receivers'
handlers, over packets offered, in percent, after in-flight packets have landed (nothing more arrives for
0.5 s, or 10 s passed). It
includes refused sends, random loss and (over QUIC) datagrams lost in the kernel's buffers. The
nodes' own `transport_packet_loss` is in the notes. In the simulation every link runs at 1 Gbps
with 1 ms latency, so loss comes from queueing, not from a loss rate we chose.
"""

from __future__ import annotations

import asyncio
import time

from nyx.bench import network
from nyx.bench.loadgen import Schedule, drive_sync
from nyx.bench.report import Measurement
from nyx.bench.scenarios import RunOptions
from nyx.transport import LinkProfile

WIRE_BYTES = 1280
PACKETS_PER_S = 1e9 / 8 / WIRE_BYTES
NODES = 20
FAN_OUT = (1, 2, 5)  # node s sends to s+1, s+2, s+5 (mod 20)
SIM_LINK = LinkProfile(latency_s=0.001, bandwidth_bps=1e9)
SETTLE_IDLE_S = 0.5  # in-flight packets have landed once nothing arrived for this long
SETTLE_MAX_S = 10.0
DEFAULT_DURATION_S = 10.0
QUICK = (3.0, 1.0)


async def replay(options: RunOptions) -> Measurement:
    ids = [f"tr-{n:02d}" for n in range(NODES)]
    pairs = [(ids[s], ids[(s + step) % NODES]) for step in FAN_OUT for s in range(NODES)]
    delivered = 0

    def on_packet(peer: str, packet: bytes) -> None:
        nonlocal delivered
        delivered += 1

    async with network.nodes(options.transport, ids, SIM_LINK, options.seed) as transports:
        for transport in transports.values():
            transport.set_handler(on_packet)
        await asyncio.gather(*(transports[src].connect(dst) for src, dst in pairs))
        size = min(getattr(t, "max_packet_bytes", 1170) for t in transports.values())
        packet = bytes(size)
        refused = 0

        def send(index: int) -> bool:
            nonlocal refused
            src, dst = pairs[index % len(pairs)]
            if transports[src].send(dst, packet):
                return True
            refused += 1
            return False

        schedule = Schedule(PACKETS_PER_S * options.scale, options.duration_s)
        result = await drive_sync(schedule, send, tick=options.tick)
        offered = result.started
        settle_until = time.perf_counter() + SETTLE_MAX_S
        last, last_change = delivered, time.perf_counter()
        while delivered < offered - refused and time.perf_counter() < settle_until:
            await asyncio.sleep(0.05)
            if delivered != last:
                last, last_change = delivered, time.perf_counter()
            elif time.perf_counter() - last_change > SETTLE_IDLE_S:
                break
        node_loss = [t.metric_values().get("transport_packet_loss", 0.0) for t in transports.values()]
    loss = 100.0 * (offered - delivered) / offered if offered else float("nan")
    return Measurement(
        value=loss,
        duration_s=result.elapsed_s,
        offered_rate=schedule.rate_per_s,
        achieved_rate=result.achieved_rate,
        full_rate=PACKETS_PER_S,
        rate_unit="packets/s",
        detail=(
            f"{offered - delivered:,} of {offered:,} packets of {size} B not delivered over "
            f"{options.transport} ({len(pairs)} links among {NODES} nodes)"
        ),
        notes=(
            f"refused by full queues: {refused:,}; arrivals missed by the generator: {result.missed:,}",
            f"transport_packet_loss per node: max {100 * max(node_loss):.3f}%, mean {100 * sum(node_loss) / len(node_loss):.3f}%",
            f"achieved {result.achieved_rate * WIRE_BYTES * 8 / 1e6:,.0f} Mbit/s equivalent at {WIRE_BYTES} B per packet",
        ),
    )
