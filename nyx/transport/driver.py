"""The connection driver: one QUIC connection fed with datagrams and a clock.

The backend's `QuicConnection` is sans-I/O; a `ConnectionDriver` is the little that drives one:
it feeds received datagrams in, drains the events out (DATAGRAM frames, the peer's hello, the
handshake, connection IDs, termination), transmits what the connection wants sent and arms its
one timer. What the events mean for the node (routing, admission, links, the packet handler) is
the endpoint's business: the driver reports them to its `ConnectionEvents`.

The clock is `time.perf_counter` (or the transport's clock) for every backend and loop: uvloop's
`loop.time()` has 1 ms resolution, which breaks aioquic's RTT estimate and pacing, so timers are
converted to `loop.call_later` delays and the loop clock is never fed to QUIC.

`ConnectionFactory` builds the backend connections: TLS configuration, the pinned certificate of
the peer for outbound ones, session tickets.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from nyx.transport.backends import Backend
from nyx.transport.base import LinkStats, PeerAddress, PeerId
from nyx.transport.certs import NodeIdentity
from nyx.transport.tickets import ClientTicketCache, ServerTicketStore
from nyx.transport.udp_batch import address_runs

if TYPE_CHECKING:
    from nyx.transport.outbound import OutboundLink

ALPN = "nyx/1"
UDP_PAYLOAD_BYTES = 1200  # QUIC's default; fits a 1,280-byte IPv6 MTU path
CID_LENGTH = 8
HELLO_STREAM_ID = 0
MAX_HELLO_BYTES = 128


class PeerAuthenticationError(ConnectionError):
    """The peer's certificate did not match its directory record; the link was refused."""


class ConnectFailedError(ConnectionError):
    """The link could not be established (no answer, refused, or closed during the handshake)."""


class ConnectionEvents(Protocol):
    """What a driver reports (implemented by the endpoint)."""

    def mark_dirty(self, driver: ConnectionDriver) -> None: ...
    def register_cid(self, driver: ConnectionDriver, cid: bytes) -> None: ...
    def retire_cid(self, driver: ConnectionDriver, cid: bytes) -> None: ...
    def deliver(self, driver: ConnectionDriver, packet: bytes) -> None: ...
    def label_inbound(self, driver: ConnectionDriver, label: str) -> None: ...
    def handshake_completed(self, driver: ConnectionDriver, resumed: bool) -> None: ...
    def terminated(self, driver: ConnectionDriver) -> None: ...
    def backend_error(self, driver: ConnectionDriver, exc: Exception) -> None: ...


