"""The adaptive controller: the rate law, the one-sided rise test (no rise on counts below the
threshold's Poisson quantile, a rise on a full queue), following a step within the window,
smoothed decay, low-power mode with its floor, the bandwidth cap."""

from __future__ import annotations

import math

import pytest

from nyx.cover import RateController, RatePolicy
from nyx.cover.rate import poisson_upper_quantile

POLICY = RatePolicy(base_pps=5.0, cover_ratio=0.4, window_s=5.0, tick_s=1.0, decay_s=5.0)


def drive(controller: RateController, real_pps: float, start: float, end: float) -> list[tuple[float, float]]:
    """Offer real packets evenly at `real_pps` over [start, end); return (tick time, rate)."""
    rates = []
    t = start
    per_tick = real_pps * controller.policy.tick_s
    while t < end:
        controller.observe(t, round(per_tick))
        t += controller.policy.tick_s
        rates.append((t, controller.tick(t)))
    return rates


def test_the_law_is_max_of_base_and_real_over_one_minus_r() -> None:
    assert POLICY.target_pps(0.0) == 5.0
    assert POLICY.target_pps(2.0) == 5.0  # below (1 - r) * base: the slots absorb it
    assert math.isclose(POLICY.target_pps(30.0), 50.0)
    # the cover part is the v1.0 law's real * r / (1 - r): the cover share is exactly r
    assert math.isclose((50.0 - 30.0) / 50.0, 0.4)


def test_the_rate_follows_a_step_up_within_the_window() -> None:
    controller = RateController(POLICY, 0.0)
    drive(controller, 0.0, 0.0, 100.0)
    assert controller.rate_pps == 5.0
    rates = drive(controller, 30.0, 100.0, 120.0)
    target = POLICY.target_pps(30.0)
    reached = next(t for t, rate in rates if rate >= 0.99 * target)
    assert reached - 100.0 <= POLICY.window_s
    assert all(rate <= target + 1e-9 for _, rate in rates)


def test_after_a_step_down_the_rate_decays_smoothly_to_base() -> None:
    controller = RateController(POLICY, 0.0)
    drive(controller, 30.0, 0.0, 60.0)
    rates = [rate for _, rate in drive(controller, 0.0, 60.0, 120.0)]
    assert all(a >= b for a, b in zip(rates, rates[1:]))  # never back up
    assert rates[1] > 0.5 * POLICY.target_pps(30.0)  # no cliff the second the burst ends
    assert rates[-1] == 5.0  # and back at exactly the base


def test_low_power_scales_the_rate_by_a_tenth_but_keeps_its_floor_and_real_slots() -> None:
    policy = RatePolicy(base_pps=5.0, low_power_floor_pps=0.2)
    assert math.isclose(policy.target_pps(0.0, low_power=True), 0.5)
    assert RatePolicy(base_pps=1.0, low_power_floor_pps=0.2).target_pps(0.0, low_power=True) == 0.2
    # real traffic still gets one slot per packet; only the cover on top is scaled
    assert math.isclose(policy.target_pps(30.0, low_power=True), 30.0 + 0.1 * 20.0)


def test_the_bandwidth_cap_bounds_the_rate() -> None:
    policy = RatePolicy(base_pps=5.0, cap_pps=40.0)
    assert policy.target_pps(100.0) == 40.0


@pytest.mark.parametrize("ratio", [0.1, 0.7])
def test_a_cover_ratio_outside_0_2_to_0_6_is_refused(ratio: float) -> None:
    with pytest.raises(ValueError, match="cover_ratio"):
        RatePolicy(cover_ratio=ratio)


def test_missed_ticks_are_skipped_not_replayed() -> None:
    controller = RateController(POLICY, 0.0)
    controller.tick(500.0)
    assert controller.next_tick_at == 501.0


def poisson_sf(mean: float, k: int) -> float:
    """P(X > k) for X ~ Poisson(mean), summed directly over the upper tail."""
    term = math.exp(-mean + (k + 1) * math.log(mean) - math.lgamma(k + 2))
    total, j = 0.0, k + 1
    while term > 1e-30 * max(total, 1e-300):
        total += term
        j += 1
        term *= mean / j
    return total


@pytest.mark.parametrize("mean", [0.5, 15.0, 90.0, 270.0, 2700.0])
@pytest.mark.parametrize("tail_p", [5e-7, 1e-3, 0.3])
def test_the_upper_quantile_is_the_smallest_count_with_tail_at_most_p(mean: float, tail_p: float) -> None:
    k = poisson_upper_quantile(mean, tail_p)
    assert poisson_sf(mean, k) <= tail_p
    assert k == 0 or poisson_sf(mean, k - 1) > tail_p


def test_the_threshold_is_where_the_law_leaves_the_floor() -> None:
    assert math.isclose(POLICY.threshold_pps(), 3.0)  # (1 - r) * base
    assert POLICY.target_pps(POLICY.threshold_pps()) == POLICY.base_pps
    assert POLICY.target_pps(1.01 * POLICY.threshold_pps()) > POLICY.base_pps
    low = POLICY.threshold_pps(low_power=True)
    assert math.isclose(POLICY.target_pps(low, low_power=True), POLICY.target_pps(0.0, low_power=True))
    assert RatePolicy(base_pps=5.0, cap_pps=5.0).threshold_pps() == math.inf


def test_counts_up_to_the_quantile_never_move_the_rate() -> None:
    # the long window exactly at its quantile (140 in 30 s, 4.7 pps), every short window above the
    # threshold's mean: the old controller rose to 25 / 5 / 0.6 = 8.3 pps on these counts
    controller = RateController(POLICY, 0.0)
    long_limit = poisson_upper_quantile(3.0 * POLICY.confirm_window_s, POLICY.false_alarm_p / 2)
    short_limit = poisson_upper_quantile(3.0 * POLICY.window_s, POLICY.false_alarm_p / 2)
    per_tick = [long_limit // 30 + (i < long_limit % 30) for i in range(30)]  # every 30 s: the limit
    assert sum(per_tick) == long_limit and 3.0 * POLICY.window_s < sum(per_tick[:5]) <= short_limit
    for t, count in enumerate(per_tick * 4, start=1):
        controller.observe(float(t), count)
        assert controller.tick(float(t)) == POLICY.base_pps
    assert not controller.engaged and controller.engagements == 0


def test_one_packet_over_the_long_quantile_raises_the_rate() -> None:
    controller = RateController(POLICY, 0.0)
    long_limit = poisson_upper_quantile(3.0 * POLICY.confirm_window_s, POLICY.false_alarm_p / 2)
    for t in range(1, 31):
        controller.observe(float(t), long_limit // 30)
        controller.tick(float(t))
    controller.observe(31.0, long_limit - 29 * (long_limit // 30) + 1)  # the window now holds limit + 1
    assert controller.tick(31.0) > POLICY.base_pps
    assert controller.engaged


def test_a_full_queue_raises_the_rate_whatever_the_count() -> None:
    # 5 pps accepted, all a saturated 5 pps slot rate lets through: 150 in 30 s can stay under the
    # long window's quantile (150 here; more at r = 0.2), so the count alone might never rise
    controller = RateController(POLICY, 0.0)
    for t in range(1, 6):
        controller.observe(t - 0.5, 5)
        controller.queue_full(t - 0.5)
        controller.tick(float(t))
    assert controller.engaged
    assert controller.rate_pps == POLICY.target_pps(5.0) > POLICY.base_pps
