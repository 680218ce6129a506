"""The `Transport` interface: how every node talks to its neighbours.

Node code (mixes, gateways, clients) is written against this interface only, so the same code runs
over real QUIC sockets (`QuicTransport`) and over an in-memory network (`SimTransport`). The
contract is deliberately datagram-shaped, because Sphinx packets are: a send either enters a
bounded per-peer queue or is dropped and counted; nothing queues without limit, and nothing blocks
the event loop. Senders that want backpressure instead of drops use `send_wait`.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

PeerId = str
"""A node id as it appears in the directory (e.g. "mix-2-07", "gw-3")."""

PacketHandler = Callable[[PeerId, bytes], None]
"""Called once per received packet with the sending peer's id. Must not block; it runs on the
receive path. Exceptions it raises are logged and counted, never propagated into the transport."""


class TransportError(Exception):
    """Base class: something the caller asked of a transport cannot be done."""


class OversizeError(TransportError, ValueError):
    """The packet is larger than one datagram on this transport; the caller must fragment."""


class UnknownPeerError(TransportError, KeyError):
    """No address is known for the peer (add its directory record with `add_peer` first), and no
    live connection from it that packets could go back on."""


class TransportClosedError(TransportError):
    """The transport has been closed; create a new one."""


@dataclass(frozen=True, slots=True)
class PeerAddress:
    """Where a peer is reached and how it proves who it is, as listed in its directory record.

    `fingerprint` is the SHA-256 of the peer's DER certificate (QUIC); `region` places a node in
    a simulated region latency matrix (SimTransport). Each transport ignores what it does not use.
    """

    host: str = ""
    port: int = 0
    fingerprint: str | None = None
    region: str | None = None


@dataclass(slots=True)
class LinkStats:
    """Counters for one peer, in plain attributes so the hot path pays one integer add.

    `dropped` counts packets this node refused to queue (queue overflow, link down with a full
    queue); `lost` counts packets known lost in the network (SimTransport knows; QUIC does not
    report DATAGRAM loss, so it stays 0 there). `rtt_s` is None until measured.
    """

    sent: int = 0
    received: int = 0
    dropped: int = 0
    lost: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    rtt_s: float | None = None
    connects: int = 0

    @property
    def loss_ratio(self) -> float:
        """Share of offered packets that did not leave or did not arrive: (dropped+lost)/offered."""
        offered = self.sent + self.dropped
        return (self.dropped + self.lost) / offered if offered else 0.0


class Transport(abc.ABC):
    """Send packets to peers by id; receive packets from peers through one handler.

    Lifecycle: construct, `await listen()` (or use `async with`), `add_peer()` for each directory
    record, `send()`; `await close()` cancels every task the transport owns and releases sockets.
    Links are opened lazily on first send (or eagerly with `connect`). Graceful shutdown:
    stop producing, `await drain()`, then `await close()`.
    """

    node_id: PeerId
    max_packet_bytes: int

    def __init__(self) -> None:
        self._handler: PacketHandler | None = None

    def set_handler(self, handler: PacketHandler | None) -> None:
        """Install the receive handler. Packets arriving with no handler are counted and dropped."""
        self._handler = handler

    @abc.abstractmethod
    async def listen(self) -> PeerAddress:
        """Start accepting packets; return the address peers should use to reach this node."""

    @abc.abstractmethod
    def add_peer(self, peer: PeerId, address: PeerAddress) -> None:
        """Record (or update) where `peer` is and how to authenticate it."""

    @abc.abstractmethod
    async def connect(self, peer: PeerId) -> None:
        """Open the link to `peer` now and wait until it can carry packets (raises on failure)."""

    @abc.abstractmethod
    def send(self, peer: PeerId, packet: bytes) -> bool:
        """Queue `packet` for `peer`. True if queued; False if dropped (and counted) because the
        peer's bounded queue is full. Raises OversizeError for a packet that cannot fit one
        datagram, UnknownPeerError for a peer with no address and no live connection from it
        (a gateway's client is sent to on the connection it opened), TransportClosedError after
        close."""

    @abc.abstractmethod
    async def wait_writable(self, peer: PeerId) -> None:
        """Return once `peer`'s queue has room (backpressure for senders that must not drop)."""

    async def send_wait(self, peer: PeerId, packet: bytes) -> None:
        """Queue `packet`, waiting for room instead of dropping."""
        while not self.send_if_room(peer, packet):
            await self.wait_writable(peer)

    @abc.abstractmethod
    def send_if_room(self, peer: PeerId, packet: bytes) -> bool:
        """Queue `packet` if `peer`'s queue has room; return False (not counted) otherwise."""

    @abc.abstractmethod
    def stats(self, peer: PeerId) -> LinkStats:
        """Counters for `peer` (a zeroed record for a peer never seen)."""

    @abc.abstractmethod
    def peers(self) -> list[PeerId]:
        """Every peer with counters (sent to or received from)."""

    def inbound_source(self, peer: PeerId) -> tuple[str, int] | None:
        """The network source address of the live connection `peer` opened to us, or None.

        A gateway keys its per-source rate limit on it. The default suits a transport without
        network addresses: there is none."""
        return None

    def close_inbound(self, peer: PeerId, reason: str) -> bool:
        """Close the live connection `peer` opened to us, telling it `reason`; True if there was
        one. A gateway sheds a client this way. The default has no connections: False."""
        return False

    async def drain(self, timeout_s: float = 5.0) -> bool:
        """Wait until every packet this transport accepted has left it (or `timeout_s` passed);
        True if all left. Graceful shutdown is: stop producing, `drain`, then `close`.

        The default suits a transport that holds nothing back: its `send` puts a packet on the
        wire (or drops and counts it) at once, so there is nothing to wait for. A transport with
        its own queues (QuicTransport) overrides it."""
        return True

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop: close links (telling peers), cancel owned tasks, release sockets. Idempotent."""

    def metric_values(self) -> dict[str, float]:
        """Totals over all peers under the telemetry catalogue's transport names."""
        totals = LinkStats()
        for peer in self.peers():
            s = self.stats(peer)
            totals.sent += s.sent
            totals.received += s.received
            totals.dropped += s.dropped
            totals.lost += s.lost
            totals.bytes_sent += s.bytes_sent
            totals.bytes_received += s.bytes_received
        return {
            "transport_packets_sent_total": float(totals.sent),
            "transport_packets_received_total": float(totals.received),
            "transport_packets_dropped_total": float(totals.dropped),
            "transport_bytes_sent_total": float(totals.bytes_sent),
            "transport_bytes_received_total": float(totals.bytes_received),
            "transport_packet_loss": totals.loss_ratio,
            "transport_peers": float(len(self.peers())),
        }

    async def __aenter__(self) -> Transport:
        await self.listen()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
