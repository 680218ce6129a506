"""Sending a burst over QuicTransport in a test or benchmark whose two ends share one process,
without the kernel dropping what a capped receive buffer cannot hold."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

from nyx.transport.quic import QuicTransport


async def until(predicate: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    """Whether `predicate` became true within `timeout_s`, polled every 5 ms."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.005)
    return True


def burst_window(receiver: QuicTransport) -> int | None:
    """How many 1,000-byte packets a test may send before waiting for them to arrive: None (no
    limit) when the receiver's socket got the buffer it asked for; else what its capped buffer
    holds at 4 kB each (a 1,000-byte datagram costs the kernel about 2 kB; the rest leaves room
    for the connection's other packets). Both ends share one event loop here, so a whole
    congestion window lands in the receiver's socket before it reads any: on a machine whose
    kernel keeps `net.core.rmem_max` at its default and that may not force it (not root), those
    bursts would be dropped by the kernel, which is not what these tests examine (sockbuf.py warns
    an operator of it; test_transport_sockbuf.py tests that)."""
    buffers = receiver.endpoint.socket_buffers
    assert buffers is not None
    return max(16, buffers.receive // 4096) if buffers.capped else None


async def send_all(
    sender: QuicTransport, peer: str, packets: Iterable[bytes], arrived: Callable[[], int], window: int | None
) -> None:
    """`send_wait` each packet; with a `window`, wait for each window's packets to arrive first."""
    for count, packet in enumerate(packets, start=1):
        await sender.send_wait(peer, packet)
        if window is not None and count % window == 0:
            assert await until(lambda: arrived() >= count)
