"""Delay policy: how long a mix holds each packet, and the one structure holding them.

Poisson mixing (Loopix): each hop holds a packet for an exponential delay, memoryless, so the
order of departures says nothing about the order of arrivals. The mean is set directly or derived
from a latency budget: over `hops` hops the total delay is Erlang(hops, 1/mean), so a budget met
with probability q needs mean = budget / Q(hops, q), with Q the Erlang quantile of rate 1.

Batch mode (cMix-style threshold-or-timer mix): collect N packets or wait T after the first, then
send the batch in a random order.

Delayed packets sit in one heap (or one batch) owned by the node, which arms a single timer for
`next_due()`; there is never a task or a `call_later` per packet.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from typing import Generic, TypeVar

T = TypeVar("T")


def erlang_cdf(hops: int, x: float) -> float:
    """P(X <= x) for X ~ Erlang(hops, rate 1), the sum of `hops` unit exponentials."""
    if x <= 0:
        return 0.0
    term, total = 1.0, 1.0
    for j in range(1, hops):
        term *= x / j
        total += term
    return 1.0 - math.exp(-x) * total


def erlang_quantile(hops: int, quantile: float) -> float:
    """The x with erlang_cdf(hops, x) = quantile (bisection; the CDF is monotone)."""
    if hops < 1 or not 0 < quantile < 1:
        raise ValueError(f"need hops >= 1 and 0 < quantile < 1 (got {hops}, {quantile})")
    low, high = 0.0, float(hops)
    while erlang_cdf(hops, high) < quantile:
        high *= 2
    for _ in range(100):
        mid = (low + high) / 2
        if erlang_cdf(hops, mid) < quantile:
            low = mid
        else:
            high = mid
    return (low + high) / 2


def mean_delay_for_budget(latency_budget_s: float, hops: int, quantile: float = 0.95) -> float:
    """Per-hop mean delay so that the mixing delay over `hops` hops stays within
    `latency_budget_s` with probability `quantile`."""
    if latency_budget_s <= 0:
        raise ValueError(f"a latency budget must be positive, not {latency_budget_s}")
    return latency_budget_s / erlang_quantile(hops, quantile)


class PoissonDelay:
    """Exponential per-hop delays of mean `mean_s` (0 means forward at once)."""

    __slots__ = ("mean_s", "_rng")

    def __init__(self, mean_s: float, rng: random.Random | None = None) -> None:
        if mean_s < 0:
            raise ValueError(f"a mean delay cannot be negative ({mean_s})")
        self.mean_s = mean_s
        self._rng = rng or random.SystemRandom()

    @classmethod
    def for_budget(
        cls, latency_budget_s: float, hops: int, quantile: float = 0.95, rng: random.Random | None = None
    ) -> PoissonDelay:
        return cls(mean_delay_for_budget(latency_budget_s, hops, quantile), rng)

    def sample(self) -> float:
        return self._rng.expovariate(1.0 / self.mean_s) if self.mean_s > 0 else 0.0


class DelayQueue(Generic[T]):
    """Packets waiting for their departure time, in one heap."""

    __slots__ = ("_heap", "_order")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, T]] = []
        self._order = itertools.count()  # ties leave in arrival order; items never compared

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, due: float, item: T) -> None:
        heapq.heappush(self._heap, (due, next(self._order), item))

    def next_due(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> list[T]:
        """Every item due at or before `now`, earliest first."""
        heap, out = self._heap, []
        while heap and heap[0][0] <= now:
            out.append(heapq.heappop(heap)[2])
        return out

    def drain(self) -> list[T]:
        """Everything still queued, earliest first (shutdown: flush rather than lose)."""
        out = [entry[2] for entry in sorted(self._heap)]
        self._heap.clear()
        return out


class BatchQueue(Generic[T]):
    """Threshold-or-timer batching: a batch leaves, shuffled, when it holds `size` packets or
    `timeout_s` after its first packet arrived, whichever comes first."""

    __slots__ = ("size", "timeout_s", "_batch", "_opened", "_rng")

    def __init__(self, size: int, timeout_s: float, rng: random.Random | None = None) -> None:
        if size < 1 or timeout_s <= 0:
            raise ValueError(f"a batch needs size >= 1 and timeout_s > 0 (got {size}, {timeout_s})")
        self.size = size
        self.timeout_s = timeout_s
        self._batch: list[T] = []
        self._opened = 0.0
        self._rng = rng or random.SystemRandom()

    def __len__(self) -> int:
        return len(self._batch)

    def push(self, now: float, item: T) -> None:
        if not self._batch:
            self._opened = now
        self._batch.append(item)

    def next_due(self) -> float | None:
        if not self._batch:
            return None
        return self._opened if len(self._batch) >= self.size else self._opened + self.timeout_s

    def pop_due(self, now: float) -> list[T]:
        due = self.next_due()
        if due is None or due > now:
            return []
        return self.drain()

    def drain(self) -> list[T]:
        batch, self._batch = self._batch, []
        self._rng.shuffle(batch)
        return batch
