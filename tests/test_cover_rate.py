"""The adaptive controller: the rate law, following a step within the window, smoothed decay,
low-power mode with its floor, the bandwidth cap."""

from __future__ import annotations

import math

import pytest

from nyx.cover import RateController, RatePolicy

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
