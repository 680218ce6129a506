"""The UDP endpoint: one socket per node, datagrams routed to connections by connection ID.

Every UDP datagram is routed by its Destination Connection ID (wire.py) to a `ConnectionDriver`:
ones this node opened to peers (outbound links) and ones peers opened to it (inbound), as
aioquic's server does. A long-header Initial with an unknown DCID may start an inbound
connection, as the admission policy (admission.py) decides: half-open connections have their
own budget and a per-source limit, a Retry (retry.py) answers under load, and a handshake timeout
is enforced here with one timer, whatever timers the backend arms. Anything else unknown is
counted in `unroutable` and dropped.

Transmission is batched: a connection touched by a receive, a send or a timer is marked dirty,
and one `call_soon` per loop turn transmits every dirty connection.

Packets go back to peers that connected to us (a gateway's clients, which are in no directory and
may sit behind NAT) over their inbound connection: `by_label` maps the name each one claimed in its
hello, once its handshake completed, to that connection; the newest claim wins, so a client that
reconnects before its old connection times out gets its packets. Like an outbound link, what is
handed to the backend is bounded (`queue_packets`, and the backend's window: see outbound.py).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from collections.abc import Callable

from nyx.telemetry.window import SampleWindow
from nyx.transport.admission import AdmissionLimits, Admit, InboundAdmission, SendRetry
from nyx.transport.backends import Backend
from nyx.transport.base import LinkStats, PacketHandler, PeerAddress, PeerId
from nyx.transport.driver import CID_LENGTH, ConnectionDriver, ConnectionFactory, PeerAuthenticationError
from nyx.transport.outbound import DATAGRAM_OVERHEAD_BYTES
from nyx.transport.retry import RetryTokens
from nyx.transport.sockbuf import SocketBuffers, cap_message, size_udp_buffers
from nyx.transport.wire import InitialHeader, destination_cid, is_initial, parse_initial

log = logging.getLogger("nyx.transport.quic")

OTHER_PEERS = "?other"  # inbound statistics bucket once too many peer names were seen


class QuicEndpoint(asyncio.DatagramProtocol):
    """The node's UDP socket and every connection on it; the `ConnectionEvents` of its drivers."""

    def __init__(
        self,
        node_id: PeerId,
        backend: Backend,
        factory: ConnectionFactory,
        limits: AdmissionLimits,
        clock: Callable[[], float],
        queue_packets: int = 1024,
    ) -> None:
        self.node_id = node_id
        self.queue_packets = queue_packets
        self.backend = backend
        self.factory = factory
        self.clock = clock
        self.admission: InboundAdmission[ConnectionDriver] = InboundAdmission(limits)
        self.retry_tokens = RetryTokens()
        self.handler: PacketHandler | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.udp: asyncio.DatagramTransport | None = None
        self.by_cid: dict[bytes, ConnectionDriver] = {}
        self.inbound: set[ConnectionDriver] = set()
        self.stats_in: dict[PeerId, LinkStats] = {}
        self.by_label: dict[PeerId, ConnectionDriver] = {}  # live, handshake done, newest claim
        self.closing = False
        self._dirty: set[ConnectionDriver] = set()
        self._flush_handle: asyncio.Handle | None = None
        self.handshake_timer: asyncio.TimerHandle | None = None
        self._handshake_timer_at: float | None = None
        # plain-attribute counters (published by nyx.telemetry about once a second)
        self.socket_errors = self.udp_sent = self.udp_received = self.unroutable = 0
        self.handler_errors = self.unhandled = self.inbound_refused = self.auth_failures = 0
        self.handshakes = self.handshakes_resumed = self.backend_errors = 0
        self.handshake_s = SampleWindow(256)  # outbound handshake durations
        self.socket_buffers: SocketBuffers | None = None  # what the kernel granted, once open

    # -- the socket --------------------------------------------------------------------------

    async def open(self, host: str, port: int, buffer_bytes: int) -> tuple[str, int]:
        self.loop = asyncio.get_running_loop()
        if self.backend.open_udp is not None:
            self.udp, _ = await self.backend.open_udp(self.loop, lambda: self, host, port)
        else:
            self.udp, _ = await self.loop.create_datagram_endpoint(lambda: self, local_addr=(host, port))
        self._size_socket_buffers(buffer_bytes)
        bound = self.udp.get_extra_info("sockname")
        return bound[0], bound[1]

    def _size_socket_buffers(self, buffer_bytes: int) -> None:
        """Ask for large UDP buffers: a burst of one congestion window must not overflow the
        kernel's default (about 200 kB, some 90 datagrams) while the loop is busy elsewhere
        (sockbuf.py: the kernel's cap, the privileged fallback, the warning)."""
        sock = self.udp.get_extra_info("socket") if self.udp is not None else None
        if sock is None:
            return
        self.socket_buffers = size_udp_buffers(sock, buffer_bytes)
        message = cap_message(self.node_id, self.socket_buffers)
        if message is not None:  # a node's runtime repeats it as a warning; an embedding app decides
            log.info("%s", message)

    def error_received(self, exc: Exception) -> None:
        self.socket_errors += 1
        log.debug("%s: UDP error %s", self.node_id, exc)

    def close_all(self) -> None:
        """Close every connection (telling peers), flush, stop timers, release the socket."""
        self.closing = True
        for driver in set(self.by_cid.values()) | self.inbound:
            driver.close("node shutting down")
        self.flush()
        for driver in set(self.by_cid.values()) | self.inbound:
            driver.cancel_timer()
            self._wake(driver)  # `wait_writable` callers then see the transport closed
        self.by_label.clear()
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        if self.handshake_timer is not None:
            self.handshake_timer.cancel()
            self.handshake_timer = None
        self.by_cid.clear()
        self.inbound.clear()
        if self.udp is not None:
            self.udp.close()

    # -- receiving ---------------------------------------------------------------------------

    def datagrams_received(self, datagrams: list[bytes], addr: tuple[str, int]) -> None:
        """A burst from one address (a batched socket: see `Backend.open_udp`). Each run of
        datagrams for one known connection goes to its backend in one call; anything else takes
        the one-datagram path (admission, counted drops)."""
        for driver, group in itertools.groupby(datagrams, self._known):
            if driver is None:
                for data in group:
                    self.datagram_received(data, addr)
            else:
                run = list(group)
                self.udp_received += len(run)
                driver.receive_many(run, addr)

    def _known(self, data: bytes) -> ConnectionDriver | None:
        cid = destination_cid(data, CID_LENGTH)
        return self.by_cid.get(cid) if cid is not None else None

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        self.udp_received += 1
        cid = destination_cid(data, CID_LENGTH)
        if cid is None:
            self.unroutable += 1
            return
        driver = self.by_cid.get(cid)
        if driver is None:
            if self.closing or not is_initial(data):
                self.unroutable += 1
                return
            driver = self._admit(data, addr)
            if driver is None:
                return
        driver.receive(data, addr)

    def _admit(self, data: bytes, addr: tuple[str, int]) -> ConnectionDriver | None:
        """Apply the admission policy to an Initial with an unknown DCID: a new half-open
        connection, or None (answered with a Retry, or dropped; every outcome is counted)."""
        header = parse_initial(data)
        if header is None:
            self.unroutable += 1
            return None
        now = self.clock()
        original_cid, retry_cid = header.destination_cid, None
        if header.token:
            original_cid = self.retry_tokens.validate(addr, header.destination_cid, header.token, now)
            if original_cid is None:
                return None  # counted in retry_tokens.rejected
            retry_cid = header.destination_cid
        verdict = self.admission.decide(addr[0], retry_cid is not None, now)
        if isinstance(verdict, SendRetry):
            self._send_retry(header, addr, now)
            return None
        if not isinstance(verdict, Admit):
            self.inbound_refused += 1
            return None
        for victim in verdict.evict:
            self._drop_half_open(victim)
        driver = self._accept_inbound(header.destination_cid, original_cid, retry_cid, addr)
        self.admission.opened(driver, addr[0], now, validated=retry_cid is not None)
        self._arm_handshake_timer()
        return driver

    def _send_retry(self, header: InitialHeader, addr: tuple[str, int], now: float) -> None:
        udp = self.udp
        if udp is None or udp.is_closing():
            return
        retry_cid = os.urandom(CID_LENGTH)
        token = self.retry_tokens.issue(addr, header.destination_cid, retry_cid, now)
        try:
            packet = self.backend.encode_retry(
                version=header.version,
                source_cid=retry_cid,
                destination_cid=header.source_cid,
                original_destination_cid=header.destination_cid,
                retry_token=token,
            )
        except Exception as exc:  # hostile header fields must cost a drop, not the node
            self.backend_errors += 1
            log.debug("%s: cannot encode a Retry for %s: %s", self.node_id, addr, exc)
            return
        udp.sendto(packet, addr)
        self.udp_sent += 1

    def _accept_inbound(
        self, cid: bytes, original_cid: bytes, retry_cid: bytes | None, addr: tuple[str, int]
    ) -> ConnectionDriver:
        quic = self.factory.server(original_cid, retry_cid)
        label = f"?{addr[0]}:{addr[1]}"
        assert self.loop is not None
        driver = ConnectionDriver(
            quic, addr, outbound=False, peer=label, stats=self._stats_in_for(label), events=self,
            backend=self.backend, clock=self.clock, loop=self.loop,
        )
        self.inbound.add(driver)
        self.register_cid(driver, cid)
        self.register_cid(driver, quic.host_cid)
        return driver

    def _drop_half_open(self, driver: ConnectionDriver) -> None:
        """Forget a half-open inbound connection at once (evicted or timed out). Nothing is sent:
        a forged Initial has no keys to answer with, and a real client retries its Initial."""
        self._dirty.discard(driver)
        driver.end("half-open connection dropped")

    def _arm_handshake_timer(self) -> None:
        """One loop timer for the oldest half-open connection's handshake deadline: enforced here,
        whatever timers the backend arms (both keep a connection that decrypted nothing for their
        30 s idle timeout; qh3 was reported never to remove it)."""
        deadline = self.admission.next_deadline()
        if deadline is None or self.loop is None or self.closing:
            return
        if self.handshake_timer is not None:
            if self._handshake_timer_at is not None and self._handshake_timer_at <= deadline:
                return
            self.handshake_timer.cancel()
        self._handshake_timer_at = deadline
        self.handshake_timer = self.loop.call_later(max(0.0, deadline - self.clock()), self._on_handshake_deadline)

    def _on_handshake_deadline(self) -> None:
        self.handshake_timer = self._handshake_timer_at = None
        for driver in self.admission.expire(self.clock()):
            self._drop_half_open(driver)
        self._arm_handshake_timer()

    def _stats_in_for(self, peer: PeerId) -> LinkStats:
        stats = self.stats_in.get(peer)
        if stats is None:
            if len(self.stats_in) >= 4 * self.admission.limits.max_established:
                peer = OTHER_PEERS  # peer-chosen names must not grow memory without bound
                stats = self.stats_in.get(peer)
            if stats is None:
                stats = self.stats_in[peer] = LinkStats()
        return stats

    # -- outbound connections ----------------------------------------------------------------

    def open_outbound(self, peer: PeerId, address: PeerAddress, stats: LinkStats, link: object) -> ConnectionDriver:
        """Start a client handshake with `peer`, pinned to `address.fingerprint`."""
        assert self.loop is not None
        quic = self.factory.client(peer, address)
        driver = ConnectionDriver(
            quic, (address.host, address.port), outbound=True, peer=peer, stats=stats, events=self,
            backend=self.backend, clock=self.clock, loop=self.loop, link=link,  # type: ignore[arg-type]
        )
        self.register_cid(driver, quic.host_cid)
        driver.connect()
        self.transmit(driver)
        return driver

    # -- ConnectionEvents --------------------------------------------------------------------

    def mark_dirty(self, driver: ConnectionDriver) -> None:
        self._dirty.add(driver)
        if self._flush_handle is None and self.loop is not None:
            self._flush_handle = self.loop.call_soon(self.flush)

    def register_cid(self, driver: ConnectionDriver, cid: bytes) -> None:
        driver.cids.add(cid)
        self.by_cid[cid] = driver

    def retire_cid(self, driver: ConnectionDriver, cid: bytes) -> None:
        driver.cids.discard(cid)
        if self.by_cid.get(cid) is driver:
            del self.by_cid[cid]

    def deliver(self, driver: ConnectionDriver, packet: bytes) -> None:
        stats = driver.stats
        stats.received += 1
        stats.bytes_received += len(packet)
        handler = self.handler
        if handler is None:
            self.unhandled += 1
            return
        try:
            handler(driver.peer, packet)
        except Exception:
            self.handler_errors += 1
            log.exception("%s: packet handler failed on a packet from %s", self.node_id, driver.peer)

    def label_inbound(self, driver: ConnectionDriver, label: str) -> None:
        driver.peer = driver.label = label
        driver.stats = self._stats_in_for(label)
        if driver.handshake_done:
            self._claim(driver)

    def handshake_completed(self, driver: ConnectionDriver, resumed: bool) -> None:
        self.handshakes += 1
        if resumed:
            self.handshakes_resumed += 1
        if not driver.outbound:
            if not self.admission.established(driver):
                self.inbound_refused += 1
                driver.close("server busy")
            elif driver.label is not None:
                self._claim(driver)
            return
        self.handshake_s.record(self.clock() - driver.opened_at)
        driver.say_hello(self.node_id)
        self.transmit(driver)
        if driver.link is not None and not self.closing:
            driver.link.connected(driver)

    def terminated(self, driver: ConnectionDriver) -> None:
        """Forget `driver` (routing, admission) and tell its link."""
        for cid in driver.cids:
            if self.by_cid.get(cid) is driver:
                del self.by_cid[cid]
        driver.cids.clear()
        if not driver.outbound:
            self.inbound.discard(driver)
            self.admission.closed(driver)
            self._release(driver)
        if isinstance(driver.failure, PeerAuthenticationError):
            self.auth_failures += 1
        if driver.link is not None:
            driver.link.ended(driver)

    def backend_error(self, driver: ConnectionDriver, exc: Exception) -> None:
        """Count an exception raised inside the QUIC backend; log the first one per connection."""
        self.backend_errors += 1
        if not driver.backend_errors:
            log.warning("%s: QUIC backend error on the connection with %s: %s", self.node_id, driver.peer, exc)
        driver.backend_errors += 1

    # -- sending back on inbound connections -------------------------------------------------

    def _claim(self, driver: ConnectionDriver) -> None:
        """`driver` (handshake completed, hello read) takes its label, from an older connection
        too: a claim, not a proof, which is why a gateway gives its clients unguessable ids."""
        label = driver.label
        if label is None or driver.closing or driver.ended or self.closing:
            return
        previous = self.by_label.get(label)
        self.by_label[label] = driver
        if previous is not None and previous is not driver:
            log.debug("%s: %s reconnected from %s port %s; the newest connection takes its packets",
                      self.node_id, label, driver.addr[0], driver.addr[1])
            self._wake(previous)  # its waiters look the label up again

    def _release(self, driver: ConnectionDriver) -> None:
        label = driver.label
        if label is not None and self.by_label.get(label) is driver:
            del self.by_label[label]
        self._wake(driver)

    @staticmethod
    def _wake(driver: ConnectionDriver) -> None:
        room = driver.room
        if room is not None:
            room.set()

    def has_room(self, driver: ConnectionDriver) -> bool:
        """The rule of outbound links: at most `queue_packets` frames handed to the backend and
        not yet transmitted, and no more than the backend's window takes (aioquic's DATAGRAM
        deque is unbounded; qh3 transmits past its congestion window)."""
        limit = self.queue_packets
        return driver.handed < limit and self.backend.window_open(driver.quic, driver.handed_bytes, limit)

    def send_inbound(self, driver: ConnectionDriver, packet: bytes) -> bool:
        """Hand `packet` to an inbound connection's backend (sent at the next flush); False if it
        has no room (the caller counts the drop)."""
        if not self.has_room(driver):
            return False
        try:
            driver.quic.send_datagram_frame(packet)
        except Exception:  # the client closed and we have not seen it end yet (qh3 raises): a drop
            return False
        driver.handed += 1
        driver.handed_bytes += len(packet) + DATAGRAM_OVERHEAD_BYTES
        stats = driver.stats
        stats.sent += 1
        stats.bytes_sent += len(packet)
        self.mark_dirty(driver)
        return True

    def close_inbound(self, label: PeerId, reason: str) -> bool:
        """Close the inbound connection holding `label` with a CONNECTION_CLOSE carrying `reason`;
        the label is free at once. False if no live inbound connection holds it."""
        driver = self.by_label.pop(label, None)
        if driver is None:
            return False
        driver.close(reason)
        self._wake(driver)
        return True

    # -- transmitting ------------------------------------------------------------------------

    def transmit(self, driver: ConnectionDriver) -> None:
        udp = self.udp
        if udp is None or udp.is_closing():
            return
        self.udp_sent += driver.transmit(udp)

    def flush(self) -> None:
        """Transmit every connection touched since the last flush (one batch per loop turn),
        moving queued packets of a live link into its connection first."""
        self._flush_handle = None
        dirty, self._dirty = self._dirty, set()
        for driver in dirty:
            link = driver.link
            if link is None or link.conn is not driver:
                self.transmit(driver)
                if driver.handed or driver.room is not None:  # inbound, sent back on
                    driver.handed = driver.handed_bytes = 0
                    self._wake(driver)
                continue
            link.before_transmit(driver)
            self.transmit(driver)
            link.after_transmit(driver)
