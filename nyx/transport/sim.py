"""`SimTransport`: many nodes in one process over a simulated network, on the real loop clock.

`SimNetwork` is the asyncio shell around `SimModel`: it keeps a heap of packets in flight and one
timer armed for the earliest, so a 150-node network costs one timer, not one per packet. Every
node gets a `SimTransport` with the same interface as `QuicTransport`.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass

from nyx.transport.base import (
    LinkStats,
    OversizeError,
    PeerAddress,
    PeerId,
    Transport,
    TransportClosedError,
    UnknownPeerError,
)
from nyx.transport.simnet import Fate, LinkProfile, SimModel

log = logging.getLogger(__name__)

DEFAULT_MAX_PACKET_BYTES = 1170
"""Same as one aioquic DATAGRAM on a 1,200-byte UDP payload, so code tuned on the sim fits QUIC."""


@dataclass(frozen=True, slots=True)
class Transmission:
    """One packet put on a simulated link, as a wire tap sees it: who sent it to whom, its size,
    when it left, its fate, and when it arrives (`arrives_at` is `sent_at` unless the fate is
    DELIVER). Not its bytes: a tap models someone watching links (a global passive adversary in
    `nyx.bench.anonymity`), who sees sizes and times, not what only the endpoints can read."""

    src: PeerId
    dst: PeerId
    size_bytes: int
    sent_at: float
    fate: Fate
    arrives_at: float


class SimNetwork:
    """The in-memory network: create it inside a running loop, attach nodes, `await close()` at
    the end. `add_tap(callback)` shows every packet offered to any link (a `Transmission`) to
    `callback` as it is sent, so a measurement can observe the whole network without touching
    the nodes."""

    def __init__(
        self,
        default: LinkProfile | None = None,
        region_latency_s: dict[tuple[str, str], float] | None = None,
        seed: int = 0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.model = SimModel(default or LinkProfile(), dict(region_latency_s or {}), seed)
        self._loop = asyncio.get_running_loop()
        self._clock = clock or self._loop.time
        self._heap: list[tuple[float, int, PeerId, PeerId, bytes, float]] = []
        self._seq = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")
        self._nodes: dict[PeerId, SimTransport] = {}
        self.fates: dict[Fate, int] = {fate: 0 for fate in Fate}
        self._taps: list[Callable[[Transmission], None]] = []

    def add_tap(self, callback: Callable[[Transmission], None]) -> None:
        """Call `callback(Transmission)` for every packet offered to a link from now on, in send
        order, whatever its fate (a lost packet was still on the wire). The callback runs inside
        `send`: keep it cheap and let it not raise."""
        self._taps.append(callback)

    def remove_tap(self, callback: Callable[[Transmission], None]) -> None:
        self._taps.remove(callback)

    def now(self) -> float:
        return self._clock()

    def transport(
        self, node_id: PeerId, region: str | None = None) -> SimTransport:
        """Attach a node; its transport delivers once it `listen()`s."""
        if node_id in self._nodes:
            raise ValueError(f"node {node_id!r} is already on this network")
        node = SimTransport(self, node_id, region)
        self._nodes[node_id] = node
        self.model.add_node(node_id, region)
        return node

    def _detach(self, node_id: PeerId) -> None:
        self._nodes.pop(node_id, None)
        self.model.regions.pop(node_id, None)

    def in_flight(self) -> int:
        return len(self._heap)

    def _offer(self, src: PeerId, dst: PeerId, packet: bytes) -> Fate:
        now = self._clock()
        fate, deliver_at = self.model.offer(src, dst, len(packet), now)
        self.fates[fate] += 1
        if self._taps:
            seen = Transmission(src, dst, len(packet), now, fate, deliver_at)
            for tap in self._taps:
                tap(seen)
        if fate is Fate.DELIVER:
            heapq.heappush(self._heap, (deliver_at, next(self._seq), src, dst, packet, now))
            if deliver_at < self._timer_at:
                self._arm(deliver_at)
        return fate

    def _arm(self, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        self._timer = self._loop.call_later(max(0.0, at - self._clock()), self._deliver_due)

    def _deliver_due(self) -> None:
        self._timer = None
        self._timer_at = float("inf")
        now = self._clock()
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, src, dst, packet, sent_at = heapq.heappop(heap)
            node = self._nodes.get(dst)
            if node is None or dst in self.model.failed_nodes:
                self.fates[Fate.FAILED] += 1
                continue
            node._deliver(src, packet, now - sent_at)
        if heap:
            self._arm(heap[0][0])

    async def close(self) -> None:
        """Close every transport still attached, cancel the delivery timer and forget packets in
        flight. Idempotent. A coroutine like `Transport.close`, so whoever owns a network and its
        nodes shuts both down the same way (`await`), and a network can close its nodes."""
        for node in list(self._nodes.values()):
            await node.close()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._timer_at = float("inf")
        self._heap.clear()


class SimTransport(Transport):
    """One node on a `SimNetwork`. Its per-peer send queue is the simulated wire's queue
    (`LinkProfile.queue_bytes` at `bandwidth_bps`); overflow is a counted drop.

    Who can be sent to. The network is the sim's directory: any node attached to it can be sent
    to by id without `add_peer` (tests and simulations rely on this), so a gateway reaches a
    client that contacted it, as over QUIC (where the packets go back on the client's inbound
    connection), and a client whose transport closed is an `UnknownPeerError` there as here.
    What QUIC does that the sim does not: refuse a non-directory peer that never contacted us,
    and let a second live transport take an id (here `SimNetwork.transport` refuses a duplicate,
    so a reconnecting client closes its old transport first). Matched for a gateway's per-source
    limit: `inbound_source` is `("sim/<peer>", 0)` for a live peer that has sent to us, and
    `close_inbound` sheds such a peer (not in our directory) until it sends to us again; the
    peer itself notices nothing, having no connection to lose.
    """

    def __init__(self, network: SimNetwork, node_id: PeerId, region: str | None) -> None:
        super().__init__()
        self.network = network
        self.node_id = node_id
        self.region = region
        self.max_packet_bytes = DEFAULT_MAX_PACKET_BYTES
        self._listening = False
        self._closed = False
        self._peers: dict[PeerId, PeerAddress] = {}
        self._stats: dict[PeerId, LinkStats] = {}
        self._delay_sum_s: dict[PeerId, float] = {}
        self._contacts: dict[PeerId, SimTransport | None] = {}  # who sent to us, as which transport
        self._shed: set[PeerId] = set()  # closed with `close_inbound`, until they send again
        self.handler_errors = 0
        self.unhandled = 0

    async def listen(self) -> PeerAddress:
        self._check_open()
        self._listening = True
        return PeerAddress(host="sim", port=0, region=self.region)

    def add_peer(self, peer: PeerId, address: PeerAddress | None = None) -> None:
        self._peers[peer] = address or PeerAddress(host="sim")

    async def connect(self, peer: PeerId) -> None:
        self._check_open()
        if peer not in self.network._nodes:
            raise ConnectionError(f"{self.node_id}: peer {peer!r} is not on the simulated network")
        self._peers.setdefault(peer, PeerAddress(host="sim"))

    def _stats_for(self, peer: PeerId) -> LinkStats:
        stats = self._stats.get(peer)
        if stats is None:
            stats = self._stats[peer] = LinkStats()
        return stats

    def send(self, peer: PeerId, packet: bytes) -> bool:
        self._check_send(peer, packet)
        stats = self._stats_for(peer)
        fate = self.network._offer(self.node_id, peer, packet)
        if fate is Fate.QUEUE_FULL:
            stats.dropped += 1
            return False
        stats.sent += 1
        stats.bytes_sent += len(packet)
        if fate is not Fate.DELIVER:
            stats.lost += 1
        return True

    def send_if_room(self, peer: PeerId, packet: bytes) -> bool:
        self._check_send(peer, packet)
        if not self.network.model.has_room(self.node_id, peer, len(packet), self.network.now()):
            return False
        return self.send(peer, packet)

    async def wait_writable(self, peer: PeerId) -> None:
        # The wire drains at its bandwidth; wait for about one packet time on the loop clock.
        profile = self.network.model.profile(self.node_id, peer)
        pause_s = 1200 * 8 / profile.bandwidth_bps if profile.bandwidth_bps else 0.0
        await asyncio.sleep(pause_s)

    def _check_send(self, peer: PeerId, packet: bytes) -> None:
        self._check_open()
        if len(packet) > self.max_packet_bytes:
            raise OversizeError(
                f"packet of {len(packet)} bytes exceeds one datagram ({self.max_packet_bytes} bytes)"
            )
        if peer not in self._peers and (peer not in self.network._nodes or peer in self._shed):
            raise UnknownPeerError(peer)

    def _live_contact(self, peer: PeerId) -> SimTransport | None:
        node = self.network._nodes.get(peer)
        if node is None or self._contacts.get(peer) is not node or peer in self._shed:
            return None
        return node

    def inbound_source(self, peer: PeerId) -> tuple[str, int] | None:
        """A stand-in source address per node (`("sim/<peer>", 0)`) for a live peer that has sent
        to us, so a per-source limit sees one source per simulated client."""
        return (f"sim/{peer}", 0) if self._live_contact(peer) is not None else None

    def close_inbound(self, peer: PeerId, reason: str) -> bool:
        """Shed a live peer that has sent to us: unless it is in our directory (`add_peer`),
        sends to it raise UnknownPeerError until it sends to us again, as after QUIC's close."""
        if self._live_contact(peer) is None:
            return False
        log.debug("%s: shed %s (%s)", self.node_id, peer, reason)
        self._shed.add(peer)
        return True

    def _deliver(self, src: PeerId, packet: bytes, delay_s: float) -> None:
        sender = self.network._nodes.get(src)
        if self._contacts.get(src) is not sender:
            self._contacts[src] = sender
        if self._shed and sender is not None:
            self._shed.discard(src)
        stats = self._stats_for(src)
        stats.received += 1
        stats.bytes_received += len(packet)
        self._delay_sum_s[src] = self._delay_sum_s.get(src, 0.0) + delay_s
        handler = self._handler
        if handler is None or not self._listening:
            self.unhandled += 1
            return
        try:
            handler(src, packet)
        except Exception:  # a bad handler must not stall the network for every other node
            self.handler_errors += 1
            log.exception("%s: packet handler failed on a packet from %s", self.node_id, src)

    def mean_delay_s(self, peer: PeerId) -> float | None:
        """Mean observed one-way delay of packets received from `peer`."""
        stats = self._stats.get(peer)
        if stats is None or not stats.received:
            return None
        return self._delay_sum_s[peer] / stats.received

    def stats(self, peer: PeerId) -> LinkStats:
        stats = self._stats.get(peer, LinkStats())
        there = self.mean_delay_s(peer)
        back = None
        other = self.network._nodes.get(peer)
        if other is not None:
            back = other.mean_delay_s(self.node_id)
        if there is not None or back is not None:
            stats.rtt_s = (there if there is not None else back) + (back if back is not None else there)  # type: ignore[operator]
        return stats

    def peers(self) -> list[PeerId]:
        return list(self._stats)

    def _check_open(self) -> None:
        if self._closed:
            raise TransportClosedError(f"{self.node_id}: transport is closed")

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.network._detach(self.node_id)
