"""The batched UDP socket (udp_batch.py) on real sockets on 127.0.0.1, and QuicTransport over it.

What must hold: every datagram arrives once and in order, the protocol is never handed more than
`TURN_DATAGRAMS` per loop turn (other callbacks run between turns), a bad datagram in a batch costs
only itself, closing frees the port, and forged datagrams inside a live connection's bursts leave
the connection working.
"""

from __future__ import annotations

import asyncio
import errno
import socket

import pytest

from nyx.transport.backends import available, load_backend
from tests.quic_pacing import until

pytestmark = pytest.mark.skipif(not available("qh3"), reason="qh3 (quinn-udp) not installed")


class Recorder(asyncio.DatagramProtocol):
    """Records what it is handed, call by call, and how many other callbacks ran meanwhile."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.calls: list[list[bytes]] = []
        self.errors: list[Exception] = []
        self.ticks = 0  # call_soon callbacks that ran between two hand-overs
        self.ticks_seen: list[int] = []
        self.lost = asyncio.Event()

    def datagrams_received(self, datagrams: list[bytes], addr: tuple[str, int]) -> None:
        self.calls.append(datagrams)
        self.ticks_seen.append(self.ticks)
        self.loop.call_soon(self._tick)

    def _tick(self) -> None:
        self.ticks += 1

    def error_received(self, exc: Exception) -> None:
        self.errors.append(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set()

    @property
    def received(self) -> list[bytes]:
        return [data for call in self.calls for data in call]


class OneByOne(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: list[bytes] = []

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.append(data)


async def _open(protocol: asyncio.DatagramProtocol, port: int = 0):
    from nyx.transport.udp_batch import open_batched_udp

    loop = asyncio.get_running_loop()
    transport, _ = await open_batched_udp(loop, lambda: protocol, "127.0.0.1", port)
    return transport


def _numbered(count: int, size: int = 1200) -> list[bytes]:
    return [i.to_bytes(4, "big") * (size // 4) for i in range(count)]


async def test_a_burst_arrives_whole_in_order_and_in_bounded_turns():
    loop = asyncio.get_running_loop()
    sink = Recorder(loop)
    rx = await _open(sink)
    tx = await _open(Recorder(loop))
    try:
        # rounds of 120 datagrams (144 kB): they fit the kernel's default receive buffer (about
        # 150 such datagrams when net.core.rmem_max is left at its default), so none is dropped
        burst = _numbered(600)
        for start in range(0, len(burst), 120):
            before = len(sink.calls)
            round_ = burst[start : start + 120]
            tx.sendto_many(round_[:60], rx.get_extra_info("sockname"))  # two GSO sends, as a
            tx.sendto_many(round_[60:], rx.get_extra_info("sockname"))  # QUIC flush makes them
            assert await until(lambda: len(sink.received) >= start + 120)
            assert len(sink.calls) - before >= 2  # one batch read, handed over 64 at most a turn
        assert sink.received == burst  # each once, in the order sent
        # at most 64 a turn (about 4 ms of Sphinx work), other callbacks run between hand-overs
        assert max(len(call) for call in sink.calls) <= 64
        assert sink.ticks_seen[-1] >= len(burst) // 64 - 1
    finally:
        rx.close()
        tx.close()


async def test_a_protocol_without_the_batch_method_gets_one_call_a_datagram():
    loop = asyncio.get_running_loop()
    sink = OneByOne()
    rx = await _open(sink)
    tx = await _open(Recorder(loop))
    try:
        tx.sendto_many(_numbered(50), rx.get_extra_info("sockname"))
        tx.sendto(b"last", rx.get_extra_info("sockname"))
        assert await until(lambda: len(sink.received) >= 51)
        assert sink.received == [*_numbered(50), b"last"]
    finally:
        rx.close()
        tx.close()


async def test_a_datagram_the_kernel_refuses_costs_only_itself():
    loop = asyncio.get_running_loop()
    sink, sender = Recorder(loop), Recorder(loop)
    rx = await _open(sink)
    tx = await _open(sender)
    try:
        too_big = bytes(70_000)  # over the 65,507-byte UDP limit: EMSGSIZE
        tx.sendto_many([b"before"], rx.get_extra_info("sockname"))
        tx.sendto_many([too_big], rx.get_extra_info("sockname"))
        tx.sendto_many([b"after-1", b"after-2"], rx.get_extra_info("sockname"))
        assert await until(lambda: len(sink.received) >= 3)
        assert sink.received == [b"before", b"after-1", b"after-2"]
        assert [getattr(exc, "errno", None) for exc in sender.errors] == [errno.EMSGSIZE]
    finally:
        rx.close()
        tx.close()


async def test_a_taken_port_is_the_plain_bind_error_and_close_frees_the_port():
    loop = asyncio.get_running_loop()
    first = Recorder(loop)
    transport = await _open(first)
    port = transport.get_extra_info("sockname")[1]
    with pytest.raises(OSError) as refused:
        await _open(Recorder(loop), port)
    assert refused.value.errno == errno.EADDRINUSE
    transport.close()
    assert transport.is_closing()
    await asyncio.wait_for(first.lost.wait(), 5)
    again = await _open(Recorder(loop), port)  # quinn-udp's duplicate descriptor is closed too
    again.close()


async def test_sends_after_close_are_ignored_not_raised():
    loop = asyncio.get_running_loop()
    transport = await _open(Recorder(loop))
    address = transport.get_extra_info("sockname")
    transport.close()
    transport.sendto_many([b"late"], address)
    transport.sendto(b"late", address)


async def test_forged_datagrams_inside_a_live_connection_leave_it_working():
    """An attacker who saw a connection's IDs on the wire sprays datagrams carrying them (short
    header, a live DCID, garbage after it): they ride in the same receive batches as the real
    ones and must cost only themselves."""
    from nyx.transport.certs import NodeIdentity
    from nyx.transport.quic import QuicTransport

    got: list[bytes] = []
    a_id, b_id = NodeIdentity.generate("a"), NodeIdentity.generate("b")
    async with QuicTransport("a", a_id, backend="qh3") as a, QuicTransport("b", b_id, backend="qh3") as b:
        b.set_handler(lambda peer, packet: got.append(packet))
        a.add_peer("b", b.address)
        await a.connect("b")
        live_cids = list(b.endpoint.by_cid)
        assert live_cids
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as mallory:
            for i in range(400):
                cid = live_cids[i % len(live_cids)]
                mallory.sendto(b"\x40" + cid + bytes([i % 256]) * 1180, ("127.0.0.1", b.port))
                if i % 4 == 0:
                    a.send("b", i.to_bytes(4, "big"))
                if i % 50 == 49:
                    await asyncio.sleep(0.002)  # the loop reads: forged and real share its batches
        for i in range(100):
            await a.send_wait("b", b"after" + i.to_bytes(4, "big"))
        assert await until(lambda: sum(p.startswith(b"after") for p in got) == 100)


def test_qh3_backend_uses_the_batched_socket_and_aioquic_the_loops_own():
    assert load_backend("qh3").open_udp is not None
    assert load_backend("aioquic").open_udp is None
