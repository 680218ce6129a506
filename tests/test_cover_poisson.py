"""Poisson schedules: inter-send times are exponential at the target rate (Kolmogorov-Smirnov),
rate changes are memoryless, late wake-ups are paid back, long absences are skipped.

KS: D = sup |F_n(x) - F(x)| against the exponential CDF at the target rate, compared with the
asymptotic critical value sqrt(-ln(alpha / 2) / 2) / sqrt(n) at significance alpha = 0.01
(1.628 / sqrt(n)). Seeds are fixed, so each test is deterministic; a negative control shows the
test rejects a 10% rate error at the same sample size.
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from nyx.cover import ClientCover, CoverConfig, Kind, PoissonSchedule, RatePolicy

ALPHA = 0.01


def ks_statistic_exponential(samples: np.ndarray, rate: float) -> float:
    x = np.sort(samples)
    n = len(x)
    cdf = 1.0 - np.exp(-rate * x)
    i = np.arange(1, n + 1)
    return float(max((i / n - cdf).max(), (cdf - (i - 1) / n).max()))


def ks_critical(n: int, alpha: float = ALPHA) -> float:
    return math.sqrt(-0.5 * math.log(alpha / 2)) / math.sqrt(n)


def schedule_gaps(rate_pps: float, n: int, seed: int) -> np.ndarray:
    schedule = PoissonSchedule(rate_pps, random.Random(seed), 0.0)
    times = []
    while len(times) < n:
        now = schedule.next_at
        assert schedule.pop_due(now) == 1
        times.append(now)
    return np.diff(np.array([0.0] + times))


def test_inter_send_times_pass_ks_against_the_exponential_at_the_target_rate() -> None:
    gaps = schedule_gaps(10.0, 20_000, seed=1)
    assert ks_statistic_exponential(gaps, 10.0) < ks_critical(len(gaps))


def test_ks_rejects_a_ten_percent_rate_error_at_the_same_sample_size() -> None:
    gaps = schedule_gaps(10.0, 20_000, seed=1)
    assert ks_statistic_exponential(gaps, 11.0) > ks_critical(len(gaps))


def test_a_clients_wire_inter_send_times_are_exponential_at_the_total_rate_with_real_traffic() -> None:
    # real traffic (1 pps, one per second) stays below (1 - r) * base, so the slot rate stays at
    # base and the wire is one Poisson process of rate base + loop + drop
    config = CoverConfig(RatePolicy(base_pps=5.0, cover_ratio=0.4), loop_pps=1.0, drop_pps=1.0)
    cover: ClientCover[int] = ClientCover(config, random.Random(7), 0.0)
    times: list[float] = []
    next_real, sent_real = 0.5, 0
    while len(times) < 20_000:
        deadline = cover.next_deadline()
        if next_real <= deadline:
            assert cover.offer(sent_real, next_real)
            next_real += 1.0
            continue
        sends = cover.poll(deadline)
        times.extend(deadline for _ in sends)
        sent_real += sum(s.kind is Kind.REAL for s in sends)
    assert sent_real > 2000
    gaps = np.diff(np.array(times))
    assert ks_statistic_exponential(gaps, 7.0) < ks_critical(len(gaps))


def test_a_rate_change_redraws_the_pending_send_from_now() -> None:
    schedule = PoissonSchedule(0.001, random.Random(3), 0.0)
    assert schedule.next_at > 10.0  # practically never at 0.001 pps
    schedule.set_rate(1000.0, 10.0)
    assert 10.0 < schedule.next_at < 10.1
    schedule.set_rate(0.0, 10.0)
    assert schedule.next_at == math.inf


def test_counts_over_a_piecewise_rate_have_the_integral_as_their_mean() -> None:
    schedule = PoissonSchedule(5.0, random.Random(11), 0.0)
    emitted, now = 0, 0.0
    for step in range(2000):
        now += 1.0
        emitted += schedule.pop_due(now)
        schedule.set_rate(5.0 if step % 2 else 20.0, now)
    expected = 1000 * 20.0 + 1000 * 5.0  # rate 20 for the odd seconds, 5 for the even
    assert abs(emitted - expected) < 4 * math.sqrt(expected)


def test_late_wake_ups_are_paid_back_so_the_long_run_rate_is_exact() -> None:
    rng = random.Random(5)
    schedule = PoissonSchedule(10.0, random.Random(6), 0.0)
    now = 0.0
    while now < 20_000.0:
        now = schedule.next_at + rng.expovariate(1 / 0.005)  # every wake-up 5 ms late on average
        schedule.pop_due(now)
    expected = 10.0 * now
    assert abs(schedule.emitted - expected) < 4 * math.sqrt(expected)  # 0.14%: no 5% slowdown
    assert schedule.skipped == 0


def test_sends_missed_by_more_than_max_lateness_are_skipped_not_burst() -> None:
    schedule = PoissonSchedule(10.0, random.Random(8), 0.0, max_lateness_s=1.0)
    due = schedule.pop_due(3600.0)  # away for an hour
    assert due <= 30  # at most the last second's sends (P(Poisson(10) > 30) ~ 1e-7)
    assert schedule.skipped > 35_000
    assert schedule.next_at > 3600.0


@pytest.mark.parametrize("rate", [-1.0, math.inf, math.nan])
def test_a_negative_or_non_finite_rate_is_refused(rate: float) -> None:
    with pytest.raises(ValueError):
        PoissonSchedule(rate, random.Random(0), 0.0)
