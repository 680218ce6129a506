"""The adaptive rate controller: real traffic observed, the client's payload-slot rate out.

The rate law (docs/cover.md, "Rate law"): the spec's v1.0 law gives the *cover* rate as
`lambda = max(base, real_pps * r / (1 - r))`, which holds the cover share at r once real traffic
is heavy. Clients here send in constant-rate slots (a slot carries a real packet if one is queued,
cover otherwise), so what the controller sets is the *slot* rate

    slot_pps = max(base_pps, real_pps / (1 - r))

whose cover part, `slot_pps - real_pps = max(base_pps - real_pps, real_pps * r / (1 - r))`, is
never below the v1.0 law's ratio term. The difference is deliberate: reading `base` as a floor on
the wire rate (not on cover added on top of real traffic) keeps the wire rate flat, and so blind to
real traffic, until real traffic exceeds (1 - r) * base_pps.

- real_pps is estimated over a sliding window (5 s) and the rate adjusted once per `tick_s` (1 s).
- Smoothing is asymmetric: the rate rises at once to what the window asks (a slot rate below the
  offered load queues real packets and pushes the cover share below r), and falls by an
  exponential moving average with time constant `decay_s`, so a burst's end is not announced
  on the wire the second it happens. A step up is therefore followed within one window (the
  window's mean reaches the new level when the window is full of it). Reacting to single ticks
  would be faster but would let every chance cluster of a few real packets lift the wire rate.
- Low-power mode multiplies the cover part by `low_power_factor` (0.1, the spec), keeping a
  wire-rate floor `low_power_floor_pps` (NAT keepalive, a minimal anonymity set); real traffic
  still gets its slots.
- A bandwidth cap (`cap_pps`) bounds the result; when it binds, the cover share falls below r and
  the compliance figure says so.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass

RATIO_MIN = 0.2
RATIO_MAX = 0.6


@dataclass(frozen=True, slots=True)
class RatePolicy:
    """The controller's configuration (the `[cover]` settings of a node)."""

    base_pps: float = 5.0
    cover_ratio: float = 0.4
    window_s: float = 5.0
    tick_s: float = 1.0
    decay_s: float = 5.0
    low_power_factor: float = 0.1
    low_power_floor_pps: float = 0.2
    cap_pps: float = math.inf

    def __post_init__(self) -> None:
        if not RATIO_MIN <= self.cover_ratio <= RATIO_MAX:
            raise ValueError(f"cover_ratio must lie in [{RATIO_MIN}, {RATIO_MAX}] (got {self.cover_ratio})")
        if self.base_pps <= 0 or self.tick_s <= 0 or self.decay_s <= 0:
            raise ValueError("base_pps, tick_s and decay_s must be positive")
        if self.window_s < self.tick_s:
            raise ValueError(f"the window ({self.window_s} s) must span at least one tick ({self.tick_s} s)")
        if not 0 < self.low_power_factor <= 1 or self.low_power_floor_pps < 0:
            raise ValueError("low_power_factor must lie in (0, 1] and low_power_floor_pps be >= 0")
        if self.cap_pps <= 0:
            raise ValueError(f"cap_pps must be positive (got {self.cap_pps})")

    def target_pps(self, real_pps: float, low_power: bool = False) -> float:
        """The slot rate the law asks for at a real-traffic rate of `real_pps` (before smoothing)."""
        r = self.cover_ratio
        factor = self.low_power_factor if low_power else 1.0
        floor = max(self.base_pps * factor, self.low_power_floor_pps if low_power else 0.0)
        target = max(floor, real_pps + factor * real_pps * r / (1.0 - r))
        return min(target, self.cap_pps)


class RateController:
    """Counts real packets as they are offered and, once per tick, sets the slot rate.

    `observe(now)` per real packet (an integer add); `tick(now)` when `now >= next_tick_at`
    returns the new rate. The caller owns the one timer: it arms min(next send, next tick).
    """

    __slots__ = ("policy", "low_power", "rate_pps", "next_tick_at", "_bins", "_current", "_decay")

    def __init__(self, policy: RatePolicy, now: float, low_power: bool = False) -> None:
        self.policy = policy
        self.low_power = low_power
        self.rate_pps = policy.target_pps(0.0, low_power)
        self.next_tick_at = now + policy.tick_s
        bins = max(1, round(policy.window_s / policy.tick_s))
        self._bins: collections.deque[int] = collections.deque([0] * bins, maxlen=bins)
        self._current = 0
        self._decay = 1.0 - math.exp(-policy.tick_s / policy.decay_s)

    def observe(self, now: float, packets: int = 1) -> None:
        """Real packets offered at `now` (counted when offered, not when sent: the demand)."""
        self._current += packets

    def real_pps(self) -> float:
        """The window's estimate of the real-traffic rate (completed ticks only)."""
        return sum(self._bins) / (len(self._bins) * self.policy.tick_s)

    def set_low_power(self, low_power: bool) -> None:
        """Enter or leave low-power mode; takes effect at the next tick."""
        self.low_power = low_power

    def tick(self, now: float) -> float:
        """Close the current tick and return the slot rate for the next one."""
        policy = self.policy
        self._bins.append(self._current)
        self._current = 0
        self.next_tick_at += policy.tick_s
        if self.next_tick_at <= now:  # woke very late: skip missed ticks rather than replay them
            self.next_tick_at = now + policy.tick_s
        target = policy.target_pps(self.real_pps(), self.low_power)
        if target > self.rate_pps:
            self.rate_pps = target
        else:
            self.rate_pps += self._decay * (target - self.rate_pps)
            # close the last sliver so the wire returns to exactly the floor, not asymptotically
            if abs(self.rate_pps - target) < 1e-3 * target:
                self.rate_pps = target
        return self.rate_pps
