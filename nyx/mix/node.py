"""`MixNode`: the asyncio shell around `MixCore`. It owns the timer and the transport handler;
all protocol decisions are the core's.

- Receive: the transport calls `_on_packet` for every packet; the core processes it at once
  (one hop is ~40 us, less than a loop iteration of a QUIC receive), and a `Forward` is put in
  the delay heap (or the current batch).
- Forward: one `TimerHandle` armed for the earliest departure; it sends everything due and
  re-arms. No task and no `call_later` per packet.
- Deliver (this node is the packet's last hop): `on_deliver` if given (an in-process gateway),
  else a delivery datagram (`encode_delivery`) to the destination over the transport.
- Drain (SIGTERM): stop accepting, then send every held packet now, waiting for queue room
  rather than dropping: a rolling restart loses nothing.
- Keys: the ring is rotated every `rotate_interval_s`; `on_rotate` (e.g. save to disk) is told.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable

from nyx.mix.core import DROP_REASONS, Deliver, Forward, MixCore
from nyx.mix.delay import BatchQueue, DelayQueue
from nyx.transport.base import OversizeError, Transport, TransportClosedError, TransportError, UnknownPeerError

log = logging.getLogger(__name__)

DELIVERY_MESSAGE = 0x02
DELIVERY_SURB = 0x03
# Every reason the node (not the core) drops a packet: each send failure has its own, since each
# asks the operator for a different fix.
NODE_DROP_REASONS = (
    "draining",  # received after the drain began
    "queue_full",  # the peer's bounded send queue is full (over QUIC also: the link is down and
    #                its queue filled while it reconnects)
    "unknown_peer",  # no directory record for the next hop or destination
    "oversize",  # larger than one datagram of this transport
    "transport_closed",  # sent after the transport closed (a node shutting down)
    "transport_error",  # any other TransportError a transport may add
)
_SEND_ERRORS: tuple[tuple[type[TransportError], str], ...] = (
    (UnknownPeerError, "unknown_peer"),
    (OversizeError, "oversize"),
    (TransportClosedError, "transport_closed"),
)


def send_failure_reason(exc: TransportError) -> str:
    """The drop reason (one of NODE_DROP_REASONS) for a send that raised `exc`."""
    for kind, reason in _SEND_ERRORS:
        if isinstance(exc, kind):
            return reason
    return "transport_error"
_EARLY_S = 0.001  # release up to 1 ms early: loop clocks (uvloop) have 1 ms resolution


def encode_delivery(event: Deliver) -> bytes:
    """The datagram a last hop sends to the destination: 0x02 | message, or, for a reply on a
    SURB, 0x03 | surb id (16) | body. Always shorter than a Sphinx packet, so an endpoint that
    also receives packets tells the two apart by size."""
    if event.surb_id is None:
        return bytes((DELIVERY_MESSAGE,)) + event.payload
    return bytes((DELIVERY_SURB,)) + event.surb_id + event.payload


def decode_delivery(datagram: bytes) -> tuple[bytes | None, bytes]:
    """(surb id or None, payload) of a delivery datagram; ValueError if it is not one."""
    if datagram[:1] == bytes((DELIVERY_MESSAGE,)):
        return None, datagram[1:]
    if datagram[:1] == bytes((DELIVERY_SURB,)) and len(datagram) >= 17:
        return datagram[1:17], datagram[17:]
    raise ValueError("not a mix delivery datagram (kind byte 0x02 or 0x03)")


class MixNode:
    """A mix on a `Transport`. `await run()` serves until cancelled; `await drain()` first for a
    graceful stop. `clock` is the wall clock the key epochs are defined on."""

    def __init__(
        self,
        core: MixCore,
        transport: Transport,
        *,
        batch: BatchQueue[Forward] | None = None,
        on_deliver: Callable[[Deliver], None] | None = None,
        on_rotate: Callable[[list[int]], None] | None = None,
        rotate_interval_s: float = 10.0,
        clock: Callable[[], float] = time.time,
        install_handler: bool = True,
        forward_to: Callable[[str], bool] | None = None,
    ) -> None:
        """`install_handler=False`: `run()` leaves the transport's handler alone, for an owner
        (a gateway) that looks at every packet first and passes mix packets to `receive`.
        `forward_to(next_hop)`: whether a Forward may go to that peer (a gateway allows only
        directory nodes: its transport can also reach its clients, and a packet built to name a
        client as its next hop must not turn the gateway into a relay to that client)."""
        self.forward_to = forward_to
        self.core = core
        self.install_handler = install_handler
        self.transport = transport
        self.batch = batch
        self.queue: DelayQueue[Forward] = DelayQueue()
        self.on_deliver = on_deliver
        self.on_rotate = on_rotate
        self.rotate_interval_s = rotate_interval_s
        self.clock = clock
        self.accepting = True
        self.received = 0
        self.sent = 0
        self.delivered = 0
        self.node_drops: Counter[str] = Counter()
        self.key_reload_s = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")

    # -- receive ---------------------------------------------------------------------------

    def receive(self, peer: str, packet: bytes) -> None:
        """One packet from `peer`: process it now (the transport handler, or an owner's)."""
        self._on_packet(peer, packet)

    def _on_packet(self, peer: str, packet: bytes) -> None:
        self.received += 1
        if not self.accepting:
            self.node_drops["draining"] += 1
            return
        event = self.core.process(packet, self.clock())
        if isinstance(event, Forward):
            if self.forward_to is not None and not self.forward_to(event.next_hop):
                self.node_drops["unknown_peer"] += 1
                return
            loop = self._loop or asyncio.get_running_loop()
            if self.batch is not None:
                self.batch.push(loop.time(), event)
                due = self.batch.next_due()
            else:
                self.queue.push(loop.time() + event.delay_s, event)
                due = self.queue.next_due()
            if due is not None and due < self._timer_at:
                self._arm(due)
        elif isinstance(event, Deliver):
            self._deliver(event)
        # a Drop is already counted by the core, by reason

    def _deliver(self, event: Deliver) -> None:
        self.delivered += 1
        if self.on_deliver is not None:
            self.on_deliver(event)
        else:
            self._send(event.destination, encode_delivery(event))

    # -- forward ---------------------------------------------------------------------------

    def _arm(self, due: float) -> None:
        loop = self._loop or asyncio.get_running_loop()
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = due
        self._timer = loop.call_at(due, self._release)

    def _release(self) -> None:
        self._timer, self._timer_at = None, float("inf")
        loop = self._loop or asyncio.get_running_loop()
        holder = self.batch if self.batch is not None else self.queue
        for event in holder.pop_due(loop.time() + _EARLY_S):
            self._send(event.next_hop, event.packet)
        due = holder.next_due()
        if due is not None:
            self._arm(due)

    def _send(self, peer: str, packet: bytes) -> None:
        try:
            if self.transport.send(peer, packet):
                self.sent += 1
            else:
                self.node_drops["queue_full"] += 1
        except TransportError as exc:
            self.node_drops[send_failure_reason(exc)] += 1
            log.debug("cannot send to %s: %s", peer, exc)

    # -- lifecycle -------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve until cancelled: receive through the transport, forward on the timer, rotate
        keys periodically."""
        self._loop = asyncio.get_running_loop()
        if self.install_handler:
            self.transport.set_handler(self._on_packet)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._rotate_loop(), name="mix-key-rotation")
        finally:
            if self._timer is not None:
                self._timer.cancel()
                self._timer, self._timer_at = None, float("inf")

    async def _rotate_loop(self) -> None:
        while True:
            await asyncio.sleep(self.rotate_interval_s)
            self.rotate()

    def rotate(self) -> list[int]:
        started = time.perf_counter()
        before = set(self.core.keyring.keys)
        retired = self.core.rotate(self.clock())
        if set(self.core.keyring.keys) != before:
            self.key_reload_s = time.perf_counter() - started
            log.info("mix keys rotated: epochs %s, retired %s", sorted(self.core.keyring.keys), retired)
            if self.on_rotate is not None:
                self.on_rotate(retired)
        return retired

    async def drain(self) -> None:
        """Stop accepting and send every held packet now, waiting for room instead of dropping."""
        self.accepting = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer, self._timer_at = None, float("inf")
        held = self.queue.drain() + (self.batch.drain() if self.batch is not None else [])
        log.info("draining: flushing %d held packets", len(held))
        for event in held:
            try:
                await self.transport.send_wait(event.next_hop, event.packet)
                self.sent += 1
            except TransportError as exc:
                self.node_drops[send_failure_reason(exc)] += 1
                log.warning("drain: cannot send to %s: %s", event.next_hop, exc)

    def held(self) -> int:
        return len(self.queue) + (len(self.batch) if self.batch is not None else 0)

    def drop_counts(self) -> dict[str, int]:
        """Every drop reason (the core's and the node's) with its count, zeros included."""
        counts = {reason: self.core.drops[reason] for reason in DROP_REASONS}
        counts.update({reason: self.node_drops[reason] for reason in NODE_DROP_REASONS})
        return counts

