"""The asyncio shells of cover traffic: `CoverEmitter` for clients, `MixLoopEmitter` for mixes.

Both own exactly one timer (a single `asyncio.sleep` until the core's next deadline, inside a
TaskGroup task) and no protocol logic: the core (`ClientCover`, or a `PoissonSchedule` for mix
loops) decides what to send and when; the shell builds cover packets through a `PacketFactory`
(`MixCoverPackets`: real mix packets) and hands everything to a `Transport`.

Times are the loop's clock (`loop.time()`, monotonic). Cancelling `run()` stops the timer; real
packets still queued are returned by `unsent()` so the owner (the stream layer, which
retransmits) decides, and writers waiting for room get `EmitterStoppedError`.
"""

from __future__ import annotations

import asyncio
import logging
import random

from nyx.cover.client import ClientCover, CoverConfig
from nyx.cover.figures import ComplianceMeter, DriftMeter, LoopTracker
from nyx.cover.packets import CoverPacket, PacketFactory, loop_id_of
from nyx.cover.poisson import PoissonSchedule
from nyx.cover.slots import Kind
from nyx.mix.core import Deliver
from nyx.mix.node import MixNode, encode_delivery
from nyx.transport.base import PeerId, Transport, TransportError

log = logging.getLogger(__name__)

RealPacket = tuple[PeerId, bytes]
"""A real mix packet from the stream layer: (first hop, packet)."""


class EmitterStoppedError(RuntimeError):
    """The cover emitter is not running (stopped, or not started); the packet was not queued."""


