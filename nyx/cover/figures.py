"""The cover figures the SLOs are stated in, computed exactly as docs/cover.md defines them.

- **Compliance** (`cover_traffic_compliance`, SCL-005): time is cut into windows of `window_s`.
  A window complies when (a) the number of packets emitted in it lies inside the central `level`
  (95%) interval of Poisson(L), where L is the integral of the target rate over the window, and
  (b) the cover share of those packets is at least `cover_ratio - tolerance`. Compliance is the
  share of complying windows.
- **Drift** (`cover_drift_percent`, SCL-032): |N - L| / L over the run, with N the packets emitted
  and L the integral of the target rate; also per report period (15 min) so a slow leak shows.
- **Two-sample KS** (`ks_two_sample`): whether a wire's inter-send gaps differ from another's
  (the flat-below-threshold check, docs/cover.md).
- **Loop round-trip success**: the share of loop cover packets that came back before their
  timeout. Per-mix failure tallies point at mixes that drop (failed, or attacking).

All meters are sans-I/O: events with their `now`, figures out.
"""

from __future__ import annotations

import collections
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field


@functools.lru_cache(maxsize=4096)
def poisson_central_interval(mean: float, level: float = 0.95) -> tuple[int, int, float]:
    """(lo, hi, mass): the central `level` interval of Poisson(mean), P(X < lo) <= tail and
    P(X > hi) <= tail with tail = (1 - level) / 2, and mass = P(lo <= X <= hi) >= level.

    Summed from the pmf recurrence, starting 12 standard deviations below the mean (the mass below
    is under 1e-30): no scipy needed, about 25 sqrt(mean) steps.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), not {level}")
    if mean <= 0:
        return 0, 0, 1.0
    tail = (1.0 - level) / 2.0
    k = max(0, int(mean - 12.0 * math.sqrt(mean) - 12.0))
    pmf = math.exp(k * math.log(mean) - mean - math.lgamma(k + 1))
    cdf = 0.0  # P(X < k)
    lo, below_lo = -1, 0.0
    while True:
        if lo < 0 and cdf + pmf > tail:
            lo, below_lo = k, cdf
        cdf += pmf
        if cdf >= 1.0 - tail:
            return lo, k, cdf - below_lo
        k += 1
        pmf *= mean / k


def ks_two_sample(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """(D, p): the two-sample Kolmogorov-Smirnov statistic D = sup |F_a - F_b| and its asymptotic
    p-value, Q_KS((sqrt(ne) + 0.12 + 0.11 / sqrt(ne)) * D) with ne = n m / (n + m) (Stephens'
    correction; no scipy). Used to tell whether a wire's inter-send gaps differ from the idle
    wire's: the shape test the count-based compliance cannot do."""
    import numpy as np  # only this figure needs it; the meters stay plain Python

    xa, xb = np.sort(np.asarray(a, dtype=float)), np.sort(np.asarray(b, dtype=float))
    if len(xa) == 0 or len(xb) == 0:
        raise ValueError("the KS test needs two non-empty samples")
    points = np.concatenate([xa, xb])
    d = float(np.abs(np.searchsorted(xa, points, side="right") / len(xa)
                     - np.searchsorted(xb, points, side="right") / len(xb)).max())
    ne = len(xa) * len(xb) / (len(xa) + len(xb))
    lam = (math.sqrt(ne) + 0.12 + 0.11 / math.sqrt(ne)) * d
    if lam < 0.2:
        return d, 1.0
    p = 2.0 * sum((-1) ** (k - 1) * math.exp(-2.0 * k * k * lam * lam) for k in range(1, 101))
    return d, min(1.0, max(0.0, p))


class RateIntegral:
    """The integral of a piecewise-constant target rate: the expected packet count."""

    __slots__ = ("rate_pps", "_at", "_value")

    def __init__(self, now: float, rate_pps: float) -> None:
        self.rate_pps = rate_pps
        self._at = now
        self._value = 0.0

    def set_rate(self, now: float, rate_pps: float) -> None:
        self._value = self.value(now)
        self._at = now
        self.rate_pps = rate_pps

    def value(self, t: float) -> float:
        """Expected count from the start to `t` (t at or after the last rate change)."""
        return self._value + self.rate_pps * (t - self._at)


