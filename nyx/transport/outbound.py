"""An outbound link: this node's sending side towards one peer (the asyncio shell of a supervisor).

Sending to a directory peer goes only over its outbound link, authenticated by pinning the peer's
certificate fingerprint from the directory (peers in no directory are sent to on the connection
they opened: endpoint.py, with the same bound as here). A link holds a bounded `SendQueue` while
it is connecting and hands packets to its connection's DATAGRAM queue only as far as the
backend's window allows (aioquic's queue is unbounded, qh3's core sends past its congestion
window), so every queue is bounded: overflow is a counted drop, and `wait_writable` turns it
into backpressure.

When to connect, ping, give up and retry is decided by the link's `LinkSupervisor`; `run` is
the task that carries out its decisions and sleeps until its next deadline or the next event.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from nyx.transport.backends import Backend
from nyx.transport.base import LinkStats, PeerAddress, PeerId, TransportClosedError
from nyx.transport.driver import ConnectFailedError, ConnectionDriver
from nyx.transport.queues import SendQueue
from nyx.transport.supervisor import AbandonConnect, CloseIdle, ClosePeerSilent, Connect, LinkSupervisor, Ping

log = logging.getLogger("nyx.transport.quic")

DATAGRAM_OVERHEAD_BYTES = 30  # frame type, length, short header, AEAD tag: bytes on the wire


class LinkOwner(Protocol):
    """What a link needs from its transport."""

    node_id: PeerId
    backend: Backend
    silent_peers: int

    def open_connection(self, link: OutboundLink) -> ConnectionDriver: ...
    def mark_dirty(self, driver: ConnectionDriver) -> None: ...


class OutboundLink:
    """This node's sending side towards one peer."""

    def __init__(
        self,
        peer: PeerId,
        address: PeerAddress,
        queue_packets: int,
        supervisor: LinkSupervisor,
        owner: LinkOwner,
        clock: Callable[[], float],
    ) -> None:
        self.peer = peer
        self.address = address
        self.queue = SendQueue(queue_packets)
        self.queue_packets = queue_packets
        self.stats = LinkStats()
        self.supervisor = supervisor
        self.owner = owner
        self.clock = clock
        self.conn: ConnectionDriver | None = None  # the live connection, once its handshake completed
        self.attempt: ConnectionDriver | None = None  # the connection being set up
        self.waiters: list[asyncio.Future[None]] = []
        self.room = asyncio.Event()
        self.wake = asyncio.Event()
        self.handed_bytes = 0  # handed to the backend since its last transmit
        self.task: asyncio.Task[None] | None = None  # `run`, in the transport's task group
        self._ping_uid = 0

    # -- sending (the hot path) --------------------------------------------------------------

    def offer(self, packet: bytes) -> bool:
        """Hand `packet` to the live connection, or queue it; False if the queue is full."""
        conn = self.conn
        if conn is not None and not len(self.queue) and self._window_open(conn):
            try:
                conn.quic.send_datagram_frame(packet)
            except Exception:  # qh3 refuses a connection the peer closed before we saw it end:
                conn = None    # queue the packet instead; the supervisor reconnects
            else:
                self.handed_bytes += len(packet) + DATAGRAM_OVERHEAD_BYTES
                stats = self.stats
                stats.sent += 1
                stats.bytes_sent += len(packet)
                self.owner.mark_dirty(conn)
                return True
        if not self.queue.has_room:
            return False
        self.queue.offer(packet)
        if conn is None:
            self.want()
        else:
            self.owner.mark_dirty(conn)
        return True

    def _window_open(self, conn: ConnectionDriver) -> bool:
        return self.owner.backend.window_open(conn.quic, self.handed_bytes, self.queue_packets)

    def _move_queue(self, conn: ConnectionDriver) -> None:
        """Hand queued packets to the backend as far as its window allows; none to a connection
        we are closing (qh3 raises on a DATAGRAM after close: a node stopping with packets still
        queued would fail its shutdown)."""
        if conn.closing or conn.ended:
            return
        queue, stats, quic = self.queue, self.stats, conn.quic
        while len(queue) and self._window_open(conn):
            packet = queue.pop()
            quic.send_datagram_frame(packet)
            self.handed_bytes += len(packet) + DATAGRAM_OVERHEAD_BYTES
            stats.sent += 1
            stats.bytes_sent += len(packet)

    def before_transmit(self, conn: ConnectionDriver) -> None:
        if len(self.queue):
            self._move_queue(conn)

    def after_transmit(self, conn: ConnectionDriver) -> None:
        self.handed_bytes = 0
        if len(self.queue):
            self._move_queue(conn)  # the window may have opened; sent next turn
            if len(self.queue) < self.queue.capacity:
                self.room.set()
        else:
            self.room.set()

    async def wait_writable(self) -> None:
        while not self.queue.has_room:
            self.room.clear()
            await self.room.wait()

    def pending(self) -> bool:
        """Whether packets are still waiting here or (where visible) in the backend's queue."""
        if len(self.queue):
            return True
        conn = self.conn
        return conn is not None and bool(self.owner.backend.pending_datagrams(conn.quic))  # qh3: None

    # -- what the connection reports ---------------------------------------------------------

    def want(self) -> None:
        self.supervisor.want()
        self.wake.set()

    def connected(self, driver: ConnectionDriver) -> None:
        if driver is not self.attempt:
            return
        self.attempt = None
        self.conn = driver
        self.stats.connects += 1
        self.supervisor.handshake_completed(self.clock())
        self.owner.mark_dirty(driver)
        self.wake.set()  # `run` tells the waiters, a loop turn later (see there)

    def ended(self, driver: ConnectionDriver) -> None:
        now = self.clock()
        if driver is self.attempt:
            self.attempt = None
            delay = self.supervisor.connect_failed(now)
            log.info("%s: link to %s failed (%s); retry in %.2f s", self.owner.node_id, self.peer, driver.failure, delay)
            self._resolve_waiters(driver.failure or ConnectFailedError(f"{self.peer}: closed"))
        elif driver is self.conn:
            self.conn = None
            delay = self.supervisor.connection_ended(now, queued=bool(len(self.queue)))
            if delay is not None:
                log.info(
                    "%s: link to %s closed (%s); reconnect in %.2f s",
                    self.owner.node_id, self.peer, driver.close_reason or "no reason", delay,
                )
        self.wake.set()

    def _resolve_waiters(self, exc: BaseException | None) -> None:
        for waiter in self.waiters:
            if not waiter.done():
                if exc is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(exc)
        self.waiters.clear()

    def fail_waiters(self, node_id: PeerId) -> None:
        self._resolve_waiters(TransportClosedError(f"{node_id}: transport closed"))

    # -- the supervising task ----------------------------------------------------------------

    async def run(self) -> None:
        """Carry out the supervisor's decisions until cancelled (by the transport's close)."""
        supervisor = self.supervisor
        while True:
            self.wake.clear()
            now = self.clock()
            conn = self.conn
            if conn is not None:
                rtt = self.owner.backend.smoothed_rtt(conn.quic)
                if rtt is not None:
                    self.stats.rtt_s = rtt
            while True:
                conn = self.conn
                decision = supervisor.poll(
                    now,
                    packets_sent=self.stats.sent,
                    last_sent=conn.last_sent if conn is not None else 0.0,
                    last_received=conn.last_received if conn is not None else 0.0,
                )
                if decision is None:
                    break
                self._carry_out(decision, now)
            if self.conn is not None and self.waiters and self.conn.confirmed:
                # `connect` returns once the handshake is confirmed, not on the datagram that
                # completed it: callers that connect and close at once (scl_035) must hold the
                # session ticket the server sends in its next flight.
                self._resolve_waiters(None)
            deadline = supervisor.next_deadline()
            if deadline is None:
                await self.wake.wait()
                continue
            try:
                async with asyncio.timeout(max(0.0, deadline - self.clock())):
                    await self.wake.wait()
            except TimeoutError:
                pass

    def _carry_out(self, decision: object, now: float) -> None:
        if isinstance(decision, Connect):
            self.attempt = self.owner.open_connection(self)
        elif isinstance(decision, Ping):
            assert self.conn is not None
            self._ping_uid += 1
            self.conn.ping(self._ping_uid)
        elif isinstance(decision, CloseIdle):
            assert self.conn is not None
            self.conn.close("idle")
        elif isinstance(decision, ClosePeerSilent):
            conn, self.conn = self.conn, None
            self.owner.silent_peers += 1
            if conn is not None:
                conn.close("peer silent")
                conn.end(f"no packet from {self.peer} for {decision.silent_s:.1f} s")
            log.info("%s: %s silent for %.1f s; reconnect in %.2f s", self.owner.node_id, self.peer,
                     decision.silent_s, decision.retry_in_s)
        elif isinstance(decision, AbandonConnect):
            attempt, self.attempt = self.attempt, None
            if attempt is not None:
                attempt.close("handshake timeout")
                attempt.end("handshake timeout")
            error = ConnectFailedError(
                f"{self.owner.node_id}: no handshake with {self.peer} at {self.address.host}:{self.address.port} "
                f"within {decision.waited_s:.1f} s"
            )
            log.info("%s: link to %s failed (%s); retry in %.2f s", self.owner.node_id, self.peer, error,
                     decision.retry_in_s)
            self._resolve_waiters(error)
