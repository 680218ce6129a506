"""Transport micro records: datagrams/s through `QuicTransport` beside the raw backend.

For each backend (aioquic; qh3 when installed) and each event loop (asyncio; uvloop when
installed), two endpoints in this process exchange 1,024-byte packets over 127.0.0.1 for a fixed
window, and the receiver counts what arrived. The reference is the backend's own asyncio API
(`connect` / `serve` and `QuicConnectionProtocol`) driving the same DATAGRAM loop in the same
run: a sender that hands frames to the connection while its queue has room, transmits once per
burst and yields. Both ends share the one process (and core), so figures are lower than with two
processes; the ratio is what carries over.

qh3's core transmits DATAGRAM frames past its congestion window, so a raw sender overruns the
receiver's socket buffer and most frames are lost; the raw qh3 loop therefore gates on the core's
`bytes_in_flight` plus the bytes handed over since the last transmit being below its
`congestion_window`, exactly as `QuicTransport` does, or it would measure loss.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import ssl
import time
from collections.abc import Callable, Coroutine
from typing import Any

from nyx.bench.timing import MicroRecord
from nyx.transport.backends import available, load_backend
from nyx.transport.certs import NodeIdentity
from nyx.transport.quic import ALPN, QuicTransport

PACKET = bytes(1024)
BURST = 256
QUEUE = 1024


def _loops() -> list[tuple[str, Callable[[], asyncio.AbstractEventLoop] | None]]:
    loops: list[tuple[str, Callable[[], asyncio.AbstractEventLoop] | None]] = [("asyncio", None)]
    if importlib.util.find_spec("uvloop") is not None:
        import uvloop

        loops.append(("uvloop", uvloop.new_event_loop))
    return loops


def _run(factory: Callable[[], asyncio.AbstractEventLoop] | None, coro: Coroutine[Any, Any, float]) -> float:
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


async def _ours(backend: str, window_s: float, ids: tuple[NodeIdentity, NodeIdentity]) -> float:
    received = [0]

    def count(peer: str, packet: bytes) -> None:
        received[0] += 1

    async with QuicTransport("a", ids[0], backend=backend, queue_packets=QUEUE) as a, QuicTransport(
        "b", ids[1], backend=backend, queue_packets=QUEUE
    ) as b:
        b.set_handler(count)
        a.add_peer("b", b.address)
        await a.connect("b")
        stop = asyncio.Event()

        async def sender() -> None:
            while not stop.is_set():
                sent = 0
                while sent < BURST and a.send_if_room("b", PACKET):
                    sent += 1
                if sent < BURST:
                    await a.wait_writable("b")
                else:
                    await asyncio.sleep(0)

        return await _measure(sender, stop, received, window_s)


async def _measure(sender: Callable[[], Coroutine[Any, Any, None]], stop: asyncio.Event, received: list[int], window_s: float) -> float:
    """Run `sender` for a warm-up and then `window_s`; return datagrams/s received in the window."""
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(sender())
        await asyncio.sleep(min(0.2, window_s / 4))  # warm-up: congestion window opens
        start_count, start = received[0], time.perf_counter()
        await asyncio.sleep(window_s)
        rate = (received[0] - start_count) / (time.perf_counter() - start)
        stop.set()
        task.cancel()
    return rate


async def _raw(backend_name: str, window_s: float, ids: tuple[NodeIdentity, NodeIdentity]) -> float:
    backend = load_backend(backend_name)
    if backend_name == "qh3":
        from qh3.asyncio import QuicConnectionProtocol, connect, serve

        def room(quic: Any, handed_bytes: int) -> bool:
            core = quic._core
            return core is not None and core.bytes_in_flight + handed_bytes < core.congestion_window
    else:
        from aioquic.asyncio import QuicConnectionProtocol, connect, serve

        def room(quic: Any, handed_bytes: int) -> bool:
            return len(quic._datagrams_pending) < QUEUE

    events = backend.events
    received = [0]

    class Counting(QuicConnectionProtocol):  # type: ignore[misc, valid-type]
        def quic_event_received(self, event: Any) -> None:
            if type(event) is events.DatagramFrameReceived:
                received[0] += 1

    def config(is_client: bool) -> Any:
        cfg = backend.configuration_class(
            alpn_protocols=[ALPN], is_client=is_client, max_datagram_frame_size=65535, max_datagram_size=1200
        )
        if is_client:
            cfg.verify_mode = ssl.CERT_REQUIRED
            cfg.cadata = ids[1].certificate_pem
            cfg.server_name = "b"
        else:
            cfg.certificate = backend.load_certificate(ids[1].certificate_pem)
            cfg.private_key = backend.load_private_key(ids[1].private_key_pem)
        return cfg

    server = await serve("127.0.0.1", 0, configuration=config(False), create_protocol=Counting)
    port = server._transport.get_extra_info("sockname")[1]
    try:
        async with connect("127.0.0.1", port, configuration=config(True)) as client:
            quic = client._quic
            stop = asyncio.Event()

            async def sender() -> None:
                while not stop.is_set():
                    sent = 0
                    while sent < BURST and room(quic, sent * (len(PACKET) + 30)):
                        quic.send_datagram_frame(PACKET)
                        sent += 1
                    client.transmit()
                    await asyncio.sleep(0)

            return await _measure(sender, stop, received, window_s)
    finally:
        server.close()


def records(budget_s: float) -> list[MicroRecord]:
    """Datagrams/s through QuicTransport per backend and loop, each beside the raw backend."""
    window_s = max(0.5, min(2.0, budget_s * 3))
    ids = (NodeIdentity.generate("a"), NodeIdentity.generate("b"))
    out: list[MicroRecord] = []
    backends = ["aioquic"] + (["qh3"] if available("qh3") else [])
    quic_log = logging.getLogger("quic")  # qh3 logs every peer close at WARNING
    level = quic_log.level
    quic_log.setLevel(logging.ERROR)
    try:
        for backend in backends:
            for loop_name, factory in _loops():
                raw = _run(factory, _raw(backend, window_s, ids))
                ours = _run(factory, _ours(backend, window_s, ids))
                out.append(
                    MicroRecord(
                        f"QuicTransport {backend} {loop_name} (datagrams/s)",
                        ours,
                        f"raw {backend} datagram loop, {loop_name}",
                        raw,
                    )
                )
    finally:
        quic_log.setLevel(level)
    return out
