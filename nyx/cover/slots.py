"""The client's send schedule: constant-rate payload slots plus loop and drop cover streams.

Loopix-style, three independent Poisson streams:

- **payload slots** at the controller's rate: a slot carries the oldest queued real packet if there
  is one and a *fill* cover packet otherwise, so the wire shows the same process whether or not
  the client has anything to say;
- **loop cover**: packets routed through the mixes back to the client (their return is the
  client's evidence that the path works; see `figures.LoopTracker`);
- **drop cover**: packets routed to a random destination that discards them.

The superposition is one Poisson process of rate payload + loop + drop, which is what the
compliance meter tests. Real packets wait in a bounded queue; a full queue refuses (`offer`
returns False) and the shell makes the writer wait: backpressure, never a silent drop or an
unscheduled send.
"""

from __future__ import annotations

import collections
import enum
import random
from dataclasses import dataclass
from typing import Generic, TypeVar

from nyx.cover.poisson import PoissonSchedule

T = TypeVar("T")


class Kind(enum.IntEnum):
    """What one send carries. Every kind but REAL is cover."""

    REAL = 0
    FILL = 1  # a payload slot with no real packet queued
    LOOP = 2
    DROP = 3


@dataclass(frozen=True, slots=True)
class Send(Generic[T]):
    """One packet to put on the wire now: `packet` is the queued real packet for REAL, None for
    cover (the shell builds cover packets with the mix layer)."""

    kind: Kind
    packet: T | None = None


class ClientSlots(Generic[T]):
    """The three streams and the real-packet queue; `poll(now)` says what to send."""

    __slots__ = ("payload", "loop", "drop", "queue_limit", "_queue")

    def __init__(
        self,
        payload_pps: float,
        loop_pps: float,
        drop_pps: float,
        rng: random.Random,
        now: float,
        *,
        queue_limit: int = 64,
        max_lateness_s: float = 1.0,
    ) -> None:
        if queue_limit < 1:
            raise ValueError(f"the real-packet queue needs room for at least one packet (got {queue_limit})")
        self.payload = PoissonSchedule(payload_pps, rng, now, max_lateness_s)
        self.loop = PoissonSchedule(loop_pps, rng, now, max_lateness_s)
        self.drop = PoissonSchedule(drop_pps, rng, now, max_lateness_s)
        self.queue_limit = queue_limit
        self._queue: collections.deque[T] = collections.deque()

    @property
    def rate_pps(self) -> float:
        """The wire rate: the sum of the three streams' rates."""
        return self.payload.rate_pps + self.loop.rate_pps + self.drop.rate_pps

    def queued(self) -> int:
        return len(self._queue)

    def has_room(self) -> bool:
        return len(self._queue) < self.queue_limit

    def offer(self, packet: T) -> bool:
        """Queue a real packet for the next payload slot; False (nothing queued) if full."""
        if len(self._queue) >= self.queue_limit:
            return False
        self._queue.append(packet)
        return True

    def set_rates(self, now: float, payload_pps: float, loop_pps: float | None = None,
                  drop_pps: float | None = None) -> None:
        self.payload.set_rate(payload_pps, now)
        if loop_pps is not None:
            self.loop.set_rate(loop_pps, now)
        if drop_pps is not None:
            self.drop.set_rate(drop_pps, now)

    def next_due(self) -> float:
        return min(self.payload.next_at, self.loop.next_at, self.drop.next_at)

    def poll(self, now: float) -> list[Send[T]]:
        """Everything due at `now`: payload slots first (real packets, oldest first), then loops,
        then drops."""
        sends: list[Send[T]] = []
        queue = self._queue
        for _ in range(self.payload.pop_due(now)):
            sends.append(Send(Kind.REAL, queue.popleft()) if queue else Send(Kind.FILL))
        sends.extend(Send(Kind.LOOP) for _ in range(self.loop.pop_due(now)))
        sends.extend(Send(Kind.DROP) for _ in range(self.drop.pop_due(now)))
        return sends

    def take_queued(self) -> list[T]:
        """Empty the real-packet queue and return what was in it (shutdown: the owner decides)."""
        queued = list(self._queue)
        self._queue.clear()
        return queued

    def skipped(self) -> int:
        """Sends skipped because the caller woke far too late (see `PoissonSchedule`)."""
        return self.payload.skipped + self.loop.skipped + self.drop.skipped
