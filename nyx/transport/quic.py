"""`QuicTransport`: packets as QUIC DATAGRAM frames (RFC 9221) over one UDP socket per node.

The layer reads in four parts (see docs/transport.md):

- endpoint.py: the UDP socket, routing by connection ID, inbound admission (half-open budget,
  per-source limit, Retry, the handshake timer);
- driver.py: one QUIC connection fed with datagrams and a clock, its events and its timer;
- supervisor.py (sans-I/O) and outbound.py (its shell): an outbound link connects, pings, gives
  up and reconnects with backoff; its queue is bounded;
- this module: the thin `Transport` facade, configured by a `QuicSettings` value.

A peer with a directory record (`add_peer`) is sent to over its outbound link, always. A peer
without one but with a live inbound connection (a gateway's client, named by its hello) is sent
to over that connection, bounded the same way; anyone else is an `UnknownPeerError`.

The facade owns one task group, scoped with `async with` in a runner task that `listen()` starts
and `close()` ends and awaits: every link task belongs to it, and closing cancels them all.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from nyx.transport.admission import InboundAdmission
from nyx.transport.backends import Backend, load_backend
from nyx.transport.base import (
    LinkStats,
    OversizeError,
    PacketHandler,
    PeerAddress,
    PeerId,
    Transport,
    TransportClosedError,
    UnknownPeerError,
)
from nyx.transport.certs import NodeIdentity, normalize_fingerprint
from nyx.transport.driver import (
    ALPN,
    ConnectFailedError,
    ConnectionDriver,
    ConnectionFactory,
    PeerAuthenticationError,
)
from nyx.transport.endpoint import QuicEndpoint
from nyx.transport.link import LinkPhase
from nyx.transport.outbound import OutboundLink
from nyx.transport.quic_settings import QuicSettings
from nyx.transport.retry import RetryTokens
from nyx.transport.sockbuf import SocketBuffers
from nyx.transport.supervisor import LinkSupervisor
from nyx.transport.tickets import ClientTicketCache, ServerTicketStore

__all__ = ["ALPN", "ConnectFailedError", "PeerAuthenticationError", "QuicSettings", "QuicTransport"]

log = logging.getLogger(__name__)


class QuicTransport(Transport):
    """The real-network `Transport`.

    node_id and identity: this node's directory id and TLS certificate/key. settings: a
    `QuicSettings` (any of its fields may also be given as a keyword, e.g. `queue_packets=8`,
    which replaces that field). client_tickets: the cache of TLS session tickets from peers,
    shareable so that a returning client resumes. clock: the clock fed to QUIC (perf_counter).
    """

    def __init__(
        self,
        node_id: PeerId,
        identity: NodeIdentity,
        settings: QuicSettings | None = None,
        *,
        clock: Callable[[], float] = time.perf_counter,
        client_tickets: ClientTicketCache | None = None,
        **keywords: Any,
    ) -> None:
        super().__init__()
        self.settings = settings = (settings or QuicSettings()).with_keywords(**keywords)
        self.node_id = node_id
        self.identity = identity
        self.backend: Backend = load_backend(settings.backend)
        self.max_packet_bytes = self.backend.max_datagram_payload
        self.host, self.port = settings.host, settings.port
        self._clock = clock
        self.client_tickets = client_tickets if client_tickets is not None else ClientTicketCache()
        factory = ConnectionFactory(self.backend, identity, settings.idle_timeout_s, settings.resumption,
                                    self.client_tickets)
        self._endpoint = QuicEndpoint(node_id, self.backend, factory, settings.admission, clock,
                                      settings.queue_packets)
        self._addresses: dict[PeerId, PeerAddress] = {}
        self._links: dict[PeerId, OutboundLink] = {}
        self._tg: asyncio.TaskGroup | None = None
        self._runner: asyncio.Task[None] | None = None
        self._stopping: asyncio.Event | None = None
        self._closing = False
        self._listening = False
        self.silent_peers = 0

    # -- lifecycle -------------------------------------------------------------------------

    async def listen(self) -> PeerAddress:
        if self._closing:
            raise TransportClosedError(f"{self.node_id}: transport is closed")
        if self._listening:
            return self.address
        self.host, self.port = await self._endpoint.open(self.host, self.port, self.settings.socket_buffer_bytes)
        self._stopping = asyncio.Event()
        started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._runner = asyncio.create_task(self._run(started), name=f"{self.node_id}:transport")
        await started
        self._listening = True
        return self.address

    async def _run(self, started: asyncio.Future[None]) -> None:
        """Own every task of this transport until `close()`; cancelling them is the shutdown."""
        assert self._stopping is not None
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                started.set_result(None)
                await self._stopping.wait()
                for link in self._links.values():
                    if link.task is not None:
                        link.task.cancel()
        except Exception:  # a bug in a link task: say so now, not at close
            log.exception("%s: a transport task failed; the transport no longer sends", self.node_id)
            for link in self._links.values():
                link.fail_waiters(self.node_id)
            raise
        finally:
            self._tg = None

    @property
    def address(self) -> PeerAddress:
        """Where peers reach this node, with the fingerprint they must pin."""
        return PeerAddress(self.host, self.port, self.identity.fingerprint)

    async def drain(self, timeout_s: float = 5.0) -> bool:
        """Wait until every queued packet has left (or `timeout_s`); True if all left."""
        deadline = self._clock() + timeout_s
        pending = self.backend.pending_datagrams
        while self._clock() < deadline:
            if not any(link.pending() for link in self._links.values()) and not any(
                driver.handed or pending(driver.quic) for driver in self._endpoint.by_label.values()
            ):
                return True
            await asyncio.sleep(0.01)
        return False

    async def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._endpoint.close_all()
        for link in self._links.values():
            link.fail_waiters(self.node_id)
        if self._stopping is not None:
            self._stopping.set()
        if self._runner is not None:
            try:
                await self._runner
            except Exception:  # pragma: no cover - a supervisor bug, logged when it happened
                pass

    # -- peers and links -------------------------------------------------------------------

    def set_handler(self, handler: PacketHandler | None) -> None:
        super().set_handler(handler)
        self._endpoint.handler = handler

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

    def _link(self, peer: PeerId) -> OutboundLink:
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
        supervisor = LinkSupervisor(self.settings.link_timers)
        link = OutboundLink(peer, address, self.settings.queue_packets, supervisor, self, self._clock)
        self._links[peer] = link
        link.task = self._tg.create_task(link.run(), name=f"{self.node_id}->{peer}")
        return link

    def open_connection(self, link: OutboundLink) -> ConnectionDriver:
        return self._endpoint.open_outbound(link.peer, link.address, link.stats, link)

    def mark_dirty(self, driver: ConnectionDriver) -> None:
        self._endpoint.mark_dirty(driver)

    async def connect(self, peer: PeerId) -> None:
        link = self._link(peer)
        if link.conn is not None:
            return
        waiter = asyncio.get_running_loop().create_future()
        link.waiters.append(waiter)
        link.want()
        await waiter

    # -- sending ---------------------------------------------------------------------------

    def send(self, peer: PeerId, packet: bytes) -> bool:
        link = self._links.get(peer)
        if link is None:
            if peer not in self._addresses:
                driver = self._inbound(peer)
                self._check(packet)
                if self._endpoint.send_inbound(driver, packet):
                    return True
                driver.stats.dropped += 1
                return False
            link = self._link(peer)
        self._check(packet)
        if link.offer(packet):
            return True
        link.stats.dropped += 1
        return False

    def send_if_room(self, peer: PeerId, packet: bytes) -> bool:
        link = self._links.get(peer)
        if link is None:
            if peer not in self._addresses:
                driver = self._inbound(peer)
                self._check(packet)
                return self._endpoint.send_inbound(driver, packet)
            link = self._link(peer)
        self._check(packet)
        return link.offer(packet)

    def _inbound(self, peer: PeerId) -> ConnectionDriver:
        """The live inbound connection that `peer` (no directory record) named itself on."""
        if self._closing:
            raise TransportClosedError(f"{self.node_id}: transport is closed")
        if not self._listening:
            raise TransportClosedError(f"{self.node_id}: call listen() before sending")
        driver = self._endpoint.by_label.get(peer)
        if driver is None:
            raise UnknownPeerError(
                f"{self.node_id}: no directory record for peer {peer!r} and no live connection from it"
            )
        return driver

    def _check(self, packet: bytes) -> None:
        if len(packet) > self.max_packet_bytes:
            raise OversizeError(
                f"packet of {len(packet)} bytes exceeds one QUIC DATAGRAM ({self.max_packet_bytes} bytes)"
            )
        if self._closing:
            raise TransportClosedError(f"{self.node_id}: transport is closed")

    async def wait_writable(self, peer: PeerId) -> None:
        link = self._links.get(peer)
        if link is not None or peer in self._addresses:
            await (link or self._link(peer)).wait_writable()
            return
        while True:  # the connection may end, or a newer one take the label, while we wait
            driver = self._inbound(peer)
            if self._endpoint.has_room(driver):
                return
            if driver.room is None:
                driver.room = asyncio.Event()
            driver.room.clear()
            await driver.room.wait()

    # -- a gateway's clients: the inbound connection behind a label --------------------------

    def inbound_source(self, peer: PeerId) -> tuple[str, int] | None:
        """The UDP source address the live inbound connection labelled `peer` was accepted from
        (its handshake validated it), for a per-source limit; None if there is none."""
        driver = self._endpoint.by_label.get(peer)
        return (driver.addr[0], driver.addr[1]) if driver is not None else None  # IPv6: 4 fields

    def close_inbound(self, peer: PeerId, reason: str) -> bool:
        """Close the live inbound connection labelled `peer` with a CONNECTION_CLOSE carrying
        `reason`; sends to `peer` raise UnknownPeerError until it connects again. True if there
        was one."""
        return self._endpoint.close_inbound(peer, reason)

    # -- statistics ------------------------------------------------------------------------

    def stats(self, peer: PeerId) -> LinkStats:
        out = self._links.get(peer)
        inn = self._endpoint.stats_in.get(peer)
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
        elif (driver := self._endpoint.by_label.get(peer)) is not None:
            merged.rtt_s = self.backend.smoothed_rtt(driver.quic)
        return merged

    def peers(self) -> list[PeerId]:
        return sorted(set(self._links) | set(self._endpoint.stats_in))

    def link_phase(self, peer: PeerId) -> LinkPhase:
        link = self._links.get(peer)
        return link.supervisor.phase if link is not None else LinkPhase.DOWN

    def metric_values(self) -> dict[str, float]:
        endpoint, admission = self._endpoint, self._endpoint.admission
        values = super().metric_values()
        values.update(
            {
                "transport_handshakes_total": float(endpoint.handshakes),
                "transport_handshakes_resumed_total": float(endpoint.handshakes_resumed),
                "transport_auth_failures_total": float(endpoint.auth_failures),
                "transport_unroutable_total": float(endpoint.unroutable),
                "transport_links_up": float(sum(1 for link in self._links.values() if link.conn is not None)),
                "transport_inbound_connections": float(len(endpoint.inbound)),
                "transport_inbound_half_open": float(admission.half_open),
                "transport_inbound_refused_total": float(endpoint.inbound_refused),
                "transport_half_open_evicted_total": float(admission.evicted_full),
                "transport_half_open_source_evicted_total": float(admission.evicted_source),
                "transport_half_open_expired_total": float(admission.expired),
                "transport_retry_sent_total": float(admission.retries),
                "transport_retry_token_rejected_total": float(endpoint.retry_tokens.rejected),
            }
        )
        if endpoint.handshake_s.count:
            values["tls_handshake_duration"] = endpoint.handshake_s.mean()
        return values

    # -- the endpoint's counters and policy objects, read by operators and tests -------------

    @property
    def endpoint(self) -> QuicEndpoint:
        return self._endpoint

    @property
    def admission(self) -> InboundAdmission[ConnectionDriver]:
        return self._endpoint.admission

    @property
    def socket_buffers(self) -> SocketBuffers | None:
        """The UDP buffers asked of the kernel and granted (None before `listen`); sockbuf.py."""
        return self._endpoint.socket_buffers

    @property
    def retry_tokens(self) -> RetryTokens:
        return self._endpoint.retry_tokens

    @property
    def server_tickets(self) -> ServerTicketStore:
        return self._endpoint.factory.server_tickets

    @property
    def max_inbound(self) -> int:
        return self.settings.admission.max_established


def _counter(name: str) -> property:
    return property(lambda self: getattr(self._endpoint, name), doc=f"The endpoint's `{name}` counter.")


for _name in ("socket_errors", "udp_sent", "udp_received", "unroutable", "handler_errors", "unhandled",
              "inbound_refused", "auth_failures", "handshakes", "handshakes_resumed", "backend_errors",
              "handshake_s"):
    setattr(QuicTransport, _name, _counter(_name))
