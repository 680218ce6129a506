"""`QuicTransport`: packets as QUIC DATAGRAM frames (RFC 9221) over one UDP socket per node.

Shape (see docs/transport.md):

- One asyncio datagram endpoint per node. Every UDP datagram is routed by its Destination
  Connection ID to a connection: ones we opened to peers (outbound links) and ones peers opened
  to us (inbound). The backend's sans-I/O `QuicConnection` does the protocol; this module only
  feeds it bytes and a clock, drains its events, and arms one timer per connection.
- The clock is `time.perf_counter` for every backend and loop. uvloop's `loop.time()` has 1 ms
  resolution, which breaks aioquic's RTT estimate and pacing; timers are converted to
  `loop.call_later` delays so the loop clock is never fed to QUIC.
- Sending goes only over outbound links, each authenticated by pinning the peer's certificate
  fingerprint from the directory. Inbound connections only receive; the peer names itself in a
  one-line hello on stream 0 (a label for statistics, not an authenticated identity; see the doc).
- Inbound connections are admitted by a sans-I/O policy (admission.py): half-open ones have their
  own budget, a per-source limit, a handshake timeout this module enforces with one timer, and
  Retry (retry.py) under load, so a flood of forged Initials cannot lock real clients out.
- Every queue is bounded: a per-peer `SendQueue` while the link is connecting, and the backend's
  DATAGRAM queue (aioquic's is unbounded, so we stop handing it packets at `queue_packets`).
  Overflow is a counted drop; `send_wait` turns it into backpressure.
- An outbound link is a supervised task: connect, run until the connection ends, then retry
  with jittered exponential backoff (a restarted peer is reconnected and queued packets flushed).
  Idle links are closed; quiet but active links are kept alive with PINGs.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nyx.telemetry.window import SampleWindow
from nyx.transport.admission import AdmissionLimits, Admit, InboundAdmission, SendRetry
from nyx.transport.backends import Backend, load_backend
from nyx.transport.base import (
    LinkStats,
    OversizeError,
    PeerAddress,
    PeerId,
    Transport,
    TransportClosedError,
    UnknownPeerError,
)
from nyx.transport.certs import NodeIdentity, normalize_fingerprint
from nyx.transport.link import Backoff, LinkPhase, LinkState
from nyx.transport.queues import SendQueue
from nyx.transport.retry import RetryTokens
from nyx.transport.tickets import ClientTicketCache, ServerTicketStore
from nyx.transport.wire import InitialHeader, destination_cid, is_initial, parse_initial

log = logging.getLogger(__name__)

ALPN = "nyx/1"
UDP_PAYLOAD_BYTES = 1200  # QUIC's default; fits a 1,280-byte IPv6 MTU path
HELLO_STREAM_ID = 0
MAX_HELLO_BYTES = 128
CID_LENGTH = 8
OTHER_PEERS = "?other"  # inbound statistics bucket once too many peer names were seen
DATAGRAM_OVERHEAD_BYTES = 30  # frame type, length, short header, AEAD tag: bytes on the wire


class PeerAuthenticationError(ConnectionError):
    """The peer's certificate did not match its directory record; the link was refused."""


class ConnectFailedError(ConnectionError):
    """The link could not be established (no answer, refused, or closed during the handshake)."""


@dataclass(slots=True, eq=False)
class _Conn:
    """One QUIC connection on the shared socket (either direction)."""

    quic: Any
    addr: tuple[str, int]
    outbound: bool
    peer: PeerId
    stats: LinkStats
    cids: set[bytes] = field(default_factory=set)
    timer: asyncio.TimerHandle | None = None
    timer_at: float | None = None
    handshake: asyncio.Future[None] | None = None
    terminated: asyncio.Event = field(default_factory=asyncio.Event)
    close_reason: str = ""
    hello: bytearray = field(default_factory=bytearray)
    link: _OutLink | None = None
    idle_closed: bool = False
    last_received: float = 0.0  # clock of the last UDP datagram from the peer
    last_sent: float = 0.0  # clock of the last UDP datagram to the peer
    opened_at: float = 0.0
    backend_errors: int = 0


