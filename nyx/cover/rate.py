"""The adaptive rate controller: real traffic observed, the client's payload-slot rate out.

The rate law (docs/cover.md, "Rate law"): the spec's v1.0 law gives the *cover* rate as
`lambda = max(base, real_pps * r / (1 - r))`, which holds the cover share at r once real traffic
is heavy. Clients here send in constant-rate slots (a slot carries a real packet if one is queued,
cover otherwise), so what the controller sets is the *slot* rate

    slot_pps = max(base_pps, real_pps / (1 - r))

whose cover part, `slot_pps - real_pps = max(base_pps - real_pps, real_pps * r / (1 - r))`, is
never below the v1.0 law's ratio term. Reading `base` as a floor on the wire rate (not on cover
added on top of real traffic) is what lets the wire stay flat, and so blind to real traffic, while
real traffic is below the *threshold* (1 - r) * base_pps (`RatePolicy.threshold_pps`).

Flat below the threshold needs more than the law: a rate *estimate* of real traffic just below
the threshold lies above it a third of the time (a 5 s window at 2.9 pps holds Poisson(14.5)
packets), and a controller that rises at once on every such excursion and decays slowly lifts
the wire rate on average, which is exactly the leak this controller closes (docs/cover.md
"Flat below the threshold"). So the rule that raises the rate is a one-sided test:

- **engage** (let the law see the estimate) only when the count of real packets in the short
  window (`window_s`, 5 s) or the long one (`confirm_window_s`, 30 s) exceeds the Poisson upper
  quantile of the threshold rate over that window at false-alarm probability `false_alarm_p / 2`
  (1e-6 per tick in all), or when the real queue fills up (demand above the slot rate, whatever
  the estimate says: real traffic must get its slots);
- while **disengaged** the slot rate is the floor, whatever the estimate; while engaged it is the
  law of the short window's estimate, rising at once and decaying by an exponential moving
  average with time constant `decay_s` (a burst's end is not announced the second it happens);
- **disengage** once both windows' estimates are at or below the threshold and the queue has not
  filled since the last tick.

Real traffic at or below the threshold engages with probability at most `false_alarm_p` per tick
(the count of a Poisson source below the threshold is stochastically smaller than at it), so the
wire's send process is the idle one. Above it the test engages after about
q / real_pps seconds, q the long window's quantile (at base 5, r 0.4: 140 packets, under 30 s at twice
the threshold, 5 s at 30 pps; the short window takes over for sharp steps); a steady load above
the floor always engages, at the latest when the queue fills.

- Low-power mode multiplies the cover part by `low_power_factor` (0.1, the spec), keeping a
  wire-rate floor `low_power_floor_pps` (NAT keepalive, a minimal anonymity set); real traffic
  still gets its slots. Its threshold is the floor over (1 + factor * r / (1 - r)).
- A bandwidth cap (`cap_pps`) bounds the result; when it binds, the cover share falls below r and
  the compliance figure says so.
"""

from __future__ import annotations

import collections
import functools
import math
from dataclasses import dataclass

RATIO_MIN = 0.2
RATIO_MAX = 0.6


@functools.lru_cache(maxsize=256)
def poisson_upper_quantile(mean: float, tail_p: float) -> int:
    """The smallest k with P(X > k) <= tail_p for X ~ Poisson(mean).

    A count above k has probability at most `tail_p` for a source of rate at most mean / window
    (Poisson counts grow stochastically with the mean). Summed from the pmf recurrence as
    `figures.poisson_central_interval` does, starting 12 standard deviations below the mean; the
    tail is accumulated from above the mean so a tail_p of 1e-9 is not lost in rounding.
    """
    if not 0 < tail_p < 1:
        raise ValueError(f"tail_p must lie in (0, 1), not {tail_p}")
    if mean <= 0:
        return 0
    k = max(0, int(mean - 12.0 * math.sqrt(mean) - 12.0))
    pmf = math.exp(k * math.log(mean) - mean - math.lgamma(k + 1))
    cdf = 0.0  # P(X <= k) once pmf(k) is added
    while True:
        cdf += pmf
        if k >= mean and 1.0 - cdf <= tail_p:
            break
        k += 1
        pmf *= mean / k
    # 1 - cdf loses digits near tail_p = 1e-9; walk down with the exact upper tail instead
    upper = 0.0  # P(X > k)
    j, term = k + 1, pmf * mean / (k + 1)
    while term > 1e-300 and term > upper * 1e-17:
        upper += term
        j += 1
        term *= mean / j
    while k > 0 and upper + pmf <= tail_p:  # P(X > k - 1) = P(X > k) + pmf(k)
        upper += pmf
        pmf *= k / mean
        k -= 1
    return k


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
    confirm_window_s: float = 30.0
    false_alarm_p: float = 1e-6
    # the long window is max(confirm_window_s, window_s): a slow loop (SCL-032's 900 s tick and
    # window) tests over its one window

    def __post_init__(self) -> None:
        if not RATIO_MIN <= self.cover_ratio <= RATIO_MAX:
            raise ValueError(f"cover_ratio must lie in [{RATIO_MIN}, {RATIO_MAX}] (got {self.cover_ratio})")
        if self.base_pps <= 0 or self.tick_s <= 0 or self.decay_s <= 0:
            raise ValueError("base_pps, tick_s and decay_s must be positive")
        if self.window_s < self.tick_s:
            raise ValueError(f"the window ({self.window_s} s) must span at least one tick ({self.tick_s} s)")
        if self.confirm_window_s <= 0:
            raise ValueError(f"confirm_window_s must be positive (got {self.confirm_window_s})")
        if not 0 < self.false_alarm_p < 1:
            raise ValueError(f"false_alarm_p must lie in (0, 1) (got {self.false_alarm_p})")
        if not 0 < self.low_power_factor <= 1 or self.low_power_floor_pps < 0:
            raise ValueError("low_power_factor must lie in (0, 1] and low_power_floor_pps be >= 0")
        if self.cap_pps <= 0:
            raise ValueError(f"cap_pps must be positive (got {self.cap_pps})")

    def _floor_pps(self, low_power: bool) -> float:
        if low_power:
            return max(self.base_pps * self.low_power_factor, self.low_power_floor_pps)
        return self.base_pps

    def target_pps(self, real_pps: float, low_power: bool = False) -> float:
        """The slot rate the law asks for at a real-traffic rate of `real_pps` (before the test
        and the smoothing)."""
        r = self.cover_ratio
        factor = self.low_power_factor if low_power else 1.0
        target = max(self._floor_pps(low_power), real_pps + factor * real_pps * r / (1.0 - r))
        return min(target, self.cap_pps)

    def threshold_pps(self, low_power: bool = False) -> float:
        """The real rate up to which the law asks for the floor: (1 - r) * base_pps normally.
        Below it the wire must not depend on real traffic; inf when the cap is at the floor."""
        floor = self._floor_pps(low_power)
        if self.cap_pps <= floor:
            return math.inf
        r = self.cover_ratio
        factor = self.low_power_factor if low_power else 1.0
        return floor / (1.0 + factor * r / (1.0 - r))


