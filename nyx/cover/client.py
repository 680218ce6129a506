"""`ClientCover`: a client's whole cover state machine, sans-I/O.

It joins the slot scheduler, the adaptive controller and the meters behind three calls the
asyncio shell (or the virtual-clock simulator) makes:

- `offer(packet, now)` when the application has a real packet;
- `poll(now)` when `now >= next_deadline()`: returns the sends due and advances the controller;
- `next_deadline()`: the one timer to arm (the next send or the next controller tick).

Every decision is here; the shell owns only the timer and the transport.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Generic, TypeVar

from nyx.cover.figures import ComplianceMeter, DriftMeter
from nyx.cover.rate import RateController, RatePolicy
from nyx.cover.slots import ClientSlots, Kind, Send

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class CoverConfig:
    """A client's cover settings. Loop and drop rates are fixed parts of the wire rate (scaled by
    the low-power factor); the payload-slot rate is the controller's."""

    policy: RatePolicy = RatePolicy()
    loop_pps: float = 1.0
    drop_pps: float = 1.0
    queue_limit: int = 64
    max_lateness_s: float = 1.0
    window_s: float = 10.0  # compliance window
    tolerance: float = 0.1  # compliance: cover share >= cover_ratio - tolerance
    drift_period_s: float = 900.0


class ClientCover(Generic[T]):
    """Schedules, controller and figures of one client."""

    def __init__(self, config: CoverConfig, rng: random.Random, now: float, low_power: bool = False) -> None:
        self.config = config
        self.controller = RateController(config.policy, now, low_power)
        loop_pps, drop_pps = self._fixed_rates()
        self.slots: ClientSlots[T] = ClientSlots(
            self.controller.rate_pps, loop_pps, drop_pps, rng, now,
            queue_limit=config.queue_limit, max_lateness_s=config.max_lateness_s,
        )
        rate = self.slots.rate_pps
        self.compliance = ComplianceMeter.start(
            now, rate, window_s=config.window_s, cover_ratio=config.policy.cover_ratio, tolerance=config.tolerance
        )
        self.drift = DriftMeter.start(now, rate, config.drift_period_s)
        self.sent = {kind: 0 for kind in Kind}

    def _fixed_rates(self) -> tuple[float, float]:
        factor = self.config.policy.low_power_factor if self.controller.low_power else 1.0
        return self.config.loop_pps * factor, self.config.drop_pps * factor

    def offer(self, packet: T, now: float) -> bool:
        """Queue a real packet. False when the queue is full: wait (`has_room`) and offer again.
        Accepted packets are the controller's demand signal (counted once, when accepted); a full
        queue tells it the load exceeds the slot rate (see `RateController.queue_full`)."""
        if not self.slots.offer(packet):
            self.controller.queue_full(now)
            return False
        self.controller.observe(now)
        if not self.slots.has_room():
            self.controller.queue_full(now)
        return True

    def has_room(self) -> bool:
        return self.slots.has_room()

    def set_low_power(self, low_power: bool, now: float) -> None:
        """Low-power mode: loop and drop streams change now, the slot rate at the next tick."""
        self.controller.set_low_power(low_power)
        self._apply_rates(now, self.controller.rate_pps)

    def next_deadline(self) -> float:
        return min(self.slots.next_due(), self.controller.next_tick_at)

    def poll(self, now: float) -> list[Send[T]]:
        """The sends due at `now`; ticks the controller when its tick is due."""
        sends = self.slots.poll(now)
        compliance, drift = self.compliance, self.drift
        for send in sends:
            self.sent[send.kind] += 1
            compliance.record(now, send.kind is not Kind.REAL)
        if sends:
            drift.record(now, len(sends))
        if now >= self.controller.next_tick_at:
            self._apply_rates(now, self.controller.tick(now))
        return sends

    def _apply_rates(self, now: float, payload_pps: float) -> None:
        loop_pps, drop_pps = self._fixed_rates()
        self.slots.set_rates(now, payload_pps, loop_pps, drop_pps)
        rate = self.slots.rate_pps
        if rate != self.compliance.integral.rate_pps:
            self.compliance.set_rate(now, rate)
            self.drift.set_rate(now, rate)

    def metric_values(self, now: float) -> dict[str, float]:
        """The catalogue's cover figures (published by the node's registry about once a second)."""
        self.compliance.advance(now)
        return {
            "cover_traffic_compliance": self.compliance.compliance,
            "cover_drift_percent": 100.0 * self.drift.drift(now),
        }
