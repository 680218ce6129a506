"""The stream replays (nyx/bench/scenarios/scl_0xx.py that run `nyx.bench.mixnet`), each run
briefly through a whole mixnet in this process (real gateways, mixes, handshakes and Sphinx
packets over `SimTransport`), and each driven to FAIL by an injected fault its test names.

As in tests/test_bench_scenarios.py: no speed assertions (these machines are shared), but the
value is really measured, the load is reported honestly, and the verdict turns to FAIL against an
SLO just beyond the value and under the fault.
"""

from __future__ import annotations

import dataclasses
import math

import pytest

from nyx.bench import catalogue
from nyx.bench.catalogue import Threshold
from nyx.bench.report import Result
from nyx.bench.runner import RunSettings, run_one


def brief(scenario_id: str, duration_s: float, scale: float) -> Result:
    return run_one(catalogue.by_id(scenario_id), RunSettings(duration_s=duration_s, scale=scale))


def beyond(result: Result) -> Threshold:
    """The scenario's SLO moved just past the measured value, so that value misses it."""
    slo, value = result.scenario.threshold, result.measurement.value
    if slo.op in ("<=", "<"):
        number = value / 2 if value > 0 else -1.0
    elif slo.op in (">=", ">"):
        number = value * 2 + 1
    else:
        number = value + 1
    return dataclasses.replace(slo, text=f"{slo.op} {number:g}{slo.unit}", number=number)


def check_shape(result: Result) -> dict:  # type: ignore[type-arg]
    record = result.as_json()
    assert record["scenario"] == result.scenario.id
    assert isinstance(record["value"], float) and math.isfinite(record["value"])
    assert record["verdict"] in ("PASS", "FAIL", "INCONCLUSIVE")
    if record["verdict"] != "INCONCLUSIVE":
        assert record["pass"] == result.scenario.threshold.holds(record["value"])
    assert 0 < record["achieved_rate"] <= record["offered_rate"] * 1.0001
    assert 0 <= record["scale"] <= 1  # 20 of 200k clients floors to 0.000: the rates say how many
    tightened = dataclasses.replace(result, slo=beyond(result))
    assert tightened.verdict == ("INCONCLUSIVE" if result.shortfall else "FAIL")
    return record


# -- SCL-001: p95 of 64 B echoes through 10 gateways and 15 mixes ------------------------------------


def test_scl_001_echoes_requests_on_persistent_streams_through_the_mixes() -> None:
    result = brief("SCL-001", duration_s=2.0, scale=0.04)  # 20 req/s over 4 clients
    record = check_shape(result)
    counts = record["counts"]
    assert counts["clients"] == 4 and counts["issued"] >= 15
    assert counts["unanswered"] == 0 and counts["mismatched"] == 0
    assert result.measurement.value > 20.0  # ms: at least the 10 links of 2 ms; the mixes add more
    assert any("Poisson mean 15.2 ms per mix" in note for note in result.notes())
    assert any("per hop over 10 hops" in note for note in result.notes())


def test_scl_001_fails_when_the_mixes_take_more_than_the_whole_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    from nyx.bench.scenarios import scl_001
    from nyx.mix.delay import mean_delay_for_budget

    # Twice the p95 budget to the mixes alone: 61 ms per mix, 640 ms over 6 hops at the 95th percentile.
    monkeypatch.setattr(scl_001, "MEAN_DELAY_S", mean_delay_for_budget(2 * scl_001.SLO_S, scl_001.MIX_HOPS))
    result = brief("SCL-001", duration_s=2.0, scale=0.04)
    assert result.verdict == "FAIL" and result.measurement.value > 320.0


# -- SCL-002: session creations, with a crowd behind one address meeting the rate limit ------------


def test_scl_002_creates_sessions_and_counts_rate_limited_refusals_apart_from_errors() -> None:
    result = brief("SCL-002", duration_s=3.0, scale=0.002)  # 4 creations/s
    record = check_shape(result)
    counts = record["counts"]
    assert counts["attempted"] >= 8 and counts["errors"] == 0 and result.measurement.value == 0.0
    # The first creation comes from the crowd's address, whose burst was spent before the clock:
    # the real gateway path refuses it as rate limited, and that is not an error.
    assert counts["refused_rate_limited"] >= 1 and counts["crowd_refused_by_limiter"] >= 1
    assert counts["created"] + counts["refused_rate_limited"] == counts["attempted"]
    assert any("correctly refused" in note for note in result.notes())


def test_scl_002_fails_when_gateways_hold_no_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    from nyx.bench.scenarios import scl_002

    monkeypatch.setattr(scl_002, "MAX_CLIENTS_PER_GATEWAY", 0)  # every client refused as FULL: errors
    result = brief("SCL-002", duration_s=1.0, scale=0.002)
    assert result.verdict == "FAIL" and result.measurement.value == 100.0
    assert any("refused (full)" in note for note in result.notes())


# -- SCL-013: a consumer 50% slower, backpressure, a bounded queue, no byte lost --------------------


