"""The latency budget: from a budget and a hop count to the per-hop mean mixing delay.

Each hop holds a packet for an exponential delay of mean m (Poisson mixing), so the path's total
mixing delay over n hops is Erlang(n, rate 1/m). We choose m so that the budget B is the 95th
percentile of that total: P(Erlang(n, 1/m) <= B) = 0.95, i.e. m = B / Q_n(0.95) with Q_n the
quantile of Erlang(n, 1). The quantile is `nyx.mix.delay.erlang_quantile` (closed-form CDF and
bisection); this module only validates the inputs and reports what the choice implies, so the mix
layer and the cover layer cannot disagree about it.

Link latency is not mixing delay: a caller that knows the path's propagation delay passes it as
`fixed_s` and the exponential part gets the rest of the budget.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from nyx.mix.delay import PoissonDelay, erlang_cdf, erlang_quantile

BUDGET_MIN_S = 0.100
BUDGET_MAX_S = 0.400
QUANTILE = 0.95


@dataclass(frozen=True, slots=True)
class LatencyBudget:
    """A latency budget resolved for a path of `hops` mixes."""

    budget_s: float
    hops: int
    per_hop_mean_s: float
    fixed_s: float = 0.0
    quantile: float = QUANTILE

    @property
    def mean_total_s(self) -> float:
        """Expected end-to-end delay: fixed part plus n exponential means."""
        return self.fixed_s + self.hops * self.per_hop_mean_s

    def within(self, total_delay_s: float) -> float:
        """P(the path's delay <= total_delay_s) under this choice."""
        return erlang_cdf(self.hops, (total_delay_s - self.fixed_s) / self.per_hop_mean_s)

    def delay_policy(self, rng: random.Random | None = None) -> PoissonDelay:
        """The mix layer's delay policy for one hop of this path."""
        return PoissonDelay(self.per_hop_mean_s, rng)


def per_hop_mean_delay(
    budget_s: float, hops: int, *, fixed_s: float = 0.0, quantile: float = QUANTILE, strict: bool = True
) -> LatencyBudget:
    """The per-hop mean delay that makes `budget_s` the `quantile` of the path's total delay.

    `strict` enforces the spec's 100-400 ms range for budgets; tests and experiments may relax it.
    """
    if strict and not BUDGET_MIN_S <= budget_s <= BUDGET_MAX_S:
        raise ValueError(
            f"a latency budget lies in [{BUDGET_MIN_S * 1e3:.0f}, {BUDGET_MAX_S * 1e3:.0f}] ms "
            f"(got {budget_s * 1e3:g} ms); pass strict=False to experiment outside it"
        )
    if not 1 <= hops <= 7:
        raise ValueError(f"a mix path has 1..7 hops, not {hops}")
    if not 0 <= fixed_s < budget_s or not math.isfinite(fixed_s):
        raise ValueError(f"the fixed (link) delay {fixed_s} s leaves nothing of the {budget_s} s budget")
    mean = (budget_s - fixed_s) / erlang_quantile(hops, quantile)
    return LatencyBudget(budget_s, hops, mean, fixed_s, quantile)
