"""Timing helpers for `python -m nyx.bench micro`.

These machines are noisy (2 shared cores), so every figure is the best of several rounds and is
reported beside a reference measured in the same run; a ratio survives noise that a raw number
does not.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass


@dataclass(frozen=True, slots=True)
class MicroRecord:
    """One line of the micro benchmark: an operation and the reference it is judged against.

    `ratio` = ops_per_s / reference_ops_per_s, so above 1 means faster than the reference.
    """

    name: str
    ops_per_s: float
    reference: str
    reference_ops_per_s: float

    @property
    def ratio(self) -> float:
        return self.ops_per_s / self.reference_ops_per_s

    def as_json(self) -> dict[str, float | str]:
        record: dict[str, float | str] = asdict(self)
        record["ratio"] = self.ratio
        return record


def seconds_per_op(operation: Callable[[], object], budget_s: float = 0.3, rounds: int = 5) -> float:
    """Best-of-`rounds` time of one call of `operation`, spending about `budget_s` in all.

    The best round is the one least disturbed by other processes; it is the usual estimator for
    micro benchmarks (timeit does the same).
    """
    operation()  # warm caches and lazy imports outside the timed region
    start = time.perf_counter()
    operation()
    single_s = max(time.perf_counter() - start, 1e-7)
    per_round = max(1, int(budget_s / rounds / single_s))
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(per_round):
            operation()
        best = min(best, (time.perf_counter() - start) / per_round)
    return best


def ops_per_s(operation: Callable[[], object], budget_s: float = 0.3) -> float:
    """Operations per second of `operation` (see `seconds_per_op`)."""
    return 1.0 / seconds_per_op(operation, budget_s)
