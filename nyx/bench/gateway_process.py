"""Handshake gateways in processes of their own, for replays that read a gateway's CPU from the OS.

A gateway process holds the static keys of one stream node, answers the real 1-RTT handshake
(`nyx.stream.handshake.Responder`) over a loopback TCP connection, and samples its own CPU time
(`time.process_time`, the kernel's per-process clock: user + system, every thread) every
`window_s`. When the client closes the connection it sends its samples back and exits. The client
side (`GatewayLink`) multiplexes any number of handshakes over that one connection.

Wire (both ways): kind u8 | request id u32 | length u32 | body. Client to gateway: INIT (an Init
message) and FINISH (a Finish message for the same request id). Gateway to client: OK with the
Accept, or with b"" after a Finish checked out; REFUSED with the close code (u16) otherwise.

Processes start from a forkserver that has imported the handshake modules once, so thirty
gateways start in a fraction of a second instead of thirty interpreter start-ups.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.connection
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from nyx.crypto.suites import Suite
from nyx.stream.handshake import HandshakeError, InitReplayCache, PendingSession, Responder

INIT, FINISH, OK, REFUSED = 1, 2, 3, 4
_HEAD = struct.Struct(">BII")
SUITES = (Suite.HYBRID, Suite.CLASSIC)
_PRELOAD = ["nyx.stream.handshake", "nyx.crypto.xwing", "nyx.bench.gateway_process"]

# (perf_counter, process_time) pairs: perf_counter is CLOCK_MONOTONIC on Linux, shared by every
# process of the machine, so the parent can cut a child's samples to its own load window.
CpuSamples = list[tuple[float, float]]


@dataclass(frozen=True, slots=True)
class GatewayInfo:
    """What a started gateway process tells its parent: where it listens and its public keys."""

    pid: int
    port: int
    public_keys: dict[Suite, bytes]


def _gateway_main(conn: multiprocessing.connection.Connection, window_s: float) -> None:
    """The child: serve handshakes on one loopback connection, then report CPU samples."""
    asyncio.run(_serve(conn, window_s))


async def _serve(conn: multiprocessing.connection.Connection, window_s: float) -> None:
    import os

    keys = {suite: suite.kem().generate() for suite in SUITES}
    responder = Responder({s: k[0] for s, k in keys.items()}, replay_cache=InitReplayCache(capacity=1 << 18))
    samples: CpuSamples = [(time.perf_counter(), time.process_time())]
    closed = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        pending: dict[int, PendingSession] = {}
        try:
            while True:
                kind, request, length = _HEAD.unpack(await reader.readexactly(_HEAD.size))
                body = await reader.readexactly(length)
                writer.write(_answer(responder, pending, kind, request, body))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            closed.set()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    conn.send(GatewayInfo(os.getpid(), port, {s: k[1] for s, k in keys.items()}))
    async with server:
        sampler = asyncio.create_task(_sample(samples, window_s))
        try:
            await closed.wait()
        finally:
            sampler.cancel()
    samples.append((time.perf_counter(), time.process_time()))
    conn.send(samples)
    conn.close()


def _answer(responder: Responder, pending: dict[int, PendingSession], kind: int, request: int, body: bytes) -> bytes:
    try:
        if kind == INIT:
            accept, pending[request] = responder.respond(body, time.time())
            return _HEAD.pack(OK, request, len(accept)) + accept
        session = pending.pop(request, None)
        if kind != FINISH or session is None:
            return _HEAD.pack(REFUSED, request, 2) + (1).to_bytes(2, "big")
        session.finish(body)
        return _HEAD.pack(OK, request, 0)
    except HandshakeError as error:
        return _HEAD.pack(REFUSED, request, 2) + int(error.code).to_bytes(2, "big")


async def _sample(samples: CpuSamples, window_s: float) -> None:
    while True:
        await asyncio.sleep(window_s)
        samples.append((time.perf_counter(), time.process_time()))


def window_percents(samples: CpuSamples, start: float, end: float) -> list[float]:
    """CPU per sampling interval inside [start, end], in % of one core (intervals measured, so a
    late sampler lengthens an interval instead of inflating it)."""
    out = []
    for (t0, c0), (t1, c1) in zip(samples, samples[1:]):
        if t0 >= start and t1 <= end and t1 > t0:
            out.append(100.0 * (c1 - c0) / (t1 - t0))
    return out


class GatewayLink:
    """The client's end of one gateway's connection: handshake messages out, answers matched
    back by request id (the gateway answers in order, but ids keep it honest)."""

    def __init__(self, info: GatewayInfo, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.info = info
        self._reader, self._writer = reader, writer
        self._waiting: dict[int, asyncio.Future[tuple[int, bytes]]] = {}
        self._next = 0

    @classmethod
    async def open(cls, info: GatewayInfo) -> GatewayLink:
        reader, writer = await asyncio.open_connection("127.0.0.1", info.port)
        return cls(info, reader, writer)

    async def request(self, kind: int, body: bytes, request: int | None = None) -> tuple[int, int, bytes]:
        """Send one message; (request id, OK or REFUSED, answer body)."""
        if request is None:
            request = self._next = self._next + 1
        future = asyncio.get_running_loop().create_future()
        self._waiting[request] = future
        self._writer.write(_HEAD.pack(kind, request, len(body)) + body)
        status, answer = await future
        return request, status, answer

    async def read_answers(self) -> None:
        """Run for the link's life: resolve each waiting request as its answer arrives."""
        try:
            while True:
                status, request, length = _HEAD.unpack(await self._reader.readexactly(_HEAD.size))
                body = await self._reader.readexactly(length)
                future = self._waiting.pop(request, None)
                if future is not None and not future.done():
                    future.set_result((status, body))
        except (asyncio.IncompleteReadError, ConnectionError) as error:
            for future in self._waiting.values():
                if not future.done():
                    future.set_exception(ConnectionError(f"gateway {self.info.pid} closed: {error}"))

    async def close(self) -> None:
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except ConnectionError:
            pass


@contextmanager
def gateway_processes(count: int, window_s: float) -> Iterator[list[tuple[multiprocessing.Process, multiprocessing.connection.Connection]]]:
    """Start `count` gateway processes; always stop them on the way out."""
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    if method == "forkserver":
        context.set_forkserver_preload(_PRELOAD)
    started: list[tuple[multiprocessing.Process, multiprocessing.connection.Connection]] = []
    try:
        for _ in range(count):
            parent, child = context.Pipe()
            process = context.Process(target=_gateway_main, args=(child, window_s), daemon=True)
            process.start()
            child.close()
            started.append((process, parent))
        yield started
    finally:
        for process, parent in started:
            parent.close()
            process.join(timeout=2.0)
            if process.is_alive():
                process.kill()
                process.join(timeout=2.0)
