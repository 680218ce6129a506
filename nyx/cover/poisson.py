"""One Poisson process of send times, sans-I/O: a rate and a clock in, due send times out.

Two properties matter for cover traffic and both are easy to lose in an implementation:

- **Anchoring.** Each send time is the previous *ideal* send time plus an exponential gap, never
  "when the timer actually fired" plus a gap. An event loop that wakes 1 ms late on every timer
  would otherwise slow a 10 pps process by 1% for ever (drift); anchored, the lateness is paid back
  on the next poll and the long-run rate is exact.
- **Memorylessness on rate changes.** When the rate changes at `now`, the time to the next send is
  redrawn from `now` at the new rate. For a piecewise-constant rate this gives exactly the
  inhomogeneous Poisson process, so the count in any window is Poisson with mean = the integral of
  the rate over it (what `nyx.cover.figures` tests against).

A caller that was away for long (a suspended laptop) is not allowed to burst the backlog: sends
whose ideal time is more than `max_lateness_s` in the past are skipped and counted, which shows up
honestly as drift rather than as a burst no Poisson process would produce.
"""

from __future__ import annotations

import math
import random


class PoissonSchedule:
    """Send times of a Poisson process of rate `rate_pps`, drawn from the `rng` passed in.

    The rng is the caller's (seeded in simulations and tests, `random.SystemRandom()` in nodes);
    nothing here touches the global `random` state.
    """

    __slots__ = ("rate_pps", "next_at", "max_lateness_s", "emitted", "skipped", "_rng")

    def __init__(self, rate_pps: float, rng: random.Random, now: float, max_lateness_s: float = 1.0) -> None:
        if rate_pps < 0 or not math.isfinite(rate_pps):
            raise ValueError(f"a Poisson rate must be finite and >= 0, not {rate_pps}")
        if max_lateness_s <= 0:
            raise ValueError(f"max_lateness_s must be positive, not {max_lateness_s}")
        self._rng = rng
        self.rate_pps = rate_pps
        self.max_lateness_s = max_lateness_s
        self.emitted = 0
        self.skipped = 0
        self.next_at = self._after(now)

    def _after(self, t: float) -> float:
        return t + self._rng.expovariate(self.rate_pps) if self.rate_pps > 0 else math.inf

    def set_rate(self, rate_pps: float, now: float) -> None:
        """Change the rate from `now` on. The pending send is redrawn from `now` (memoryless), so
        a rate change neither wastes nor double-counts time already waited."""
        if rate_pps < 0 or not math.isfinite(rate_pps):
            raise ValueError(f"a Poisson rate must be finite and >= 0, not {rate_pps}")
        if rate_pps == self.rate_pps:
            return
        self.rate_pps = rate_pps
        self.next_at = self._after(now)

    def pop_due(self, now: float) -> int:
        """How many sends are due at `now` (usually 0 or 1; more after a late wake-up).

        Advances the schedule past `now`. Sends older than `max_lateness_s` are skipped and
        counted in `skipped`, not returned.
        """
        due = 0
        horizon = now - self.max_lateness_s
        while self.next_at <= now:
            if self.next_at < horizon:
                self.skipped += 1
            else:
                due += 1
            self.next_at = self._after(self.next_at)
        self.emitted += due
        return due
