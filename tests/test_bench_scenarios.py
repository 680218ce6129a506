"""Each replayed SCL scenario, run briefly at a small scale: the value is really measured.

No speed assertions: these machines are shared and slow. The checks are that the replay ran
the real layer code, produced a finite value in the SLO's unit, and reported its load honestly.
"""

from __future__ import annotations

import math

import pytest

from nyx.bench import catalogue
from nyx.bench.report import Result
from nyx.bench.runner import RunSettings, run_one


def brief(scenario_id: str, duration_s: float = 0.6, scale: float = 0.1, **kwargs: object) -> Result:
    return run_one(catalogue.by_id(scenario_id), RunSettings(duration_s=duration_s, scale=scale, **kwargs))  # type: ignore[arg-type]


def check_shape(result: Result) -> None:
    record = result.as_json()
    assert record["scenario"] == result.scenario.id
    assert isinstance(record["value"], float) and math.isfinite(record["value"])
    assert record["pass"] == result.scenario.threshold.holds(record["value"])
    assert 0 < record["scale"] <= 1
    if record["offered_rate"] is not None:
        assert 0 < record["achieved_rate"] <= record["offered_rate"] * 1.0001


def test_scl_044_measures_encode_latency_of_real_blocks() -> None:
    result = brief("SCL-044")
    check_shape(result)
    assert result.measurement.value > 0
    assert len(result.measurement.latencies_s) >= 40  # 833 blocks/s x 0.1 x 0.6 s
    assert any("fec_encode_latency" in note for note in result.notes())