class RateController:
    """Counts real packets as they are offered and, once per tick, sets the slot rate.

    `observe(now)` per real packet (an integer add), `queue_full(now)` when the real queue fills;
    `tick(now)` when `now >= next_tick_at` returns the new rate. The caller owns the one timer: it
    arms min(next send, next tick).
    """

    __slots__ = ("policy", "low_power", "rate_pps", "next_tick_at", "engaged", "engagements", "_bins",
                 "_short_bins", "_current", "_full", "_decay", "_limits")

    def __init__(self, policy: RatePolicy, now: float, low_power: bool = False) -> None:
        self.policy = policy
        self.low_power = low_power
        self.rate_pps = policy.target_pps(0.0, low_power)
        self.next_tick_at = now + policy.tick_s
        self._short_bins = max(1, round(policy.window_s / policy.tick_s))
        long_bins = max(self._short_bins, round(policy.confirm_window_s / policy.tick_s))
        self._bins: collections.deque[int] = collections.deque([0] * long_bins, maxlen=long_bins)
        self._current = 0
        self._full = False
        self.engaged = False
        self.engagements = 0  # times the test fired (a figure for tests and the simulator)
        self._decay = 1.0 - math.exp(-policy.tick_s / policy.decay_s)
        self._limits = {mode: self._count_limits(mode) for mode in (False, True)}

    def _count_limits(self, low_power: bool) -> tuple[int, float, int, float]:
        """(short quantile, short count at the threshold, long quantile, long count at it)."""
        policy = self.policy
        threshold = policy.threshold_pps(low_power)
        short_s = self._short_bins * policy.tick_s
        long_s = len(self._bins) * policy.tick_s
        if math.isinf(threshold):
            return (2**62, math.inf, 2**62, math.inf)
        tail = policy.false_alarm_p / 2.0
        return (poisson_upper_quantile(threshold * short_s, tail), threshold * short_s,
                poisson_upper_quantile(threshold * long_s, tail), threshold * long_s)

    def observe(self, now: float, packets: int = 1) -> None:
        """Real packets offered at `now` (counted when offered, not when sent: the demand)."""
        self._current += packets

    def queue_full(self, now: float) -> None:
        """The real-packet queue filled up: the load exceeds the slot rate, so engage at the next
        tick whatever the count says (accepted packets cannot outrun full slots, so the count of
        a saturated queue alone might never pass the test)."""
        self._full = True

    def real_pps(self) -> float:
        """The short window's estimate of the real-traffic rate (completed ticks only)."""
        short = self._short_bins
        bins = self._bins
        return sum(bins[i] for i in range(len(bins) - short, len(bins))) / (short * self.policy.tick_s)

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
        bins = self._bins
        short_count = sum(bins[i] for i in range(len(bins) - self._short_bins, len(bins)))
        long_count = sum(bins)
        short_limit, short_mean, long_limit, long_mean = self._limits[self.low_power]
        if not self.engaged:
            self.engaged = self._full or short_count > short_limit or long_count > long_limit
            self.engagements += self.engaged
        else:
            self.engaged = self._full or short_count > short_mean or long_count > long_mean
        self._full = False
        real = short_count / (self._short_bins * policy.tick_s) if self.engaged else 0.0
        target = policy.target_pps(real, self.low_power)
        if target > self.rate_pps:
            self.rate_pps = target
        else:
            self.rate_pps += self._decay * (target - self.rate_pps)
            # close the last sliver so the wire returns to exactly the floor, not asymptotically
            if abs(self.rate_pps - target) < 1e-3 * target:
                self.rate_pps = target
        return self.rate_pps
