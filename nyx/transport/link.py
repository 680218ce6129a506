"""Outbound link phases and reconnect backoff (sans-I/O; the decisions are in supervisor.py).

A link is this node's view of its connection to one peer: DOWN (no connection, nothing wanted),
CONNECTING, UP, or BACKOFF (the last attempt failed; wait before retrying).
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
