"""A UDP datagram transport that moves bursts per system call, in bounded turns.

Why: on a loaded mix node one `recvfrom` and one `sendto` per datagram, each a trip through the
kernel's network stack, cost about as much as the QUIC work on the datagram itself (docs/transport.md,
"A node's forwarding rate"). qh3 ships quinn-udp's socket wrapper (`qh3._hazmat.UdpSocketState`):
`recv()` is one `recvmmsg` with UDP GRO (up to 32 messages, each up to 64 coalesced datagrams),
`send(datagrams, addr)` is one `sendmsg` with UDP GSO for a run of equal-sized datagrams. We use
the wrapper, not qh3's own asyncio transport, for one reason: that transport reads up to 32 such
batches in one callback and hands them over at once (a loaded node was seen holding the loop for
600 ms on 6,900 datagrams, starving every timer: mixing delays, QUIC's ACKs, keepalives). Here one
loop turn reads at most one batch and hands the protocol at most `TURN_DATAGRAMS` of it; the rest
waits in memory for the next turns, so timers and transmits run between them.

The protocol receives `datagrams_received(list_of_bytes, addr)` for each run of consecutive
datagrams from one address (and `datagram_received` if it has no batch method); `sendto_many`
sends a list to one address in one call. Nothing here parses a datagram.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import socket
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

TURN_DATAGRAMS = 64
"""Datagrams handed to the protocol per loop turn: about 4 ms of Sphinx work on a mix node."""

MAX_QUEUED = 4096
"""Datagrams held for a full socket send buffer; more are dropped and reported, as the kernel
would drop them (QUIC recovers what it must)."""

_GSO_REFUSED = frozenset({errno.EIO, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOPROTOOPT})
"""What `sendmsg` with UDP_SEGMENT returns where the kernel or the device refuses GSO."""


def address_runs(pairs: Iterable[tuple[bytes, Any]]) -> Iterator[tuple[Any, list[bytes]]]:
    """Consecutive (datagram, address) pairs grouped by address, in order: what one `sendmsg`
    sends, or one protocol call receives."""
    run: list[bytes] = []
    addr: Any = None
    for data, to in pairs:
        if run and to != addr:
            yield addr, run
            run = []
        addr = to
        run.append(data)
    if run:
        yield addr, run


class BatchedUdpTransport(asyncio.DatagramTransport):
    """A bound non-blocking UDP socket driven through quinn-udp's batched system calls."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, sock: socket.socket, protocol: asyncio.DatagramProtocol, state: Any
    ) -> None:
        super().__init__()
        self._loop = loop
        self._sock = sock
        self._fd = sock.fileno()
        self._protocol = protocol
        self._state: Any = state
        self._batched = hasattr(protocol, "datagrams_received")
        self._backlog: list[tuple[bytes, Any]] = []
        self._next = 0
        self._queue: deque[tuple[bytes, Any]] = deque()
        self._writing = False
        self._closing = False
        self._extra = {"socket": sock, "sockname": sock.getsockname(), "peername": None}
        loop.add_reader(self._fd, self._on_readable)
        loop.call_soon(protocol.connection_made, self)

    # -- asyncio.BaseTransport ------------------------------------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._extra.get(name, default)

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        """Stop reading, try once more to send what is queued, release the socket."""
        if self._closing:
            return
        self._closing = True
        self._loop.remove_reader(self._fd)
        if self._queue:
            self._flush_queue()
        self._finish()

    def abort(self) -> None:
        self._queue.clear()
        self.close()

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol  # type: ignore[assignment]
        self._batched = hasattr(protocol, "datagrams_received")

    def _finish(self) -> None:
        if self._writing:
            self._loop.remove_writer(self._fd)
            self._writing = False
        self._queue.clear()
        self._backlog = []
        self._state = None  # quinn-udp holds a duplicate of the descriptor: the port is free only
        self._sock.close()  # once both are closed
        self._loop.call_soon(self._protocol.connection_lost, None)

    # -- receiving ----------------------------------------------------------------------------

    def _on_readable(self) -> None:
        if self._closing or self._next < len(self._backlog):
            return  # the backlog of the last batch is still being handed over, turn by turn
        try:
            received = self._state.recv()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._protocol.error_received(exc)
            return
        if received:
            self._backlog, self._next = received, 0
            self._hand_over()

    def _hand_over(self) -> None:
        """Give the protocol the next `TURN_DATAGRAMS` of the backlog; schedule the rest."""
        backlog, start = self._backlog, self._next
        end = min(start + TURN_DATAGRAMS, len(backlog))
        self._next = end
        protocol = self._protocol
        for addr, run in address_runs(backlog[start:end]):
            if self._closing:
                break
            if self._batched:
                protocol.datagrams_received(run, addr)  # type: ignore[attr-defined]
            else:
                for data in run:
                    protocol.datagram_received(data, addr)
        if end < len(backlog) and not self._closing:
            self._loop.call_soon(self._hand_over)
        else:
            self._backlog, self._next = [], 0

    # -- sending ------------------------------------------------------------------------------

    def sendto(self, data: bytes, addr: Any = None) -> None:  # type: ignore[override]
        self.sendto_many([data], addr)

    def sendto_many(self, datagrams: list[bytes], addr: Any) -> None:
        """Send `datagrams` to `addr`, as few system calls as the kernel allows (GSO)."""
        if self._closing or not datagrams:
            return
        if self._queue:  # keep order behind what is already waiting
            self._enqueue(datagrams, addr)
            return
        sent = self._send(datagrams, addr)
        if sent < len(datagrams):
            self._enqueue(datagrams[sent:], addr)

    def _send(self, datagrams: list[bytes], addr: Any) -> int:
        """Send as much as the socket takes now; returns how many are done: sent, or dropped on an
        error, which is reported. Stops at a full send buffer."""
        done = 0
        while done < len(datagrams):
            try:
                return done + self._state.send(datagrams[done:] if done else datagrams, addr)
            except (BlockingIOError, InterruptedError) as exc:
                return done + getattr(exc, "datagrams_sent", 0)
            except OSError as exc:
                done += getattr(exc, "datagrams_sent", 0)
                if exc.errno in _GSO_REFUSED and self._state.max_gso_segments > 1:
                    self._state.disable_gso()  # then the same datagrams again, one by one
                    continue
                self._protocol.error_received(exc)
                done += 1  # the datagram the kernel refused (too big, no route...) is lost
        return done

    def _enqueue(self, datagrams: list[bytes], addr: Any) -> None:
        room = MAX_QUEUED - len(self._queue)
        if len(datagrams) > room:
            self._protocol.error_received(OSError(errno.ENOBUFS, "UDP send queue full; datagrams dropped"))
            datagrams = datagrams[:room]
        self._queue.extend((data, addr) for data in datagrams)
        if not self._writing and self._queue:
            self._writing = True
            self._loop.add_writer(self._fd, self._on_writable)

    def _on_writable(self) -> None:
        self._flush_queue()
        if not self._queue and self._writing:
            self._writing = False
            self._loop.remove_writer(self._fd)

    def _flush_queue(self) -> None:
        queue = self._queue
        while queue:
            addr, run = next(address_runs(list(itertools.islice(queue, TURN_DATAGRAMS))))
            sent = self._send(run, addr)
            for _ in range(sent):
                queue.popleft()
            if sent < len(run):
                return  # the socket is full again


async def open_batched_udp(
    loop: asyncio.AbstractEventLoop, factory: Any, host: str, port: int
) -> tuple[asyncio.DatagramTransport, Any]:
    """Bind `host:port` and drive it with `BatchedUdpTransport`, or with the loop's own datagram
    transport where quinn-udp has no batched calls (outside Unix). A bind error is the plain
    OSError the node reports (EADDRINUSE, EACCES, EADDRNOTAVAIL)."""
    from qh3._hazmat import UdpSocketState

    family, _, proto, _, sockaddr = (await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM))[0]
    sock = socket.socket(family, socket.SOCK_DGRAM, proto)
    try:
        sock.bind(sockaddr)
        sock.setblocking(False)
        try:
            state = UdpSocketState(sock.fileno())
        except NotImplementedError:
            return await loop.create_datagram_endpoint(factory, sock=sock)
    except BaseException:
        sock.close()
        raise
    protocol = factory()
    return BatchedUdpTransport(loop, sock, protocol, state), protocol