@dataclass(slots=True, eq=False)
class _OutLink:
    """This node's sending side towards one peer."""

    peer: PeerId
    address: PeerAddress
    queue: SendQueue
    stats: LinkStats
    state: LinkState
    wanted: asyncio.Event = field(default_factory=asyncio.Event)
    room: asyncio.Event = field(default_factory=asyncio.Event)
    conn: _Conn | None = None
    waiters: list[asyncio.Future[None]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None
    last_sent: int = 0  # stats.sent at the last maintenance pass
    handed_bytes: int = 0  # handed to the backend since its last transmit


class _Endpoint(asyncio.DatagramProtocol):
    """The asyncio side of the node's UDP socket: forwards datagrams to the transport."""

    def __init__(self, owner: QuicTransport) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.owner._on_udp(data, addr)

    def error_received(self, exc: Exception) -> None:
        self.owner.socket_errors += 1
        log.debug("%s: UDP error %s", self.owner.node_id, exc)


class QuicTransport(Transport):
    """The real-network `Transport`.

    node_id and identity: this node's directory id and TLS certificate/key. backend: "aioquic"
    (default) or "qh3". queue_packets: per-peer bound on packets waiting (while connecting, and in
    the backend's DATAGRAM queue). idle_close_s: close an outbound link nothing was sent on for
    this long. keepalive_s: PING quiet links this often so QUIC's idle timeout does not fire.
    resumption: issue and redeem TLS 1.3 session tickets (tickets.py); client_tickets: the cache
    of tickets from peers, shareable so that a returning client resumes. admission: limits on
    inbound connection state (admission.py); without it, `max_inbound` bounds established inbound
    connections and the other limits take their defaults.
    """

    def __init__(
        self,
        node_id: PeerId,
        identity: NodeIdentity,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        backend: str = "aioquic",
        queue_packets: int = 1024,
        idle_timeout_s: float = 30.0,
        idle_close_s: float = 300.0,
        keepalive_s: float = 5.0,
        peer_silence_s: float = 3.0,
        connect_timeout_s: float = 5.0,
        backoff_initial_s: float = 0.05,
        backoff_max_s: float = 5.0,
        max_inbound: int = 4096,
        socket_buffer_bytes: int = 4 * 1024 * 1024,
        clock: Callable[[], float] = time.perf_counter,
        resumption: bool = True,
        client_tickets: ClientTicketCache | None = None,
        admission: AdmissionLimits | None = None,
    ) -> None:
        super().__init__()
        self.node_id = node_id
        self.identity = identity
        self.backend: Backend = load_backend(backend)
        self.max_packet_bytes = self.backend.max_datagram_payload
        self.host, self.port = host, port
        self.queue_packets = queue_packets
        self.idle_timeout_s = idle_timeout_s
        self.idle_close_s = idle_close_s
        self.keepalive_s = keepalive_s
        self.peer_silence_s = peer_silence_s
        self.connect_timeout_s = connect_timeout_s
        self.backoff_initial_s, self.backoff_max_s = backoff_initial_s, backoff_max_s
        limits = admission if admission is not None else AdmissionLimits(max_established=max_inbound)
        self.max_inbound = limits.max_established
        self.admission: InboundAdmission[_Conn] = InboundAdmission(limits)
        self.retry_tokens = RetryTokens()
        self.socket_buffer_bytes = socket_buffer_bytes
        self._clock = clock
        # TLS session resumption (see tickets.py): tickets we issue, and tickets peers gave us.
        self.resumption = resumption
        self.server_tickets = ServerTicketStore()
        self.client_tickets = client_tickets if client_tickets is not None else ClientTicketCache()
        self._certificate = self.backend.load_certificate(identity.certificate_pem)
        self._private_key = self.backend.load_private_key(identity.private_key_pem)
        self._server_config = self._configuration(is_client=False)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._addresses: dict[PeerId, PeerAddress] = {}
        self._links: dict[PeerId, _OutLink] = {}
        self._by_cid: dict[bytes, _Conn] = {}
        self._inbound: set[_Conn] = set()
        self._stats_in: dict[PeerId, LinkStats] = {}
        self._dirty: set[_Conn] = set()
        self._flush_handle: asyncio.Handle | None = None
        self._handshake_timer: asyncio.TimerHandle | None = None
        self._handshake_timer_at: float | None = None
        self._closing = False
        self._listening = False
        # plain-attribute counters (published by nyx.telemetry about once a second)
        self.socket_errors = 0
        self.udp_sent = 0
        self.udp_received = 0
        self.unroutable = 0
        self.handler_errors = 0
        self.unhandled = 0
        self.inbound_refused = 0
        self.auth_failures = 0
        self.handshakes = 0
        self.handshakes_resumed = 0
        self.silent_peers = 0
        self.backend_errors = 0
        self.handshake_s = SampleWindow(256)  # outbound handshake durations

    # -- configuration ---------------------------------------------------------------------

    def _configuration(self, is_client: bool, server_name: str | None = None) -> Any:
        config = self.backend.configuration_class(
            alpn_protocols=[ALPN],
            is_client=is_client,
            idle_timeout=self.idle_timeout_s,
            max_datagram_frame_size=65535,
            max_datagram_size=UDP_PAYLOAD_BYTES,
            connection_id_length=CID_LENGTH,
        )
        if hasattr(config, "probe_datagram_size"):
            config.probe_datagram_size = False  # keep one packet = one 1,200-byte UDP payload
        config.certificate = self._certificate
        config.private_key = self._private_key
        if is_client:
            config.server_name = server_name
            config.verify_mode = ssl.CERT_REQUIRED
        return config

    # -- lifecycle -------------------------------------------------------------------------

    async def listen(self) -> PeerAddress:
        if self._closing:
            raise TransportClosedError(f"{self.node_id}: transport is closed")
        if self._listening:
            return self.address
        self._loop = asyncio.get_running_loop()
        self._udp, _ = await self._loop.create_datagram_endpoint(
            lambda: _Endpoint(self), local_addr=(self.host, self.port)
        )
        self.host, self.port = self._udp.get_extra_info("sockname")[:2]
        self._size_socket_buffers()
        self._tg = asyncio.TaskGroup()
        await self._tg.__aenter__()
        self._tasks.append(self._tg.create_task(self._maintain(), name=f"{self.node_id}:maintain"))
        self._listening = True
        return self.address

    def _size_socket_buffers(self) -> None:
        """Ask for large UDP buffers: a burst of one congestion window must not overflow the
        kernel's default (about 200 kB, some 150 datagrams) while the loop is busy elsewhere.
        The kernel caps the request at net.core.rmem_max / wmem_max."""
        sock = self._udp.get_extra_info("socket") if self._udp is not None else None
        if sock is None:
            return
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            try:
                sock.setsockopt(socket.SOL_SOCKET, option, self.socket_buffer_bytes)
            except OSError as exc:  # pragma: no cover - platform dependent
                log.debug("%s: cannot size socket buffer: %s", self.node_id, exc)

    @property
    def address(self) -> PeerAddress:
        """Where peers reach this node, with the fingerprint they must pin."""
        return PeerAddress(self.host, self.port, self.identity.fingerprint)

    async def drain(self, timeout_s: float = 5.0) -> bool:
        """Wait until every queued packet has left (or `timeout_s`); True if all left.

        Used by graceful shutdown: stop producing, drain, then close.
        """
        deadline = self._clock() + timeout_s
        while self._clock() < deadline:
            if all(self._link_empty(link) for link in self._links.values()):
                return True
            await asyncio.sleep(0.01)
        return False

    def _link_empty(self, link: _OutLink) -> bool:
        if len(link.queue):
            return False
        if link.conn is None:
            return True
        return not self.backend.pending_datagrams(link.conn.quic)  # qh3: None, not inspectable

    async def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        for conn in list(self._by_cid.values()) + list(self._inbound):
            self._close_conn(conn, "node shutting down")
        self._flush()
        for link in self._links.values():
            for waiter in link.waiters:
                if not waiter.done():
                    waiter.set_exception(TransportClosedError(f"{self.node_id}: transport closed"))
            link.waiters.clear()
        for task in self._tasks:
            task.cancel()
        if self._tg is not None:
            try:
                await self._tg.__aexit__(None, None, None)
            except BaseExceptionGroup as group:  # pragma: no cover - a supervisor bug
                log.error("%s: transport task failed during close: %r", self.node_id, group)
        for conn in set(self._by_cid.values()) | self._inbound:
            if conn.timer is not None:
                conn.timer.cancel()
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None
        self._by_cid.clear()
        self._inbound.clear()
        if self._udp is not None:
            self._udp.close()

    # -- peers and links -------------------------------------------------------------------

    def add_peer(self, peer: PeerId, address: PeerAddress) -> None:
        if not address.fingerprint:
            raise ValueError(
                f"peer {peer!r} has no certificate fingerprint; QUIC links are accepted only "
                "against the fingerprint in the peer's directory record"
            )
        pinned = PeerAddress(address.host, address.port, normalize_fingerprint(address.fingerprint), address.region)
        self._addresses[peer] = pinned
        link = self._links.get(peer)
        if link is not None:
            link.address = pinned

    def _link(self, peer: PeerId) -> _OutLink:
        link = self._links.get(peer)
        if link is not None:
            return link
        if self._closing:
            raise TransportClosedError(f"{self.node_id}: transport is closed")
        if not self._listening or self._tg is None:
            raise TransportClosedError(f"{self.node_id}: call listen() before sending")
        address = self._addresses.get(peer)
        if address is None:
            raise UnknownPeerError(f"{self.node_id}: no directory record for peer {peer!r}")
        link = _OutLink(
            peer=peer,
            address=address,
            queue=SendQueue(self.queue_packets),
            stats=LinkStats(),
            state=LinkState(backoff=Backoff(self.backoff_initial_s, self.backoff_max_s)),
        )
        self._links[peer] = link
        link.task = self._tg.create_task(self._supervise(link), name=f"{self.node_id}->{peer}")
        self._tasks.append(link.task)
        return link

    async def connect(self, peer: PeerId) -> None:
        link = self._link(peer)
        if link.conn is not None:
            return
        waiter = asyncio.get_running_loop().create_future()
        link.waiters.append(waiter)
        link.wanted.set()
        await waiter

    # -- sending ---------------------------------------------------------------------------

    def send(self, peer: PeerId, packet: bytes) -> bool:
        link = self._links.get(peer) or self._link(peer)
        if len(packet) > self.max_packet_bytes:
            raise OversizeError(
                f"packet of {len(packet)} bytes exceeds one QUIC DATAGRAM ({self.max_packet_bytes} bytes)"
            )
        if self._closing:
            raise TransportClosedError(f"{self.node_id}: transport is closed")
        if self._accept(link, packet):
            return True
        link.stats.dropped += 1
        return False

    def send_if_room(self, peer: PeerId, packet: bytes) -> bool:
        link = self._links.get(peer) or self._link(peer)
        if len(packet) > self.max_packet_bytes:
            raise OversizeError(
                f"packet of {len(packet)} bytes exceeds one QUIC DATAGRAM ({self.max_packet_bytes} bytes)"
            )
        if self._closing:
            raise TransportClosedError(f"{self.node_id}: transport is closed")
        return self._accept(link, packet)

    def _accept(self, link: _OutLink, packet: bytes) -> bool:
        conn = link.conn
        if conn is not None and not len(link.queue) and self._window_open(link, conn):
            conn.quic.send_datagram_frame(packet)
            link.handed_bytes += len(packet) + DATAGRAM_OVERHEAD_BYTES
            stats = link.stats
            stats.sent += 1
            stats.bytes_sent += len(packet)
            self._mark_dirty(conn)
            return True
        if not link.queue.has_room:
            return False
        link.queue.offer(packet)
        if conn is None:
            link.wanted.set()
        else:
            self._mark_dirty(conn)
        return True

    def _window_open(self, link: _OutLink, conn: _Conn) -> bool:
        return self.backend.window_open(conn.quic, link.handed_bytes, self.queue_packets)

    async def wait_writable(self, peer: PeerId) -> None:
        link = self._links.get(peer) or self._link(peer)
        while not link.queue.has_room:
            link.room.clear()
            await link.room.wait()

    def _move_queue(self, link: _OutLink, conn: _Conn) -> None:
        """Hand queued packets to the backend as far as its window allows (link is up)."""
        queue = link.queue
        stats = link.stats
        quic = conn.quic
        while len(queue) and self._window_open(link, conn):
            packet = queue.pop()
            quic.send_datagram_frame(packet)
            link.handed_bytes += len(packet) + DATAGRAM_OVERHEAD_BYTES
            stats.sent += 1
            stats.bytes_sent += len(packet)

    # -- the socket side -------------------------------------------------------------------

    def _mark_dirty(self, conn: _Conn) -> None:
        self._dirty.add(conn)
        if self._flush_handle is None and self._loop is not None:
            self._flush_handle = self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Transmit every connection touched since the last flush (one batch per loop turn)."""
        self._flush_handle = None
        dirty, self._dirty = self._dirty, set()
        for conn in dirty:
            link = conn.link
            if link is None or link.conn is not conn:
                self._transmit(conn)
                continue
            if len(link.queue):
                self._move_queue(link, conn)
            self._transmit(conn)
            link.handed_bytes = 0
            if len(link.queue):
                self._move_queue(link, conn)  # the window may have opened; send next turn
                if len(link.queue) < link.queue.capacity:
                    link.room.set()
            else:
                link.room.set()

    def _transmit(self, conn: _Conn) -> None:
        udp = self._udp
        if udp is None or udp.is_closing():
            return
        now = self._clock()
        sent = 0
        try:
            datagrams = conn.quic.datagrams_to_send(now=now)
        except Exception as exc:  # a backend bug must cost this connection a turn, not the node
            self._backend_error(conn, exc)
            datagrams = []
        for data, addr in datagrams:
            udp.sendto(data, addr)
            sent += 1
        if sent:
            self.udp_sent += sent
            conn.last_sent = now
        timer_at = conn.quic.get_timer()
        if conn.timer is not None and conn.timer_at != timer_at:
            conn.timer.cancel()
            conn.timer = None
        if conn.timer is None and timer_at is not None and self._loop is not None:
            conn.timer = self._loop.call_later(max(0.0, timer_at - now), self._on_timer, conn)
        conn.timer_at = timer_at

    def _on_timer(self, conn: _Conn) -> None:
        conn.timer = None
        now = max(self._clock(), conn.timer_at or 0.0)
        conn.timer_at = None
        try:
            conn.quic.handle_timer(now=now)
        except Exception as exc:
            self._backend_error(conn, exc)
        self._process_events(conn)
        self._mark_dirty(conn)

    def _backend_error(self, conn: _Conn, exc: Exception) -> None:
        """Count an exception raised inside the QUIC backend; log the first one per connection."""
        self.backend_errors += 1
        if not conn.backend_errors:
            log.warning("%s: QUIC backend error on the connection with %s: %s", self.node_id, conn.peer, exc)
        conn.backend_errors += 1

    def _on_udp(self, data: bytes, addr: tuple[str, int]) -> None:
        self.udp_received += 1
        cid = destination_cid(data, CID_LENGTH)
        if cid is None:
            self.unroutable += 1
            return
        conn = self._by_cid.get(cid)
        if conn is None:
            if self._closing or not is_initial(data):
                self.unroutable += 1
                return
            conn = self._admit(data, addr)
            if conn is None:
                return
        try:
            conn.last_received = now = self._clock()
            conn.quic.receive_datagram(data, addr, now=now)
        except Exception as exc:  # a backend bug on hostile input must not take the node down
            self._backend_error(conn, exc)
            return
        self._process_events(conn)
        self._mark_dirty(conn)

    def _admit(self, data: bytes, addr: tuple[str, int]) -> _Conn | None:
        """Apply the admission policy to an Initial with an unknown DCID: a new half-open
        connection, or None (answered with a Retry, or dropped; every outcome is counted)."""
        header = parse_initial(data)
        if header is None:
            self.unroutable += 1
            return None
        now = self._clock()
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
        conn = self._accept_inbound(header.destination_cid, original_cid, retry_cid, addr)
        self.admission.opened(conn, addr[0], now, validated=retry_cid is not None)
        self._arm_handshake_timer()
        return conn

    def _send_retry(self, header: InitialHeader, addr: tuple[str, int], now: float) -> None:
        udp = self._udp
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
    ) -> _Conn:
        tickets = self.server_tickets if self.resumption else None
        quic = self.backend.connection_class(
            configuration=self._server_config,
            original_destination_connection_id=original_cid,
            retry_source_connection_id=retry_cid,
            session_ticket_fetcher=tickets.pop if tickets is not None else None,
            session_ticket_handler=tickets.add if tickets is not None else None,
        )
        label = f"?{addr[0]}:{addr[1]}"
        conn = _Conn(quic=quic, addr=addr, outbound=False, peer=label, stats=self._stats_in_for(label))
        conn.opened_at = self._clock()
        self._inbound.add(conn)
        self._register_cid(conn, cid)
        self._register_cid(conn, quic.host_cid)
        return conn

    def _drop_half_open(self, conn: _Conn) -> None:
        """Forget a half-open inbound connection at once (evicted or timed out). Nothing is sent:
        a forged Initial has no keys to answer with, and a real client retries its Initial."""
        self._forget(conn)
        self._inbound.discard(conn)
        self._dirty.discard(conn)
        conn.close_reason = "half-open connection dropped"
        conn.terminated.set()

    def _arm_handshake_timer(self) -> None:
        """One loop timer for the oldest half-open connection's handshake deadline: enforced here,
        whatever timers the backend arms (both keep a connection that decrypted nothing for their
        30 s idle timeout; qh3 was reported never to remove it)."""
        deadline = self.admission.next_deadline()
        if deadline is None or self._loop is None or self._closing:
            return
        if self._handshake_timer is not None:
            if self._handshake_timer_at is not None and self._handshake_timer_at <= deadline:
                return
            self._handshake_timer.cancel()
        self._handshake_timer_at = deadline
        self._handshake_timer = self._loop.call_later(
            max(0.0, deadline - self._clock()), self._on_handshake_deadline
        )

    def _on_handshake_deadline(self) -> None:
        self._handshake_timer = self._handshake_timer_at = None
        for conn in self.admission.expire(self._clock()):
            self._drop_half_open(conn)
        self._arm_handshake_timer()

    def _stats_in_for(self, peer: PeerId) -> LinkStats:
        stats = self._stats_in.get(peer)
        if stats is None:
            if len(self._stats_in) >= 4 * self.max_inbound:
                peer = OTHER_PEERS  # peer-chosen names must not grow memory without bound
                stats = self._stats_in.get(peer)
            if stats is None:
                stats = self._stats_in[peer] = LinkStats()
        return stats

    def _register_cid(self, conn: _Conn, cid: bytes) -> None:
        conn.cids.add(cid)
        self._by_cid[cid] = conn

    def _process_events(self, conn: _Conn) -> None:
        ev = self.backend.events
        datagram_cls = ev.DatagramFrameReceived
        quic = conn.quic
        event = quic.next_event()
        while event is not None:
            cls = type(event)
            if cls is datagram_cls:
                self._deliver(conn, event.data)
            elif cls is ev.StreamDataReceived:
                self._on_stream(conn, event)
            elif cls is ev.HandshakeCompleted:
                self._on_handshake(conn, event)
            elif cls is ev.ConnectionIdIssued:
                self._register_cid(conn, event.connection_id)
            elif cls is ev.ConnectionIdRetired:
                conn.cids.discard(event.connection_id)
                if self._by_cid.get(event.connection_id) is conn:
                    del self._by_cid[event.connection_id]
            elif cls is ev.ConnectionTerminated:
                self._on_terminated(conn, event)
            event = quic.next_event()

    def _deliver(self, conn: _Conn, packet: bytes) -> None:
        stats = conn.stats
        stats.received += 1
        stats.bytes_received += len(packet)
        handler = self._handler
        if handler is None:
            self.unhandled += 1
            return
        try:
            handler(conn.peer, packet)
        except Exception:
            self.handler_errors += 1
            log.exception("%s: packet handler failed on a packet from %s", self.node_id, conn.peer)

    def _on_stream(self, conn: _Conn, event: Any) -> None:
        if conn.outbound or event.stream_id != HELLO_STREAM_ID:
            return
        if len(conn.hello) + len(event.data) > MAX_HELLO_BYTES:
            conn.hello.clear()
            return
        conn.hello += event.data
        if event.end_stream:
            try:
                label = conn.hello.decode("utf-8")
            except UnicodeDecodeError:
                return
            if label.isprintable() and label:
                conn.peer = label
                conn.stats = self._stats_in_for(label)

    def _on_handshake(self, conn: _Conn, event: Any) -> None:
        self.handshakes += 1
        if getattr(event, "session_resumed", False):
            self.handshakes_resumed += 1
        if not conn.outbound:
            if not self.admission.established(conn):
                self.inbound_refused += 1
                self._close_conn(conn, "server busy")
            return
        link = conn.link
        quic = conn.quic
        if event.alpn_protocol != ALPN:
            self._close_conn(conn, f"ALPN {event.alpn_protocol!r} is not {ALPN}")
            return
        self.handshake_s.record(self._clock() - conn.opened_at)
        # Name ourselves first, in a packet of its own, so the peer labels our datagrams.
        quic.send_stream_data(quic.get_next_available_stream_id(), self.node_id.encode(), end_stream=True)
        self._transmit(conn)
        if link is not None and not self._closing:
            link.conn = conn
            link.stats.connects += 1
            link.state.connected(self._clock())
            self._mark_dirty(conn)
        if conn.handshake is not None and not conn.handshake.done():
            conn.handshake.set_result(None)

    def _on_terminated(self, conn: _Conn, event: Any) -> None:
        reason = getattr(event, "reason_phrase", "") or ""
        self._terminated(conn, reason, f"error {event.error_code:#x}: {reason}" if event.error_code else reason)

    def _terminated(self, conn: _Conn, reason: str, close_reason: str) -> None:
        """Forget `conn` (routing, timer, link) and wake whoever waits on it."""
        conn.close_reason = close_reason
        for cid in conn.cids:
            if self._by_cid.get(cid) is conn:
                del self._by_cid[cid]
        conn.cids.clear()
        self._inbound.discard(conn)
        if not conn.outbound:
            self.admission.closed(conn)
        if conn.timer is not None:
            conn.timer.cancel()
            conn.timer = None
        link = conn.link
        if link is not None and link.conn is conn:
            link.conn = None
        if conn.handshake is not None and not conn.handshake.done():
            if "fingerprint" in reason or "certificate" in reason.lower():
                self.auth_failures += 1
                conn.handshake.set_exception(PeerAuthenticationError(f"{conn.peer}: {reason}"))
            else:
                conn.handshake.set_exception(ConnectFailedError(f"{conn.peer}: {conn.close_reason or 'closed'}"))
        conn.terminated.set()

    def _close_conn(self, conn: _Conn, reason: str) -> None:
        try:
            conn.quic.close(error_code=0, reason_phrase=reason)
        except Exception:  # already closed
            pass
        self._mark_dirty(conn)

    # -- outbound link supervision ---------------------------------------------------------

    def _open(self, link: _OutLink) -> _Conn:
        address = link.address
        config = self._configuration(is_client=True, server_name=link.peer)
        handler = None
        if self.resumption:
            # Only a ticket received under this very certificate pin may skip the certificate.
            config.session_ticket = self.client_tickets.take(link.peer, address.fingerprint)
            cache, peer, pin = self.client_tickets, link.peer, address.fingerprint

            def handler(ticket: Any) -> None:
                cache.store(peer, pin, ticket)

        quic = self.backend.connection_class(configuration=config, session_ticket_handler=handler)
        quic.nyx_pin = address.fingerprint
        conn = _Conn(
            quic=quic,
            addr=(address.host, address.port),
            outbound=True,
            peer=link.peer,
            stats=link.stats,
            link=link,
            handshake=asyncio.get_running_loop().create_future(),
        )
        self._register_cid(conn, quic.host_cid)
        conn.opened_at = self._clock()
        quic.connect((address.host, address.port), now=conn.opened_at)
        self._process_events(conn)
        self._transmit(conn)
        return conn

    async def _supervise(self, link: _OutLink) -> None:
        """Keep `link` connected while it is wanted; reconnect with backoff after failures."""
        while True:
            await link.wanted.wait()
            link.state.connecting()
            conn = self._open(link)
            assert conn.handshake is not None
            error: ConnectionError | None = None
            try:
                await asyncio.wait_for(asyncio.shield(conn.handshake), self.connect_timeout_s)
            except TimeoutError:
                error = ConnectFailedError(
                    f"{self.node_id}: no handshake with {link.peer} at "
                    f"{link.address.host}:{link.address.port} within {self.connect_timeout_s} s"
                )
                conn.handshake.cancel()
                self._close_conn(conn, "handshake timeout")
                self._forget(conn)
            except ConnectionError as exc:
                error = exc
            if error is not None:
                self._resolve_waiters(link, error)
                delay = link.state.failed()
                log.info("%s: link to %s failed (%s); retry in %.2f s", self.node_id, link.peer, error, delay)
                await asyncio.sleep(delay)
                continue
            self._resolve_waiters(link, None)
            await conn.terminated.wait()
            if conn.idle_closed and not len(link.queue):
                link.state.closed_idle()
                link.wanted.clear()
                continue
            delay = link.state.failed()
            log.info(
                "%s: link to %s closed (%s); reconnect in %.2f s",
                self.node_id, link.peer, conn.close_reason or "no reason", delay,
            )
            link.wanted.set()
            await asyncio.sleep(delay)

    def _forget(self, conn: _Conn) -> None:
        for cid in conn.cids:
            if self._by_cid.get(cid) is conn:
                del self._by_cid[cid]
        conn.cids.clear()
        if conn.timer is not None:
            conn.timer.cancel()
            conn.timer = None

    @staticmethod
    def _resolve_waiters(link: _OutLink, exc: BaseException | None) -> None:
        for waiter in link.waiters:
            if not waiter.done():
                if exc is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(exc)
        link.waiters.clear()

    async def _maintain(self) -> None:
        """Periodically: PING quiet links, close idle ones, drop silent ones, sample RTT.

        A peer that crashed sends no CONNECTION_CLOSE, and QUIC would wait its whole idle timeout.
        Every packet we send is acknowledged within an RTT or so, so an outbound link that has
        sent but heard nothing for `peer_silence_s` is declared dead and reconnected.
        """
        ping_uid = 0
        while True:
            await asyncio.sleep(min(self.keepalive_s, self.peer_silence_s / 2))
            now = self._clock()
            for link in list(self._links.values()):
                conn = link.conn
                if (
                    conn is not None
                    and conn.last_sent > conn.last_received
                    and now - conn.last_received > self.peer_silence_s
                ):
                    self.silent_peers += 1
                    self._close_conn(conn, "peer silent")
                    self._terminated(conn, "", f"no packet from {link.peer} for {now - conn.last_received:.1f} s")
            for link in self._links.values():
                if link.stats.sent != link.last_sent:
                    link.last_sent = link.stats.sent
                    link.state.touch(now)
                conn = link.conn
                if conn is None:
                    continue
                rtt = self.backend.smoothed_rtt(conn.quic)
                if rtt is not None:
                    link.stats.rtt_s = rtt
                idle_s = link.state.idle_for(now)
                if idle_s >= self.idle_close_s:
                    conn.idle_closed = True
                    self._close_conn(conn, "idle")
                elif idle_s >= self.keepalive_s:
                    ping_uid += 1
                    conn.quic.send_ping(ping_uid)
                    self._mark_dirty(conn)

    # -- statistics ------------------------------------------------------------------------

    def stats(self, peer: PeerId) -> LinkStats:
        out = self._links.get(peer)
        inn = self._stats_in.get(peer)
        if out is None and inn is None:
            return LinkStats()
        merged = LinkStats()
        for s in (out.stats if out else None, inn):
            if s is None:
                continue
            merged.sent += s.sent
            merged.received += s.received
            merged.dropped += s.dropped
            merged.bytes_sent += s.bytes_sent
            merged.bytes_received += s.bytes_received
            merged.connects += s.connects
        if out is not None:
            conn = out.conn
            rtt = self.backend.smoothed_rtt(conn.quic) if conn is not None else None
            merged.rtt_s = rtt if rtt is not None else out.stats.rtt_s
        return merged

    def peers(self) -> list[PeerId]:
        return sorted(set(self._links) | set(self._stats_in))

    def link_phase(self, peer: PeerId) -> LinkPhase:
        link = self._links.get(peer)
        return link.state.phase if link is not None else LinkPhase.DOWN

    def metric_values(self) -> dict[str, float]:
        values = super().metric_values()
        values.update(
            {
                "transport_handshakes_total": float(self.handshakes),
                "transport_handshakes_resumed_total": float(self.handshakes_resumed),
                "transport_auth_failures_total": float(self.auth_failures),
                "transport_unroutable_total": float(self.unroutable),
                "transport_links_up": float(sum(1 for l in self._links.values() if l.conn is not None)),
                "transport_inbound_connections": float(len(self._inbound)),
                "transport_inbound_half_open": float(self.admission.half_open),
                "transport_inbound_refused_total": float(self.inbound_refused),
                "transport_half_open_evicted_total": float(self.admission.evicted_full),
                "transport_half_open_source_evicted_total": float(self.admission.evicted_source),
                "transport_half_open_expired_total": float(self.admission.expired),
                "transport_retry_sent_total": float(self.admission.retries),
                "transport_retry_token_rejected_total": float(self.retry_tokens.rejected),
            }
        )
        if self.handshake_s.count:
            values["tls_handshake_duration"] = self.handshake_s.mean()
        return values