@dataclass(slots=True)
class ComplianceMeter:
    """Counts emissions per window and judges each window when it closes."""

    window_s: float
    cover_ratio: float
    tolerance: float
    integral: RateIntegral
    level: float = 0.95
    windows: int = 0
    compliant: int = 0
    count_failures: int = 0
    share_failures: int = 0
    ideal_mass: float = 0.0  # sum over windows of P(count inside) for an ideal Poisson source
    _start: float = 0.0
    _start_value: float = 0.0
    _total: int = 0
    _cover: int = 0

    @classmethod
    def start(
        cls, now: float, rate_pps: float, *, window_s: float = 10.0, cover_ratio: float = 0.4, tolerance: float = 0.1
    ) -> ComplianceMeter:
        meter = cls(window_s, cover_ratio, tolerance, RateIntegral(now, rate_pps))
        meter._start = now
        return meter

    def set_rate(self, now: float, rate_pps: float) -> None:
        """The target rate changes at `now` (close earlier windows first)."""
        self.advance(now)
        self.integral.set_rate(now, rate_pps)

    def record(self, now: float, cover: bool) -> None:
        """One packet emitted at `now`."""
        if now >= self._start + self.window_s:
            self.advance(now)
        self._total += 1
        self._cover += cover

    def advance(self, now: float) -> None:
        """Judge every window that ended at or before `now`."""
        while now >= self._start + self.window_s:
            end = self._start + self.window_s
            end_value = self.integral.value(end)
            lo, hi, mass = poisson_central_interval(round(end_value - self._start_value, 6), self.level)
            count_ok = lo <= self._total <= hi
            share_ok = self._total == 0 or self._cover / self._total >= self.cover_ratio - self.tolerance
            self.windows += 1
            self.compliant += count_ok and share_ok
            self.count_failures += not count_ok
            self.share_failures += not share_ok
            self.ideal_mass += mass
            self._start, self._start_value = end, end_value
            self._total = self._cover = 0

    @property
    def compliance(self) -> float:
        """Share of complying windows (1.0 before the first window closes)."""
        return self.compliant / self.windows if self.windows else 1.0

    @property
    def ideal_compliance(self) -> float:
        """What an exact Poisson source would score on the count test, on average, over the same
        windows: at least `level` by construction. The reference to read `compliance` against."""
        return self.ideal_mass / self.windows if self.windows else 1.0


@dataclass(slots=True)
class DriftMeter:
    """Emitted count against the target integral, over the run and per report period."""

    integral: RateIntegral
    period_s: float = 900.0
    emitted: int = 0
    period_drifts: collections.deque[float] = field(default_factory=lambda: collections.deque(maxlen=4096))
    # |N - L| / sqrt(L) per period: the deviation in Poisson standard deviations, so a period's
    # drift can be told apart from the noise a short period has anyway (1 / sqrt(L))
    period_z: collections.deque[float] = field(default_factory=lambda: collections.deque(maxlen=4096))
    _period_start: float = 0.0
    _period_value: float = 0.0
    _period_emitted: int = 0

    @classmethod
    def start(cls, now: float, rate_pps: float, period_s: float = 900.0) -> DriftMeter:
        meter = cls(RateIntegral(now, rate_pps), period_s)
        meter._period_start = now
        return meter

    def set_rate(self, now: float, rate_pps: float) -> None:
        self.advance(now)
        self.integral.set_rate(now, rate_pps)

    def record(self, now: float, packets: int = 1) -> None:
        if now >= self._period_start + self.period_s:
            self.advance(now)
        self.emitted += packets

    def advance(self, now: float) -> None:
        while now >= self._period_start + self.period_s:
            end = self._period_start + self.period_s
            value = self.integral.value(end)
            expected = value - self._period_value
            observed = self.emitted - self._period_emitted
            self.period_drifts.append(abs(observed - expected) / expected if expected > 0 else 0.0)
            self.period_z.append(abs(observed - expected) / math.sqrt(expected) if expected > 0 else 0.0)
            self._period_start, self._period_value, self._period_emitted = end, value, self.emitted

    def expected(self, now: float) -> float:
        return self.integral.value(now)

    def drift(self, now: float) -> float:
        """|N - L| / L over the run so far (0 before anything was expected)."""
        expected = self.integral.value(now)
        return abs(self.emitted - expected) / expected if expected > 0 else 0.0


