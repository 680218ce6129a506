"""The latency budget: the per-hop mean makes the budget the 95th percentile of the path delay."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nyx.cover import per_hop_mean_delay
from nyx.mix.delay import erlang_cdf


@pytest.mark.parametrize("hops", [1, 3, 5, 7])
@pytest.mark.parametrize("budget_s", [0.1, 0.2, 0.4])
def test_the_budget_is_the_95th_percentile_of_the_erlang_total(budget_s: float, hops: int) -> None:
    budget = per_hop_mean_delay(budget_s, hops)
    assert math.isclose(erlang_cdf(hops, budget_s / budget.per_hop_mean_s), 0.95, abs_tol=1e-9)
    assert math.isclose(budget.within(budget_s), 0.95, abs_tol=1e-9)


def test_sampled_path_delays_meet_the_budget_95_percent_of_the_time() -> None:
    budget = per_hop_mean_delay(0.2, 3)
    rng = np.random.default_rng(1)
    totals = rng.exponential(budget.per_hop_mean_s, size=(200_000, 3)).sum(axis=1)
    assert abs(np.quantile(totals, 0.95) - 0.2) < 0.002
    assert math.isclose(budget.per_hop_mean_s, 0.0318, abs_tol=5e-4)  # 200 ms / Q_3(0.95) = 6.296


def test_link_latency_is_taken_out_of_the_budget_first() -> None:
    budget = per_hop_mean_delay(0.2, 3, fixed_s=0.05)
    assert math.isclose(budget.within(0.2), 0.95, abs_tol=1e-9)
    assert budget.per_hop_mean_s < per_hop_mean_delay(0.2, 3).per_hop_mean_s


def test_a_budget_outside_100_to_400_ms_is_refused_unless_relaxed() -> None:
    with pytest.raises(ValueError, match="100, 400"):
        per_hop_mean_delay(0.05, 3)
    assert per_hop_mean_delay(0.05, 3, strict=False).per_hop_mean_s > 0


def test_the_mix_layer_gets_a_delay_policy_with_that_mean() -> None:
    budget = per_hop_mean_delay(0.3, 3)
    assert budget.delay_policy().mean_s == budget.per_hop_mean_s
