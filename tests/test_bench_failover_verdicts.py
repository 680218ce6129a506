"""SCL-004 (route reconfiguration) and SCL-012 (mix failover), each run briefly through a whole
mixnet in this process with mixes killed under the load, driven to FAIL by a slowed scheduler and
to INCONCLUSIVE by a load that could not be offered.

No speed assertions: the checks are that real failovers were measured, no application byte was
lost, the load is reported honestly, and the verdict turns when the scheduler is made slow.
"""

from __future__ import annotations

import dataclasses
import math

import pytest

from nyx.bench import catalogue
from nyx.bench.catalogue import Threshold
from nyx.bench.report import Result
from nyx.bench.runner import RunSettings, run_one


def brief(scenario_id: str, duration_s: float, scale: float, slo: Threshold | None = None) -> Result:
    return run_one(catalogue.by_id(scenario_id), RunSettings(duration_s=duration_s, scale=scale, slo=slo))


def slo(scenario_id: str, text: str, number: float) -> Threshold:
    base = catalogue.by_id(scenario_id).threshold
    return dataclasses.replace(base, text=text, number=number)


def check_measured(result: Result) -> dict:  # type: ignore[type-arg]
    record = result.as_json()
    counts = record["counts"]
    assert record["verdict"] in ("PASS", "FAIL", "INCONCLUSIVE")
    assert 0 < record["achieved_rate"] <= record["offered_rate"] * 1.0001
    assert counts["affected_flows"] >= 1  # the kill hit routes in use
    if counts["lost_bytes"] or counts["mismatched_flows"]:
        # An application byte lost or altered fails the run whatever the failover times were.
        # (Seen now and then in SCL-012: a reply route through a killed mix is never replaced
        # without loop cover, and a flow's echoes can stall past the drain; see docs/benchmarks.md.)
        assert record["value"] == math.inf and (result.shortfall or record["verdict"] == "FAIL")
        return counts
    assert isinstance(record["value"], float) and math.isfinite(record["value"]) and record["value"] >= 0
    if not result.shortfall:  # the same measurement against an SLO it misses must FAIL
        value, base = result.measurement.value, result.scenario.threshold
        tight = dataclasses.replace(base, text=f"<= {value / 2:g}{base.unit}", number=value / 2)
        assert dataclasses.replace(result, slo=tight).verdict == "FAIL"
    return counts


# -- SCL-004: suspicion -> first record on the replacement, p95 in ms ------------------------------


def test_scl_004_measures_route_reconfigurations_of_flows_whose_mixes_were_killed() -> None:
    result = brief("SCL-004", duration_s=4.0, scale=0.01)  # 8 flows of 5 routes, 2 of 24 mixes killed
    counts = check_measured(result)
    assert counts["flows_opened"] == 8 and counts["victims"] == 2
    assert counts["reconfigurations"] >= counts["affected_flows"] - counts["unhealed_flows"]
    assert counts["records_resent"] > 0  # in-flight records went again off the suspected routes
    assert result.scenario.threshold.unit == "ms"
    assert any("reconfiguration p50" in note for note in result.notes())


def test_scl_004_fails_when_replacement_routes_are_built_late(monkeypatch: pytest.MonkeyPatch) -> None:
    from nyx.bench.scenarios import scl_004

    # A route computation taking 0.6 s: every replacement's first record comes at least that late.
    monkeypatch.setattr(scl_004, "ROUTE_BUILD_DELAY_S", 0.6)
    result = brief("SCL-004", duration_s=4.0, scale=0.01)
    assert result.measurement.counts["reconfigurations"] >= 1
    assert result.verdict == "FAIL" and result.measurement.value >= 600.0
    assert any("built 0.6 s late" in note for note in result.notes())


def test_scl_004_is_inconclusive_when_the_flows_cannot_all_be_opened(monkeypatch: pytest.MonkeyPatch) -> None:
    from nyx.bench.scenarios import scl_004

    # 40 flows asked, 0.5 s to open them: most are abandoned, and the load they should carry is missing.
    monkeypatch.setattr(scl_004, "OPEN_DEADLINE_S", 0.5)
    result = brief("SCL-004", duration_s=3.0, scale=0.05)
    assert result.measurement.counts["flows_opened"] < 38
    assert result.shortfall and result.verdict == "INCONCLUSIVE"


# -- SCL-012: first loss -> first record on the replacement, max in s ------------------------------


def test_scl_012_measures_failovers_after_a_tenth_of_the_mixes_die() -> None:
    result = brief("SCL-012", duration_s=6.0, scale=0.016)  # 80 msgs/s over 8 flows, 15 of 150 mixes killed
    counts = check_measured(result)
    assert counts["victims"] == 15 and counts["failovers"] >= 1
    # A flow whose echoes stall (its reply routes through a killed mix are never replaced) may send
    # too few records on a dead forward route to suspect it within 6 s: it then counts, unhealed,
    # from the kill to the end, so the value is at least that.
    if counts["unhealed_flows"]:
        assert result.measurement.value >= 4.0
    assert result.scenario.threshold.unit == "s"


def test_scl_012_fails_when_suspicion_waits_for_a_thousand_losses(monkeypatch: pytest.MonkeyPatch) -> None:
    from nyx.bench.scenarios import scl_012

    # Suspicion after 1,000 losses in a row: routes through killed mixes are never left in the run,
    # and each affected flow counts with the time from the kill to the end (a lower bound, > 3 s
    # here). A 25 s SLO needs a run longer than 25 s to show it: this one judges against 3 s.
    monkeypatch.setattr(scl_012, "LOST_IN_A_ROW", 1000)
    result = brief("SCL-012", duration_s=6.0, scale=0.016, slo=slo("SCL-012", "≤ 3s", 3.0))
    assert result.measurement.counts["unhealed_flows"] >= 1
    assert result.verdict == "FAIL" and result.measurement.value > 3.0


def test_scl_012_is_inconclusive_when_the_flows_cannot_all_be_opened(monkeypatch: pytest.MonkeyPatch) -> None:
    from nyx.bench.scenarios import scl_012

    monkeypatch.setattr(scl_012, "OPEN_DEADLINE_S", 0.5)
    result = brief("SCL-012", duration_s=3.0, scale=0.08)  # 400 msgs/s over 40 flows asked
    assert result.measurement.counts["flows_opened"] < 38
    assert result.shortfall and result.verdict == "INCONCLUSIVE"