class ConnectionDriver:
    """One QUIC connection on the shared socket (either direction)."""

    __slots__ = (
        "quic", "addr", "outbound", "peer", "stats", "link", "cids", "events", "backend", "clock", "loop",
        "timer", "timer_at", "close_reason", "failure", "hello", "last_received", "last_sent", "opened_at",
        "backend_errors", "handshake_done", "handshake_at", "ended", "closing", "label", "handed",
        "handed_bytes", "room",
    )

    def __init__(
        self,
        quic: Any,
        addr: tuple[str, int],
        *,
        outbound: bool,
        peer: PeerId,
        stats: LinkStats,
        events: ConnectionEvents,
        backend: Backend,
        clock: Callable[[], float],
        loop: asyncio.AbstractEventLoop,
        link: OutboundLink | None = None,
    ) -> None:
        self.quic = quic
        self.addr = addr
        self.outbound = outbound
        self.peer = peer
        self.stats = stats
        self.link = link
        self.cids: set[bytes] = set()
        self.events = events
        self.backend = backend
        self.clock = clock
        self.loop = loop
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at: float | None = None
        self.close_reason = ""
        self.failure: ConnectionError | None = None  # why the handshake failed, once it has
        self.hello = bytearray()
        self.last_received = 0.0  # clock of the last UDP datagram from the peer
        self.last_sent = 0.0  # clock of the last UDP datagram to the peer
        self.opened_at = clock()
        self.backend_errors = 0
        self.handshake_done = False
        self.handshake_at = 0.0
        self.ended = False
        self.closing = False  # we asked the backend to close it: nothing more is sent on it
        # Inbound only: the name the peer claimed in its hello, and what sending back to it has
        # handed to the backend since its last transmit (bounded like an outbound link's).
        self.label: PeerId | None = None
        self.handed = 0
        self.handed_bytes = 0
        self.room: asyncio.Event | None = None  # set after each transmit, for `wait_writable`

    # -- input -------------------------------------------------------------------------------

    def connect(self) -> None:
        """Start the client handshake (outbound connections)."""
        self.quic.connect(self.addr, now=self.opened_at)
        self.process_events()

    def receive(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            self.last_received = now = self.clock()
            self.quic.receive_datagram(data, addr, now=now)
        except Exception as exc:  # a backend bug on hostile input must not take the node down
            self.events.backend_error(self, exc)
            return
        self._received()

    def receive_many(self, datagrams: list[bytes], addr: tuple[str, int]) -> None:
        """A burst of datagrams for this connection in one backend call (qh3's
        `receive_many_datagrams`); events and the transmit are then handled once for all."""
        if len(datagrams) == 1:
            self.receive(datagrams[0], addr)
            return
        try:
            self.last_received = now = self.clock()
            self.quic.receive_many_datagrams(datagrams, addr, now=now)
        except Exception as exc:  # as in `receive`: counted, the connection goes on
            self.events.backend_error(self, exc)
            return
        self._received()

    def _received(self) -> None:
        self.process_events()
        self.events.mark_dirty(self)
        link = self.link
        if link is not None and link.waiters:
            link.wake.set()  # the datagram that confirms the handshake releases `connect`

    @property
    def confirmed(self) -> bool:
        """Outbound: the handshake completed and a datagram from the server arrived after it,
        the flight that carries HANDSHAKE_DONE (and a session ticket, when resumption is on)."""
        return self.handshake_done and self.last_received > self.handshake_at

    def close(self, reason: str) -> None:
        """Close with a CONNECTION_CLOSE (sent at the next flush); termination follows."""
        self.closing = True
        try:
            self.quic.close(error_code=0, reason_phrase=reason)
        except Exception:  # already closed
            pass
        self.events.mark_dirty(self)

    def ping(self, uid: int) -> None:
        self.quic.send_ping(uid)
        self.events.mark_dirty(self)

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    # -- output ------------------------------------------------------------------------------

    def transmit(self, udp: asyncio.DatagramTransport) -> int:
        """Send what the connection has to send; re-arm its timer. Returns datagrams sent."""
        now = self.clock()
        try:
            datagrams = self.quic.datagrams_to_send(now=now)
        except Exception as exc:  # a backend bug must cost this connection a turn, not the node
            self.events.backend_error(self, exc)
            datagrams = []
        send_many = getattr(udp, "sendto_many", None)
        if send_many is not None:  # one sendmsg (GSO) per run to one address: nearly always all
            for addr, run in address_runs(datagrams):
                send_many(run, addr)
        else:
            for data, addr in datagrams:
                udp.sendto(data, addr)
        sent = len(datagrams)
        if sent:
            self.last_sent = now
        timer_at = self.quic.get_timer()
        if self.timer is not None and self.timer_at != timer_at:
            self.timer.cancel()
            self.timer = None
        if self.timer is None and timer_at is not None and not self.ended:
            self.timer = self.loop.call_later(max(0.0, timer_at - now), self._on_timer)
        self.timer_at = timer_at
        return sent

    def _on_timer(self) -> None:
        self.timer = None
        now = max(self.clock(), self.timer_at or 0.0)
        self.timer_at = None
        try:
            self.quic.handle_timer(now=now)
        except Exception as exc:
            self.events.backend_error(self, exc)
        self.process_events()
        self.events.mark_dirty(self)

    # -- events ------------------------------------------------------------------------------

    def process_events(self) -> None:
        ev = self.backend.events
        datagram_cls = ev.DatagramFrameReceived
        events = self.events
        quic = self.quic
        event = quic.next_event()
        while event is not None:
            cls = type(event)
            if cls is datagram_cls:
                events.deliver(self, event.data)
            elif cls is ev.StreamDataReceived:
                self._on_stream(event)
            elif cls is ev.HandshakeCompleted:
                self._on_handshake(event)
            elif cls is ev.ConnectionIdIssued:
                events.register_cid(self, event.connection_id)
            elif cls is ev.ConnectionIdRetired:
                events.retire_cid(self, event.connection_id)
            elif cls is ev.ConnectionTerminated:
                reason = getattr(event, "reason_phrase", "") or ""
                self.end(f"error {event.error_code:#x}: {reason}" if event.error_code else reason)
            event = quic.next_event()

    def _on_stream(self, event: Any) -> None:
        """Inbound: the peer names itself in a one-line hello on stream 0 (a label for
        statistics and for sending back to it, a claim, not an authenticated identity)."""
        if self.outbound or event.stream_id != HELLO_STREAM_ID:
            return
        if len(self.hello) + len(event.data) > MAX_HELLO_BYTES:
            self.hello.clear()
            return
        self.hello += event.data
        if event.end_stream:
            try:
                label = self.hello.decode("utf-8")
            except UnicodeDecodeError:
                return
            if label.isprintable() and label:
                self.events.label_inbound(self, label)

    def _on_handshake(self, event: Any) -> None:
        if self.outbound and event.alpn_protocol != ALPN:
            self.close(f"ALPN {event.alpn_protocol!r} is not {ALPN}")
            return
        self.handshake_done = True
        self.handshake_at = self.clock()
        self.events.handshake_completed(self, bool(getattr(event, "session_resumed", False)))

    def say_hello(self, node_id: PeerId) -> None:
        """Outbound: name ourselves first, in a packet of its own, so the peer labels our datagrams."""
        quic = self.quic
        quic.send_stream_data(quic.get_next_available_stream_id(), node_id.encode(), end_stream=True)

    def end(self, close_reason: str) -> None:
        """The connection is over (terminated by the backend, or forgotten by us): classify a
        handshake failure, stop the timer and tell the events once."""
        if self.ended:
            return
        self.ended = True
        self.close_reason = close_reason
        self.cancel_timer()
        if not self.handshake_done:
            auth = self.backend.authentication_error(self.quic)
            if auth is not None:
                self.failure = PeerAuthenticationError(f"{self.peer}: {auth}")
            else:
                self.failure = ConnectFailedError(f"{self.peer}: {close_reason or 'closed'}")
        self.events.terminated(self)


class ConnectionFactory:
    """Backend `QuicConnection`s with this node's TLS identity, pins and tickets."""

    def __init__(
        self,
        backend: Backend,
        identity: NodeIdentity,
        idle_timeout_s: float,
        resumption: bool,
        client_tickets: ClientTicketCache,
    ) -> None:
        self.backend = backend
        self.idle_timeout_s = idle_timeout_s
        self.resumption = resumption
        self.server_tickets = ServerTicketStore()
        self.client_tickets = client_tickets
        self._certificate = backend.load_certificate(identity.certificate_pem)
        self._private_key = backend.load_private_key(identity.private_key_pem)
        self._server_config = self.configuration(is_client=False)

    def configuration(self, is_client: bool, server_name: str | None = None) -> Any:
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

    def client(self, peer: PeerId, address: PeerAddress) -> Any:
        """A client connection to `peer` that accepts only the certificate pinned in `address`."""
        config = self.configuration(is_client=True, server_name=peer)
        handler: Callable[[Any], None] | None = None
        if self.resumption:
            # Only a ticket received under this very certificate pin may skip the certificate.
            pin = address.fingerprint or ""
            config.session_ticket = self.client_tickets.take(peer, pin)
            handler = functools.partial(self.client_tickets.store, peer, pin)
        quic = self.backend.connection_class(configuration=config, session_ticket_handler=handler)
        quic.nyx_pin = address.fingerprint
        return quic

    def server(self, original_cid: bytes, retry_cid: bytes | None) -> Any:
        tickets = self.server_tickets if self.resumption else None
        return self.backend.connection_class(
            configuration=self._server_config,
            original_destination_connection_id=original_cid,
            retry_source_connection_id=retry_cid,
            session_ticket_fetcher=tickets.pop if tickets is not None else None,
            session_ticket_handler=tickets.add if tickets is not None else None,
        )