def test_scl_013_holds_the_writer_back_and_loses_no_accepted_byte() -> None:
    result = brief("SCL-013", duration_s=3.0, scale=1.0)  # 1,500 req/s into a 1,000 req/s consumer
    record = check_shape(result)
    counts = record["counts"]
    assert counts["accepted"] > 3000 and counts["bytes_lost"] == 0
    assert counts["bytes_received"] == counts["bytes_accepted"] == 64 * counts["accepted"]
    assert any("every accepted byte arrived in order" in note for note in result.notes())
    assert 0 <= result.measurement.value < 5.0  # the windows still absorb the backlog in 3 s


def test_scl_013_fails_when_the_consumer_is_far_slower(monkeypatch: pytest.MonkeyPatch) -> None:
    from nyx.bench.scenarios import scl_013

    monkeypatch.setattr(scl_013, "CONSUMER_SHARE", 0.1)  # 150 req/s against 1,500 offered
    result = brief("SCL-013", duration_s=2.5, scale=1.0)
    assert result.verdict == "FAIL" and result.measurement.value > 5.0
    assert result.as_json()["counts"]["bytes_lost"] == 0  # slow, but nothing accepted is lost


# -- SCL-016: mobile clients on lossy, intermittent links --------------------------------------------


def test_scl_016_mobile_clients_open_sessions_over_lossy_intermittent_links(monkeypatch: pytest.MonkeyPatch) -> None:
    from nyx.bench.scenarios import scl_016

    # A 12 s deadline bounds the test's time (about 1 client in 100 needs more than 30 s): the
    # slowest successes take about 10 s through the loss and the outages.
    monkeypatch.setattr(scl_016, "DEADLINE_S", 12.0)
    result = brief("SCL-016", duration_s=2.0, scale=0.00005)  # 10 clients
    record = check_shape(result)
    counts = record["counts"]
    assert counts["started"] == 10 and counts["peak_connected"] >= 1
    assert counts["outages"] > 0  # the links really went down
    assert result.measurement.value >= 80.0  # the stack's resends carry most through 3% loss
    assert any("held" in note and "clients connected at once" in note for note in result.notes())


def test_scl_016_fails_when_the_links_lose_most_packets(monkeypatch: pytest.MonkeyPatch) -> None:
    from nyx.bench.scenarios import scl_016
    from nyx.transport import LinkProfile

    monkeypatch.setattr(scl_016, "MOBILE_LINK", LinkProfile(latency_s=0.04, loss=0.6))
    monkeypatch.setattr(scl_016, "DEADLINE_S", 2.0)
    result = brief("SCL-016", duration_s=1.0, scale=0.00005)
    assert result.verdict == "FAIL" and result.measurement.value < 99.5


# -- SCL-038: clients held by one entry gateway, and its refusal at the limit ------------------------


def test_scl_038_holds_clients_at_one_gateway_and_refuses_clearly_at_its_limit() -> None:
    result = brief("SCL-038", duration_s=2.0, scale=0.00005)  # 10 clients
    record = check_shape(result)
    counts = record["counts"]
    assert counts["started"] == counts["succeeded"] == 10
    assert counts["probe_ok"] == 3 and counts["probe_refused_clearly"] == 3 and counts["probe_failures"] == 0
    assert result.measurement.value == 100.0
    notes = " ".join(result.notes())
    assert "the gateway holds its limit of" in notes and "max_clients 100,000" in notes


def test_scl_038_fails_when_the_entry_holds_fewer_clients_than_the_load(monkeypatch: pytest.MonkeyPatch) -> None:
    from nyx.bench.scenarios import scl_038

    monkeypatch.setattr(scl_038, "MAX_CLIENTS", 4)  # 10 clients arrive: 6 refused as FULL
    result = brief("SCL-038", duration_s=1.0, scale=0.00005)
    assert result.verdict == "FAIL" and result.measurement.value < 99.9
    assert result.as_json()["counts"]["failed"] >= 6


# -- SCL-039: two SDK generations, and clear refusals of what the gateways do not speak -------------


def test_scl_039_both_sdk_generations_work_and_unsupported_clients_are_turned_away() -> None:
    result = brief("SCL-039", duration_s=2.0, scale=1.0)  # 5 clients/s
    record = check_shape(result)
    counts = record["counts"]
    assert counts["worked_sdk_v1"] >= 2 and counts["worked_sdk_v2"] >= 2
    assert counts["errors"] == 0 and counts["probes_unclear"] == 0 and result.verdict == "PASS"
    # Every v2 client went through a Reject and a retry with version 1.
    assert counts["gateway_version_rejects"] == counts["worked_sdk_v2"]
    notes = " ".join(result.notes())
    assert "'v1 pq'" in notes and "'v1 hybrid'" in notes
    assert "no protocol version in common" in notes and "no handshake key for suites ['classic']" in notes


def test_scl_039_fails_when_gateways_retire_the_suite_old_clients_need(monkeypatch: pytest.MonkeyPatch) -> None:
    from nyx.bench.scenarios import scl_039
    from nyx.crypto.suites import Suite

    monkeypatch.setattr(scl_039, "RETIRED_SUITES", (Suite.HYBRID,))
    result = brief("SCL-039", duration_s=1.0, scale=1.0)
    assert result.verdict == "FAIL" and result.measurement.value >= 1
    assert any("no suite in common" in note for note in result.notes())
