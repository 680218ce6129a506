"""Outbound link state and reconnect backoff (sans-I/O).

A link is this node's view of its connection to one peer: DOWN (no connection, nothing wanted),
CONNECTING, UP, or BACKOFF (the last attempt failed; wait before retrying). The asyncio shell asks
this object what to do and reports what happened; the policy lives here so it can be tested
without a network.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field


class LinkPhase(enum.Enum):
    DOWN = "down"
    CONNECTING = "connecting"
    UP = "up"
    BACKOFF = "backoff"


@dataclass(slots=True)
class Backoff:
    """Exponential backoff with full jitter, reset by a successful connect.

    Jitter keeps a fleet of nodes from reconnecting in lockstep after a shared peer restarts.
    """

    initial_s: float = 0.05
    maximum_s: float = 5.0
    factor: float = 2.0
    rng: random.Random = field(default_factory=random.Random)
    failures: int = 0

    def next_delay_s(self) -> float:
        """Delay before the next attempt, after recording one more failure."""
        ceiling = min(self.maximum_s, self.initial_s * self.factor**self.failures)
        self.failures += 1
        return ceiling / 2 + self.rng.uniform(0, ceiling / 2)

    def reset(self) -> None:
        self.failures = 0


@dataclass(slots=True)
class LinkState:
    """Phase, backoff and activity of one outbound link."""

    phase: LinkPhase = LinkPhase.DOWN
    backoff: Backoff = field(default_factory=Backoff)
    last_activity: float = 0.0
    attempts: int = 0

    def connecting(self) -> None:
        self.phase = LinkPhase.CONNECTING
        self.attempts += 1

    def connected(self, now: float) -> None:
        self.phase = LinkPhase.UP
        self.backoff.reset()
        self.last_activity = now

    def failed(self) -> float:
        """The attempt (or the live connection) failed; return how long to wait before retrying."""
        self.phase = LinkPhase.BACKOFF
        return self.backoff.next_delay_s()

    def closed_idle(self) -> None:
        self.phase = LinkPhase.DOWN

    def touch(self, now: float) -> None:
        self.last_activity = now

    def idle_for(self, now: float) -> float:
        return now - self.last_activity