class _Sender:
    """Counts and sends; a transport refusal is counted, never raised into the timer."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self.sent = 0
        self.refused = 0
        self.failed = 0
        self.build_failures = 0

    def send(self, peer: PeerId, packet: bytes) -> bool:
        try:
            if self.transport.send(peer, packet):
                self.sent += 1
                return True
            self.refused += 1
        except TransportError as exc:
            self.failed += 1
            log.debug("cover: cannot send to %s: %s", peer, exc)
        return False


class CoverEmitter:
    """A client's cover traffic on a `Transport`: `await send(first_hop, packet)` queues a real
    packet for the next payload slot (waiting while the queue is full); everything else on the
    wire is cover from `factory`. Loop packets that come back are passed to `on_delivery`."""

    def __init__(
        self,
        transport: Transport,
        factory: PacketFactory,
        config: CoverConfig = CoverConfig(),
        *,
        rng: random.Random | None = None,
        loop_timeout_s: float = 10.0,
        low_power: bool = False,
    ) -> None:
        self.transport = transport
        self.factory = factory
        self.config = config
        self.rng = rng or random.SystemRandom()
        self.low_power = low_power
        self.loops = LoopTracker(loop_timeout_s)
        self.core: ClientCover[RealPacket] | None = None
        self.sender = _Sender(transport)
        self._room = asyncio.Event()
        self._unsent: list[RealPacket] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    async def run(self) -> None:
        """Emit until cancelled."""
        self._loop = asyncio.get_running_loop()
        self.core = ClientCover(self.config, self.rng, self._loop.time(), self.low_power)
        self._room.set()
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._emit(), name="cover-emitter")
        finally:
            core, self.core = self.core, None
            self._unsent = core.slots.take_queued() if core is not None else []
            self._room.set()  # wake writers: they see the emitter stopped

    async def _emit(self) -> None:
        loop = self._loop
        assert loop is not None
        while True:
            core = self.core
            assert core is not None
            deadline = min(core.next_deadline(), self.loops.next_expiry())
            await asyncio.sleep(max(0.0, deadline - loop.time()))  # the one timer
            now = loop.time()
            for send in core.poll(now):
                self._put(send.kind, send.packet, now)
            self.loops.expire(now)
            if core.has_room():
                self._room.set()

    def _put(self, kind: Kind, real: RealPacket | None, now: float) -> None:
        if real is not None:
            self.sender.send(*real)
            return
        try:
            cover: CoverPacket = self.factory(kind)
        except Exception:  # a directory without a usable route must not stop the schedule
            self.sender.build_failures += 1
            log.exception("cover: cannot build a %s packet", kind.name.lower())
            return
        if cover.loop_id is not None:
            self.loops.sent(cover.loop_id, now, cover.route)
        self.sender.send(cover.first_hop, cover.packet)

    async def send(self, first_hop: PeerId, packet: bytes) -> None:
        """Queue a real packet for the next payload slot; waits while the queue is full."""
        while True:
            core = self.core
            if core is None or self._loop is None:
                raise EmitterStoppedError("the cover emitter is not running; start run() first")
            if core.offer((first_hop, packet), self._loop.time()):
                return
            self._room.clear()
            await self._room.wait()

    def on_delivery(self, payload: bytes) -> bool:
        """Give every message delivered to this client here first: True if it was one of our
        loops (consumed), False if it is for the application."""
        loop_id = loop_id_of(payload)
        if loop_id is None or self._loop is None:
            return False
        return self.loops.came_back(loop_id, self._loop.time())

    def set_low_power(self, low_power: bool) -> None:
        self.low_power = low_power
        if self.core is not None and self._loop is not None:
            self.core.set_low_power(low_power, self._loop.time())

    def unsent(self) -> list[RealPacket]:
        """After `run()` ended: the real packets that never got a slot."""
        return list(self._unsent)

    def metric_values(self) -> dict[str, float]:
        """`cover_traffic_compliance` and `cover_drift_percent` (registry source)."""
        if self.core is None or self._loop is None:
            return {}
        return self.core.metric_values(self._loop.time())


class MixLoopEmitter:
    """Loop cover for a mix: Poisson(`rate_pps`) loops through the other layers and back.

    `attach()` puts `on_deliver` in front of the node's delivery hook so returning loops are
    consumed here and everything else is delivered as before. `metric_values()` gives the node's
    registry the mix's own cover figures: compliance and drift of its loop emission against
    Poisson(`rate_pps`) (every loop is cover, so only the count test applies) and loop success.
    """

    def __init__(
        self,
        node: MixNode,
        factory: PacketFactory,
        rate_pps: float,
        *,
        rng: random.Random | None = None,
        loop_timeout_s: float = 10.0,
    ) -> None:
        self.node = node
        self.factory = factory
        self.rate_pps = rate_pps
        self.rng = rng or random.SystemRandom()
        self.loops = LoopTracker(loop_timeout_s)
        self.sender = _Sender(node.transport)
        self.schedule: PoissonSchedule | None = None
        self.compliance: ComplianceMeter | None = None
        self.drift: DriftMeter | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._previous_deliver = node.on_deliver

    def attach(self) -> None:
        """Route the node's local deliveries through `on_deliver` (call once, before `run`)."""
        self._previous_deliver = self.node.on_deliver
        self.node.on_deliver = self.on_deliver

    def on_deliver(self, event: Deliver) -> None:
        loop_id = loop_id_of(event.payload) if event.destination == self.node.transport.node_id else None
        if loop_id is not None and self._loop is not None and self.loops.came_back(loop_id, self._loop.time()):
            return
        if self._previous_deliver is not None:
            self._previous_deliver(event)
        else:  # what MixNode does without a hook: a delivery datagram to the destination
            self.sender.send(event.destination, encode_delivery(event))

    async def run(self) -> None:
        """Emit loops until cancelled."""
        self._loop = asyncio.get_running_loop()
        now = self._loop.time()
        self.schedule = PoissonSchedule(self.rate_pps, self.rng, now)
        self.compliance = ComplianceMeter.start(now, self.rate_pps, cover_ratio=0.0, tolerance=0.0)
        self.drift = DriftMeter.start(now, self.rate_pps)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._emit(), name="mix-loop-cover")

    async def _emit(self) -> None:
        loop, schedule = self._loop, self.schedule
        assert loop is not None and schedule is not None
        while True:
            deadline = min(schedule.next_at, self.loops.next_expiry(), loop.time() + 60.0)  # rate 0: idle
            await asyncio.sleep(max(0.0, deadline - loop.time()))
            now = loop.time()
            for _ in range(schedule.pop_due(now)):
                try:
                    cover = self.factory(Kind.LOOP)
                except Exception as exc:  # e.g. the directory has no route yet: counted, not fatal
                    self.sender.build_failures += 1
                    if self.sender.build_failures == 1:
                        log.warning("mix loop cover: cannot build a loop (%s); counting further failures", exc)
                    continue
                if cover.loop_id is not None:
                    self.loops.sent(cover.loop_id, now, cover.route)
                if self.sender.send(cover.first_hop, cover.packet):
                    self._emitted(now)
            self.loops.expire(now)

    def _emitted(self, now: float) -> None:
        if self.compliance is not None and self.drift is not None:
            self.compliance.record(now, cover=True)
            self.drift.record(now)

    def metric_values(self) -> dict[str, float]:
        """`cover_traffic_compliance`, `cover_drift_percent`, `mix_loop_success` and the loop
        counters (a registry source)."""
        if self._loop is None or self.compliance is None or self.drift is None:
            return {}
        now = self._loop.time()
        self.compliance.advance(now)
        return {
            "cover_traffic_compliance": self.compliance.compliance,
            "cover_drift_percent": 100.0 * self.drift.drift(now),
            "mix_loop_success": self.loops.success,
            "cover_loops_returned_total": float(self.loops.returned),
            "cover_loops_lost_total": float(self.loops.lost),
        }
