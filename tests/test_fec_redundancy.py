"""The redundancy controller: the binomial-tail law, its hysteresis, and a simulated loss sweep."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nyx.fec import FecError, RedundancyController, block_loss_probability


def poisson_upper_bound(count: int, confidence: float = 0.95) -> float:
    """The one-sided upper confidence bound on a Poisson mean after observing `count` events."""
    def cdf(mean: float) -> float:
        return math.fsum(math.exp(-mean) * mean**j / math.factorial(j) for j in range(count + 1))

    low, high = 0.0, count + 50.0
    for _ in range(100):  # bisection: cdf falls as the mean grows
        mid = (low + high) / 2
        low, high = (mid, high) if cdf(mid) > 1 - confidence else (low, mid)
    return high


def simulate(controller: RedundancyController, loss_rate: float, blocks: int, seed: int) -> tuple[int, list[int]]:
    """Independent shard loss at `loss_rate`; returns (unrecoverable blocks, m used per block)."""
    rng = np.random.default_rng(seed)
    failures = 0
    used: list[int] = []
    for _ in range(blocks):
        m = controller.m
        n = controller.k + m
        lost = int(rng.binomial(n, loss_rate))
        failures += lost > m
        used.append(m)
        controller.observe(n, lost)
    return failures, used


def test_binomial_tail_matches_a_direct_count() -> None:
    # k=1, m=1: the block is lost only if both shards are lost
    assert block_loss_probability(1, 1, 0.1) == pytest.approx(0.01)
    assert block_loss_probability(10, 3, 0.0) == 0.0
    assert block_loss_probability(10, 3, 1.0) == 1.0


@pytest.mark.parametrize("loss_rate", [0.01, 0.05, 0.10, 0.20])
def test_residual_block_loss_stays_under_target_in_a_loss_sweep(loss_rate: float) -> None:
    target = 1e-4
    blocks = 100_000
    controller = RedundancyController(10, target_block_loss=target)
    failures, used = simulate(controller, loss_rate, blocks, seed=int(loss_rate * 1000))
    # The measured rate, and even its 95% upper confidence bound, is under the target: 100,000
    # blocks can tell 1e-4 (10 expected failures) from the few we see.
    assert poisson_upper_bound(failures) / blocks < target, (failures, blocks)
    # and not by brute force: m stays within two of the least m that meets the target exactly
    exact = next(m for m in range(60) if block_loss_probability(10, m, loss_rate) <= target)
    assert max(used[blocks // 10 :]) <= exact + 2


@pytest.mark.parametrize("loss_rate", [0.01, 0.05, 0.10, 0.20])
def test_m_does_not_flap_under_steady_loss(loss_rate: float) -> None:
    controller = RedundancyController(10)
    _, used = simulate(controller, loss_rate, 20_000, seed=7)
    changes = sum(a != b for a, b in zip(used, used[1:]))
    assert changes <= 40  # fewer than one change per 500 blocks


def test_m_rises_at_once_when_loss_jumps_and_falls_slowly_when_it_eases() -> None:
    controller = RedundancyController(10, prior_loss_rate=0.01)
    simulate(controller, 0.01, 3_000, seed=1)
    calm_m = controller.m
    for _ in range(40):  # one bad window at 30% loss
        controller.observe(20, 6)
    raised = controller.m
    assert raised > calm_m + 2
    controller.observe(20, 0)
    assert controller.m >= raised - 1  # hysteresis: no immediate fall back


def test_m_stays_within_bounds_and_reports_when_the_target_is_out_of_reach() -> None:
    controller = RedundancyController(10, max_m=6)
    for _ in range(200):
        controller.observe(16, 8)  # 50% loss
    decision = controller.decide()
    assert decision.m == 6
    assert not decision.meets_target
    assert decision.predicted_block_loss > controller.target_block_loss


def test_first_block_is_protected_before_any_observation() -> None:
    decision = RedundancyController(10).decide()
    assert decision.m >= 3 and decision.meets_target


@pytest.mark.parametrize(
    "kwargs",
    [{"k": 0}, {"k": 255}, {"k": 10, "target_block_loss": 0}, {"k": 10, "min_m": 5, "max_m": 4}, {"k": 200, "max_m": 56}],
)
def test_impossible_settings_are_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(FecError):
        RedundancyController(**kwargs)  # type: ignore[arg-type]


def test_more_lost_than_sent_is_an_error() -> None:
    with pytest.raises(FecError, match="3 lost of 2 sent"):
        RedundancyController(10).observe(2, 3)
