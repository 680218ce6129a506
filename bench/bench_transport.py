"""pytest-benchmark: packets through QuicTransport (each backend) and SimTransport.

In CI these run once as plain tests (benchmarks disabled); `python -m pytest bench
--benchmark-enable -k transport` times them. The reference for QUIC figures is the raw backend
loop in `python -m nyx.bench micro --only transport`. Where the kernel caps the receiver's socket
buffer (tests/quic_pacing.py) the QUIC rounds send in windows, and time that.
"""

from __future__ import annotations

import asyncio

import pytest

from nyx.transport import LinkProfile, SimNetwork
from nyx.transport.backends import available
from nyx.transport.certs import NodeIdentity
from nyx.transport.quic import QuicTransport
from tests.quic_pacing import burst_window, send_all

PACKETS = 2000
PACKET = bytes(1024)
IDS = (NodeIdentity.generate("a"), NodeIdentity.generate("b"))


async def _quic_round(backend: str) -> int:
    got = [0]
    async with QuicTransport("a", IDS[0], backend=backend) as a, QuicTransport("b", IDS[1], backend=backend) as b:
        b.set_handler(lambda peer, packet: got.__setitem__(0, got[0] + 1))
        a.add_peer("b", b.address)
        await a.connect("b")
        await send_all(a, "b", (PACKET for _ in range(PACKETS)), lambda: got[0], burst_window(b))
        async with asyncio.timeout(10):
            while got[0] < PACKETS:
                await asyncio.sleep(0.002)
    return got[0]


@pytest.mark.parametrize(
    "backend",
    ["aioquic", pytest.param("qh3", marks=pytest.mark.skipif(not available("qh3"), reason="qh3 not installed"))],
)
def test_bench_quic_transport_2000_packets(benchmark, backend):
    assert benchmark.pedantic(lambda: asyncio.run(_quic_round(backend)), rounds=3, iterations=1) == PACKETS


async def _sim_round() -> int:
    net = SimNetwork(LinkProfile(latency_s=0.0), seed=0)
    a, b = net.transport("a"), net.transport("b")
    await a.listen(), await b.listen()
    got = [0]
    b.set_handler(lambda peer, packet: got.__setitem__(0, got[0] + 1))
    for _ in range(PACKETS):
        a.send("b", PACKET)
    while net.in_flight():
        await asyncio.sleep(0)
    await net.close()
    return got[0]


def test_bench_sim_transport_2000_packets(benchmark):
    assert benchmark(lambda: asyncio.run(_sim_round())) == PACKETS