class LoopTracker:
    """Loop cover packets in flight: sent, returned, or lost after `timeout_s`.

    `route` (the mixes a loop crossed) is kept so that losses can be tallied per mix: a mix on
    far more failed loops than its peers is failing or dropping on purpose.
    """

    __slots__ = ("timeout_s", "returned", "lost", "round_trip_s_sum", "_pending", "_order", "_node_loops",
                 "_node_failures")

    def __init__(self, timeout_s: float) -> None:
        if timeout_s <= 0:
            raise ValueError(f"a loop timeout must be positive, not {timeout_s}")
        self.timeout_s = timeout_s
        self.returned = 0
        self.lost = 0
        self.round_trip_s_sum = 0.0
        self._pending: dict[bytes, tuple[float, tuple[str, ...]]] = {}
        self._order: collections.deque[tuple[float, bytes]] = collections.deque()
        self._node_loops: collections.Counter[str] = collections.Counter()
        self._node_failures: collections.Counter[str] = collections.Counter()

    def sent(self, loop_id: bytes, now: float, route: tuple[str, ...] = ()) -> None:
        self._pending[loop_id] = (now, route)
        self._order.append((now + self.timeout_s, loop_id))

    def came_back(self, loop_id: bytes, now: float) -> bool:
        """A loop packet arrived; False if it is not one of ours (or came after its timeout)."""
        entry = self._pending.pop(loop_id, None)
        if entry is None:
            return False
        self.returned += 1
        self.round_trip_s_sum += now - entry[0]
        self._node_loops.update(entry[1])
        return True

    def expire(self, now: float) -> int:
        """Count as lost every loop whose timeout passed; returns how many were lost now."""
        lost = 0
        while self._order and self._order[0][0] <= now:
            _, loop_id = self._order.popleft()
            entry = self._pending.pop(loop_id, None)
            if entry is not None:
                lost += 1
                self._node_loops.update(entry[1])
                self._node_failures.update(entry[1])
        self.lost += lost
        return lost

    def next_expiry(self) -> float:
        return self._order[0][0] if self._order else math.inf

    def in_flight(self) -> int:
        return len(self._pending)

    @property
    def success(self) -> float:
        """Returned / (returned + lost); loops still in flight are not judged yet."""
        judged = self.returned + self.lost
        return self.returned / judged if judged else 1.0

    def failure_share_by_node(self, min_loops: int = 20) -> dict[str, float]:
        """For each mix on at least `min_loops` judged loops: the share of its loops that were lost."""
        return {
            node: self._node_failures[node] / loops
            for node, loops in self._node_loops.items()
            if loops >= min_loops
        }

    def suspects(self, factor: float = 2.0, min_loops: int = 20) -> dict[str, float]:
        """Mixes whose loops were lost more than `factor` times as often (plus one point) as the
        loops that avoided them: {mix: its loss share}. Comparing with the loops that avoided the
        mix, not with all loops, keeps the innocent mixes that share paths with a bad one (their
        loss share is raised by it) from being named with it."""
        judged, lost = self.returned + self.lost, self.lost
        named = {}
        for node, loops in self._node_loops.items():
            others = judged - loops
            if loops < min_loops or others < min_loops:
                continue
            share = self._node_failures[node] / loops
            others_share = (lost - self._node_failures[node]) / others
            if share > factor * others_share + 0.01:
                named[node] = share
        return named
