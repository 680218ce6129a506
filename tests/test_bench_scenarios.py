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


def test_scl_003_measures_gateway_cpu_over_a_60_percent_pq_mix() -> None:
    result = brief("SCL-003", duration_s=1.0, scale=0.1)
    check_shape(result)
    assert 0 < result.measurement.value < 100 * 2  # a share of one core; two cores at most
    mix = next(note for note in result.notes() if "hybrid (X-Wing)" in note)
    assert "0 failed" in mix


def test_scl_036_completes_handshakes_across_the_suite_switch() -> None:
    result = brief("SCL-036", duration_s=1.5, scale=0.25)
    check_shape(result)
    assert 0 < result.measurement.value <= 100
    suites = next(note for note in result.notes() if note.startswith("suites of completed"))
    assert "'pq'" in suites and "'hybrid'" in suites  # traffic ran on both sides of the switch


def test_scl_037_measures_reload_latency_of_real_rotations() -> None:
    result = brief("SCL-037", duration_s=0.8, scale=0.2)
    check_shape(result)
    assert result.threshold.unit == "s"
    assert 0 < result.measurement.value < 5
    assert len(result.measurement.latencies_s) >= 10
    assert any("0 rotations failed" in note for note in result.notes())


def test_scl_006_counts_end_to_end_loss_over_the_simulated_network() -> None:
    result = brief("SCL-006", duration_s=0.5, scale=0.02)
    check_shape(result)
    assert 0 <= result.measurement.value <= 100
    assert "over sim (60 links among 20 nodes)" in result.notes()[0]


def test_scl_006_runs_over_quic_too() -> None:
    result = brief("SCL-006", duration_s=0.5, scale=0.01, transport="quic")
    check_shape(result)
    assert "over quic" in result.notes()[0]


def test_scl_035_measures_real_quic_handshakes() -> None:
    result = brief("SCL-035", duration_s=1.0, scale=0.25)
    check_shape(result)
    assert result.measurement.value > 0
    assert len(result.measurement.latencies_s) >= 15  # 83/s x 0.25 x 1 s


def test_scl_025_audits_a_running_mix_node_and_names_what_is_missing() -> None:
    result = brief("SCL-025", duration_s=0.6, scale=1.0)
    check_shape(result)
    assert result.measurement.value == int(result.measurement.value) >= 0
    assert "exported by a running mix node" in result.notes()[0]
    if result.measurement.value:
        assert any(note.startswith("missing: ") for note in result.notes())


@pytest.mark.parametrize("scenario_id", ["SCL-005", "SCL-032"])
def test_cover_replays_measure_on_the_virtual_clock(scenario_id: str) -> None:
    result = brief(scenario_id, duration_s=1800.0, scale=1.0)  # half a simulated hour
    check_shape(result)
    assert result.measurement.value >= 0
    assert "simulated" in result.notes()[0]
