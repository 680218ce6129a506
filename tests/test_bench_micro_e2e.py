"""`nyx.bench micro --only e2e`: the overhead measurement answers every request it asked and
its figure moves with load (so it can miss its goal), without timing assertions."""

from __future__ import annotations

from nyx.bench import micro
from nyx.bench.micro_e2e import HOPS_PER_ROUND_TRIP, _overhead, _p95


async def test_unloaded_requests_are_all_answered_and_timed() -> None:
    latencies, asked, done = await _overhead(None, 1.0)
    assert asked == done == len(latencies) >= 10
    assert all(latency > 0 for latency in latencies)
    assert _p95(latencies) / HOPS_PER_ROUND_TRIP > 0


async def test_a_poisson_load_is_offered_on_schedule_and_counted() -> None:
    latencies, asked, done = await _overhead(100.0, 1.0)
    assert 50 <= asked <= 200  # Poisson(100/s) over 1 s, on an absolute schedule
    assert done == len(latencies) <= asked


def test_the_section_is_registered() -> None:
    assert "e2e" in dict(micro.SECTIONS)
