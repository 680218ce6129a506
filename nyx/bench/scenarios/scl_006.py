"""SCL-006 Transport帯域飽和: 1 Gbps equivalent through 20 transport nodes, MTU 1280; loss < 0.5%.

At 1,280 bytes per packet on the wire, 1 Gbps is 97,656 packets/s. Twenty nodes (the real
`SimTransport` on a `SimNetwork`, or `QuicTransport` on 127.0.0.1 with `--transport quic`) each
send to three others (60 directed links, connected before the load starts), packets of the
largest size one datagram carries (1,170 bytes: a 1,200-byte UDP payload on a 1,280-byte MTU
path). Packets are offered open-loop through `Transport.send`, which never blocks: a transport
that cannot take a packet refuses it (backpressure, counted), and one that accepts it owes its
delivery. When the generator falls behind the asked rate it sends as fast as it can, so a run
that cannot reach 1 Gbps shows the most this machine pushes, and its verdict is INCONCLUSIVE.

The value is the loss among accepted packets: accepted minus delivered to the receivers'
handlers, over accepted, in percent, after in-flight packets have landed (nothing more arrives
for 0.5 s, or 10 s passed). Over QUIC that counts datagrams lost in the kernel's buffers or
dropped inside the transport after it said yes. Refused sends are reported beside it, with the
delivered goodput as a share of 1 Gbps.

In the simulation the links are saturated for real: each of the 60 links runs at
`LINK_CAPACITY_SHARE` (80%) of the load offered on it, with a 256 KiB queue (scaled with
`--scale`, so it always holds the same time's worth of traffic), so a fifth of what is offered cannot get through and the verdict depends on what the
transport does at a full queue (refuse the packet: no loss; accept and drop it: loss).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time

from nyx.bench import network
from nyx.bench.loadgen import Schedule, drive_sync
from nyx.bench.report import Measurement
from nyx.bench.scenarios import RunOptions
from nyx.transport import LinkProfile
from nyx.transport.sim import DEFAULT_MAX_PACKET_BYTES

WIRE_BYTES = 1280
PACKETS_PER_S = 1e9 / 8 / WIRE_BYTES
NODES = 20
FAN_OUT = (1, 2, 5)  # node s sends to s+1, s+2, s+5 (mod 20)
LINK_CAPACITY_SHARE = 0.8  # sim: each link's capacity as a share of the load offered on it
SIM_LINK = LinkProfile(latency_s=0.001)  # bandwidth set per run from the offered load
SETTLE_IDLE_S = 0.5  # in-flight packets have landed once nothing arrived for this long
SETTLE_MAX_S = 10.0
DEFAULT_DURATION_S = 10.0
QUICK = (3.0, 1.0)


async def replay(options: RunOptions) -> Measurement:
    ids = [f"tr-{n:02d}" for n in range(NODES)]
    pairs = [(ids[s], ids[(s + step) % NODES]) for step in FAN_OUT for s in range(NODES)]
    delivered = 0

    last_delivery = 0.0

    def on_packet(peer: str, packet: bytes) -> None:
        nonlocal delivered, last_delivery
        delivered += 1
        last_delivery = time.perf_counter()

    rate = PACKETS_PER_S * options.scale
    # The simulated wire serialises the packet's own bytes (1,170), not the 1,280 of the MTU.
    link_bps = LINK_CAPACITY_SHARE * rate / len(pairs) * DEFAULT_MAX_PACKET_BYTES * 8
    # The queue scales with the load too, so it holds the same time's worth of traffic (0.7 s of
    # excess at 256 KiB and scale 1) and a brief run at a small scale still saturates.
    queue_bytes = max(2 * DEFAULT_MAX_PACKET_BYTES, int(SIM_LINK.queue_bytes * options.scale))
    profile = dataclasses.replace(SIM_LINK, bandwidth_bps=link_bps, queue_bytes=queue_bytes)
    async with network.nodes(options.transport, ids, profile, options.seed) as transports:
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

        schedule = Schedule(rate, options.duration_s)
        load_start = time.perf_counter()
        result = await drive_sync(schedule, send, tick=options.tick)
        offered = result.started
        accepted = offered - refused
        settle_until = time.perf_counter() + SETTLE_MAX_S
        last, last_change = delivered, time.perf_counter()
        while delivered < accepted and time.perf_counter() < settle_until:
            await asyncio.sleep(0.05)
            if delivered != last:
                last, last_change = delivered, time.perf_counter()
            elif time.perf_counter() - last_change > SETTLE_IDLE_S:
                break
        node_loss = [t.metric_values().get("transport_packet_loss", 0.0) for t in transports.values()]
    loss = 100.0 * (accepted - delivered) / accepted if accepted else float("nan")
    delivering_s = max(last_delivery - load_start, result.elapsed_s)  # queues drain after the load
    goodput_bps = delivered * WIRE_BYTES * 8 / delivering_s
    links = f"{len(pairs)} links among {NODES} nodes"
    if options.transport == "sim":
        links += f", each {link_bps / 1e6:,.1f} Mbit/s = {LINK_CAPACITY_SHARE:.0%} of its offered load"
    return Measurement(
        value=loss,
        duration_s=result.elapsed_s,
        offered_rate=schedule.rate_per_s,
        achieved_rate=result.achieved_rate,
        full_rate=PACKETS_PER_S,
        rate_unit="packets/s",
        detail=f"{accepted - delivered:,} of {accepted:,} accepted packets of {size} B not delivered over {options.transport} ({links})",
        notes=(
            f"refused by full queues (backpressure, not loss): {refused:,} of {offered:,} offered; "
            f"arrivals missed by the generator: {result.missed:,}",
            f"delivered {goodput_bps / 1e6:,.0f} Mbit/s equivalent at {WIRE_BYTES} B per packet over "
            f"{delivering_s:.2f} s: {goodput_bps / 1e7:.1f}% of 1 Gbps",
            f"transport_packet_loss per node: max {100 * max(node_loss):.3f}%, mean {100 * sum(node_loss) / len(node_loss):.3f}%",
        ),
        counts={"offered": offered, "refused": refused, "accepted": accepted, "delivered": delivered, "missed": result.missed},
    )
