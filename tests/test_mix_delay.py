"""Delay policy: Erlang budgets, exponential delays, one heap, threshold-or-timer batches."""

from __future__ import annotations

import math
import random

import pytest

from nyx.mix.delay import (
    BatchQueue,
    DelayQueue,
    PoissonDelay,
    erlang_cdf,
    erlang_quantile,
    mean_delay_for_budget,
)


def test_the_erlang_quantile_matches_known_values() -> None:
    assert erlang_quantile(1, 0.95) == pytest.approx(-math.log(0.05))
    assert erlang_quantile(3, 0.95) == pytest.approx(6.2958, abs=1e-4)
    assert erlang_cdf(5, erlang_quantile(5, 0.99)) == pytest.approx(0.99)


def test_a_latency_budget_is_met_at_the_stated_quantile() -> None:
    mean = mean_delay_for_budget(latency_budget_s=1.0, hops=3, quantile=0.95)
    delay = PoissonDelay(mean, random.Random(1))
    totals = [sum(delay.sample() for _ in range(3)) for _ in range(20_000)]
    within = sum(total <= 1.0 for total in totals) / len(totals)
    assert 0.94 < within < 0.96


def test_a_zero_mean_forwards_at_once() -> None:
    assert PoissonDelay(0.0).sample() == 0.0


def test_the_delay_queue_releases_in_due_order_and_drains_everything() -> None:
    queue: DelayQueue[str] = DelayQueue()
    for due, name in [(3.0, "c"), (1.0, "a"), (2.0, "b"), (1.0, "a2")]:
        queue.push(due, name)
    assert queue.next_due() == 1.0
    assert queue.pop_due(1.5) == ["a", "a2"]
    assert queue.pop_due(1.5) == []
    assert queue.drain() == ["b", "c"]
    assert len(queue) == 0 and queue.next_due() is None


def test_a_batch_leaves_when_full() -> None:
    batch: BatchQueue[int] = BatchQueue(size=4, timeout_s=10.0, rng=random.Random(3))
    for i in range(3):
        batch.push(0.0, i)
    assert batch.pop_due(1.0) == []
    batch.push(1.0, 3)
    assert batch.next_due() == 0.0
    assert sorted(batch.pop_due(1.0)) == [0, 1, 2, 3]


def test_a_batch_leaves_on_its_timer_shuffled() -> None:
    batch: BatchQueue[int] = BatchQueue(size=1000, timeout_s=0.5, rng=random.Random(5))
    for i in range(50):
        batch.push(10.0 + i / 1000, i)
    assert batch.next_due() == 10.5
    assert batch.pop_due(10.49) == []
    released = batch.pop_due(10.5)
    assert sorted(released) == list(range(50)) and released != list(range(50))


def test_bad_delay_parameters_are_refused() -> None:
    with pytest.raises(ValueError):
        PoissonDelay(-1.0)
    with pytest.raises(ValueError):
        mean_delay_for_budget(0.0, 3)
    with pytest.raises(ValueError):
        BatchQueue(0, 1.0)
