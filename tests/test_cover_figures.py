"""Compliance, drift and loop success as docs/cover.md defines them."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from nyx.cover import ComplianceMeter, DriftMeter, LoopTracker, poisson_central_interval


def poisson_cdf(k: int, mean: float) -> float:
    return sum(math.exp(j * math.log(mean) - mean - math.lgamma(j + 1)) for j in range(k + 1)) if k >= 0 else 0.0


@pytest.mark.parametrize("mean", [0.5, 3.0, 70.0, 210.0, 5000.0])
def test_the_central_interval_leaves_at_most_2_5_percent_in_each_tail(mean: float) -> None:
    lo, hi, mass = poisson_central_interval(mean)
    assert poisson_cdf(lo - 1, mean) <= 0.025 < poisson_cdf(lo, mean) + 1e-12
    assert 1 - poisson_cdf(hi, mean) <= 0.025 + 1e-12 < 1 - poisson_cdf(hi - 1, mean)
    assert mass >= 0.95
    assert math.isclose(mass, poisson_cdf(hi, mean) - poisson_cdf(lo - 1, mean), abs_tol=1e-9)


def emit(meter: ComplianceMeter, rate_pps: float, seconds: float, seed: int, cover_share: float = 1.0) -> None:
    rng = random.Random(seed)
    t = rng.expovariate(rate_pps)
    while t < seconds:
        meter.record(t, rng.random() < cover_share)
        t += rng.expovariate(rate_pps)
    meter.advance(seconds)


def test_an_exact_poisson_source_scores_its_ideal_compliance() -> None:
    meter = ComplianceMeter.start(0.0, 21.0, window_s=10.0, cover_ratio=0.4, tolerance=0.1)
    emit(meter, 21.0, 20_000 * 10.0, seed=1)
    assert meter.windows == 20_000
    assert abs(meter.compliance - meter.ideal_compliance) < 3 * math.sqrt(0.05 * 0.95 / 20_000)
    assert meter.compliance >= 0.95


def test_a_source_five_percent_slow_fails_most_windows() -> None:
    meter = ComplianceMeter.start(0.0, 21.0, window_s=10.0)
    emit(meter, 21.0 * 0.95, 2_000 * 10.0, seed=2)
    assert meter.compliance < 0.9


def test_a_window_with_too_little_cover_fails_on_its_share() -> None:
    meter = ComplianceMeter.start(0.0, 21.0, window_s=10.0, cover_ratio=0.4, tolerance=0.1)
    emit(meter, 21.0, 500 * 10.0, seed=3, cover_share=0.2)
    assert meter.share_failures == meter.windows
    assert meter.compliance == 0.0


def test_windows_follow_the_target_rate_across_changes() -> None:
    meter = ComplianceMeter.start(0.0, 10.0, window_s=10.0)
    emit(meter, 10.0, 1000.0, seed=4)
    meter.set_rate(1000.0, 40.0)
    rng = random.Random(5)
    t = 1000.0 + rng.expovariate(40.0)
    while t < 2000.0:
        meter.record(t, True)
        t += rng.expovariate(40.0)
    meter.advance(2000.0)
    assert meter.windows == 200
    assert meter.compliance > 0.9  # judged against 400 per window after the change, not 100


def test_drift_is_the_relative_gap_between_emitted_and_target_counts() -> None:
    meter = DriftMeter.start(0.0, 10.0, period_s=100.0)
    for second in range(1000):
        meter.record(second + 0.5, 10)
    assert meter.drift(1000.0) == 0.0
    meter.set_rate(1000.0, 20.0)
    for second in range(1000, 2000):
        meter.record(second + 0.5, 19)  # 5% short at the new rate
    assert math.isclose(meter.drift(2000.0), 1000 / 30_000)
    meter.advance(2000.0)
    assert len(meter.period_drifts) == 20
    assert math.isclose(max(meter.period_drifts), 0.05)


def test_loop_success_counts_returns_and_timeouts_and_names_the_dropping_mix() -> None:
    tracker = LoopTracker(timeout_s=2.0)
    rng = np.random.default_rng(1)
    for n in range(3000):
        route = (f"a{n % 3}", f"b{(n // 3) % 3}", f"c{(n // 9) % 3}")
        loop_id = n.to_bytes(4, "big")
        tracker.sent(loop_id, float(n), route)
        dropped = route[1] == "b2" and rng.random() < 0.5
        if not dropped:
            assert tracker.came_back(loop_id, n + 0.5)
        tracker.expire(float(n))
    tracker.expire(math.inf)
    assert tracker.returned + tracker.lost == 3000
    assert 0.8 < tracker.success < 0.87  # a third of the loops cross b2, half of those are lost
    shares = tracker.failure_share_by_node()
    assert max(shares, key=shares.__getitem__) == "b2"
    assert math.isclose(shares["b2"], 0.5, abs_tol=0.05)
    assert list(tracker.suspects()) == ["b2"]  # not the a* and c* mixes that shared its paths


def test_a_late_or_unknown_loop_is_not_counted_as_returned() -> None:
    tracker = LoopTracker(timeout_s=1.0)
    tracker.sent(b"x", 0.0)
    assert tracker.expire(1.0) == 1
    assert not tracker.came_back(b"x", 1.5)
    assert not tracker.came_back(b"never-sent", 1.5)
    assert tracker.success == 0.0
