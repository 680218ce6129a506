"""SCL-045 (rolling mix restarts) and SCL-050 (release-day peak with a failover), each run briefly
through a whole mixnet in this process, driven to FAIL by the fault its test names, and to
INCONCLUSIVE by a run too short to resolve its SLO. No speed assertions."""

from __future__ import annotations

import pytest

from nyx.bench import catalogue
from nyx.bench.report import Measurement, Result
from nyx.bench.runner import RunSettings, run_one
from nyx.bench.scenarios import scl_045, scl_050
from nyx.bench.scenarios.scl_045 import Message


def brief(scenario_id: str, duration_s: float, scale: float) -> Result:
    return run_one(catalogue.by_id(scenario_id), RunSettings(duration_s=duration_s, scale=scale))


def test_a_measurement_too_small_to_resolve_its_slo_is_inconclusive_whatever_its_value() -> None:
    scenario = catalogue.by_id("SCL-045")
    clean = Measurement(value=0.0, duration_s=1.0, offered_rate=30.0, achieved_rate=30.0, full_rate=30.0)
    assert Result(scenario, clean, requested_scale=1.0).verdict == "PASS"
    small = Measurement(value=0.0, duration_s=1.0, offered_rate=30.0, achieved_rate=30.0, full_rate=30.0,
                        unresolved="240 messages cannot resolve drop < 0.2%")
    result = Result(scenario, small, requested_scale=1.0)
    assert result.verdict == "INCONCLUSIVE" and not result.passed
    assert "INCONCLUSIVE: 240 messages cannot resolve drop < 0.2%" in result.notes()


# -- SCL-045 ------------------------------------------------------------------------------------------


def test_scl_045_restarts_30_of_300_mixes_and_counts_drops_at_the_application_and_the_mixes() -> None:
    result = brief("SCL-045", duration_s=5.0, scale=1.0)
    counts = result.measurement.counts
    assert counts["restarts"] == 30 and result.measurement.achieved_rate == 30.0
    assert counts["messages"] >= 500 and counts["streams"] == scl_045.CLIENTS
    assert counts["mix_sent_to_mixes"] > counts["messages"]  # every message crosses mixes, both ways
    assert "blind_dropped" in counts and counts["blind_mix_sent_to_mixes"] > 0  # the contrast ran
    notes = " ".join(result.notes())
    assert "30 of 300 mixes" in notes and "replay state kept in 30" in notes
    assert "WITHOUT the directory step" in notes and "the mixes' own drops" in notes
    if result.verdict != "INCONCLUSIVE":
        assert result.verdict == ("PASS" if counts["dropped"] * 500 < counts["messages"] else "FAIL")


def test_scl_045_fails_when_restarts_skip_the_directory_step_under_a_1_s_deadline(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Clients are not told: records sent into a stopped mix wait for their loss timeout before
    # being resent, so echoes come back after seconds (p99 about 2 s here), past a 1 s deadline.
    monkeypatch.setattr(scl_045, "DIRECTORY_STEP", False)
    monkeypatch.setattr(scl_045, "DEADLINE_S", 1.0)
    result = brief("SCL-045", duration_s=5.0, scale=1.0)
    assert result.verdict == "FAIL", result.notes()
    assert result.measurement.value >= 0.2
    assert any("directory step OFF" in note for note in result.notes())


def test_scl_045_is_inconclusive_with_too_few_messages_to_resolve_a_fifth_of_a_percent(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scl_045, "CONTRAST", False)
    result = brief("SCL-045", duration_s=2.0, scale=0.1)  # 3 restarts, 240 messages
    assert result.measurement.counts["messages"] < 500
    assert result.verdict == "INCONCLUSIVE"
    if result.measurement.counts["dropped"] == 0:
        assert any("cannot resolve drop < 0.2%" in note for note in result.notes())


# -- SCL-050 ------------------------------------------------------------------------------------------


def test_scl_050_needs_2000_windows_to_resolve_99_95_percent() -> None:
    assert scl_050.windows_needed() == 2000


def test_scl_050_a_window_is_down_when_more_than_1_percent_of_its_requests_miss_the_deadline() -> None:
    ok = [Message(0.01 * i, b"x", latency_s=0.2, intact=True) for i in range(30)]  # windows 0..2, 10 each
    late = Message(0.155, b"x", latency_s=scl_050.DEADLINE_S + 0.1, intact=True)  # window 1
    garbled = Message(0.255, b"x", latency_s=0.2, intact=False)  # window 2
    lost = Message(0.355, b"x")  # window 3, alone: never answered
    value, windows, down = scl_050.uptime([*ok, late, garbled, lost], duration_s=1.0)
    assert (windows, down) == (4, 3) and value == 25.0
    assert scl_050.uptime(ok, duration_s=1.0) == (100.0, 3, 0)


def test_scl_050_is_inconclusive_on_a_run_too_short_to_resolve_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scl_050, "KILLS", 0)
    result = brief("SCL-050", duration_s=5.0, scale=0.05)
    counts = result.measurement.counts
    assert counts["windows"] < 2000 and counts["requests"] > 100
    assert result.verdict == "INCONCLUSIVE"
    if counts["windows_down"] == 0:
        assert any("cannot resolve uptime >= 99.95%" in note for note in result.notes())


def test_scl_050_fails_when_a_mix_crashes_under_clients_with_one_route(monkeypatch: pytest.MonkeyPatch) -> None:
    # Multipath off: each session's only route may cross a crashed mix; its stream stalls until
    # 3 records are declared lost and a new route is built, and the windows meanwhile are down.
    monkeypatch.setattr(scl_050, "ROUTES", 1)
    result = brief("SCL-050", duration_s=5.0, scale=0.05)
    counts = result.measurement.counts
    assert counts["killed"] == 2 and counts["windows_down"] >= 1
    assert result.verdict == "FAIL", result.notes()
    assert result.measurement.value < 99.95
