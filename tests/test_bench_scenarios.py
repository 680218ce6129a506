"""Each replayed SCL scenario, run briefly at a small scale: the value is really measured, and
the verdict can fail.

No speed assertions: these machines are shared and slow. The checks are that the replay ran
the real layer code, produced a finite value in the SLO's unit, reported its load honestly, and
that its verdict turns to FAIL against an SLO just beyond what it measured (every replay) and
under an injected fault (loss on the links, a slowed encoder or key store, missing metrics).
"""

from __future__ import annotations

import math

import pytest

import dataclasses
import time

from nyx.bench import catalogue
from nyx.bench.catalogue import Threshold
from nyx.bench.report import Result
from nyx.bench.runner import RunSettings, run_one


def brief(scenario_id: str, duration_s: float = 0.6, scale: float = 0.1, **kwargs: object) -> Result:
    return run_one(catalogue.by_id(scenario_id), RunSettings(duration_s=duration_s, scale=scale, **kwargs))  # type: ignore[arg-type]


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


def check_shape(result: Result) -> None:
    record = result.as_json()
    assert record["scenario"] == result.scenario.id
    assert isinstance(record["value"], float) and math.isfinite(record["value"])
    assert record["verdict"] in ("PASS", "FAIL", "INCONCLUSIVE")
    if record["verdict"] != "INCONCLUSIVE":
        assert record["pass"] == result.scenario.threshold.holds(record["value"])
    assert 0 < record["scale"] <= 1
    if record["offered_rate"] is not None:
        assert 0 < record["achieved_rate"] <= record["offered_rate"] * 1.0001
    # The same measurement against an SLO it misses: the verdict must say FAIL (or INCONCLUSIVE
    # when the load fell short, which no SLO can turn into a PASS).
    tightened = dataclasses.replace(result, slo=beyond(result))
    assert tightened.verdict == ("INCONCLUSIVE" if result.shortfall else "FAIL")


def test_scl_044_measures_encode_latency_of_real_blocks() -> None:
    result = brief("SCL-044")
    check_shape(result)
    assert result.measurement.value > 0
    assert len(result.measurement.latencies_s) >= 40  # 833 blocks/s x 0.1 x 0.6 s
    assert any("fec_encode_latency" in note for note in result.notes())


def test_scl_044_fails_when_the_encoder_is_slowed(monkeypatch: pytest.MonkeyPatch) -> None:
    from nyx.fec import BlockEncoder

    real_encode = BlockEncoder.encode

    def slowed(self: BlockEncoder, *args: object, **kwargs: object) -> list[bytes]:
        time.sleep(0.005)  # 5 ms a block, beyond the 3 ms SLO; 17 blocks/s leave the generator on time
        return real_encode(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(BlockEncoder, "encode", slowed)
    result = brief("SCL-044", duration_s=0.6, scale=0.02)
    assert result.verdict == "FAIL" and result.measurement.value >= 5.0


def test_scl_003_reads_each_gateway_process_cpu_over_a_60_percent_pq_mix() -> None:
    spread = brief("SCL-003", duration_s=1.5, scale=0.1)
    check_shape(spread)
    assert "busiest of 30 gateway processes' OS CPU" in spread.notes()[0]
    mix = next(note for note in spread.notes() if "hybrid (X-Wing)" in note)
    assert "0 failed (0 refused)" in mix and 50 < float(mix.split("% hybrid")[0].split()[-1]) < 70
    # --gateways 1: the same load on one process, thirty times what each of the thirty carried.
    one = brief("SCL-003", duration_s=1.5, scale=0.1, gateways=1)
    check_shape(one)
    assert "busiest of 1 gateway processes" in one.notes()[0]
    assert any("(100.0 handshakes/s each)" in note for note in one.notes())
    assert any("(3.3 handshakes/s each)" in note for note in spread.notes())
    assert one.measurement.value > spread.measurement.value > 0


def test_scl_036_switches_the_responders_while_clients_still_offer_hybrid_and_they_retry() -> None:
    result = brief("SCL-036", duration_s=1.5, scale=0.5)
    check_shape(result)
    counts = result.as_json()["counts"]
    assert counts["completed_pq"] > 0 and counts["completed_hybrid"] > 0  # both sides of the switch
    assert counts["retried_after_reject"] > 0  # the reject-and-retry path ran ...
    assert counts["completed_after_retry"] == counts["retried_after_reject"]  # ... and every retry completed
    assert counts["failed"] == 0 and result.measurement.value == 100.0


def test_scl_036_fails_when_the_old_suite_is_retired_before_the_rollout_completes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from nyx.bench.scenarios import scl_036

    monkeypatch.setattr(scl_036, "RETIRE_AT", 0.25)  # clients with the old directory are stranded
    result = brief("SCL-036", duration_s=1.5, scale=0.5)
    counts = result.as_json()["counts"]
    assert counts["failed_no_retry_unsupported_suite_directory_v1"] > 0
    assert result.verdict == "FAIL" and result.measurement.value < 99.8


def test_scl_037_measures_reload_latency_of_real_rotations() -> None:
    result = brief("SCL-037", duration_s=0.8, scale=0.2)
    check_shape(result)
    assert result.threshold.unit == "s"
    assert 0 < result.measurement.value < 5
    assert len(result.measurement.latencies_s) >= 10
    assert any("0 rotations failed" in note for note in result.notes())


def test_scl_006_saturates_simulated_links_and_counts_loss_among_accepted_packets() -> None:
    result = brief("SCL-006", duration_s=1.5, scale=0.05)
    check_shape(result)
    assert "over sim (60 links among 20 nodes, each" in result.notes()[0]
    counts = result.as_json()["counts"]
    # Links carry 80% of what is offered on them: once their queues fill, the transport refuses
    # (backpressure) rather than accept and lose, so what it accepted all arrives.
    assert counts["refused"] > 0.05 * counts["offered"]
    assert counts["accepted"] == counts["offered"] - counts["refused"] == counts["delivered"]
    assert result.measurement.value == 0.0


def test_scl_006_fails_when_the_links_lose_packets(monkeypatch: pytest.MonkeyPatch) -> None:
    from nyx.bench.scenarios import scl_006
    from nyx.transport import LinkProfile

    monkeypatch.setattr(scl_006, "SIM_LINK", LinkProfile(latency_s=0.001, bandwidth_bps=1e9, loss=0.05))
    result = brief("SCL-006", duration_s=0.5, scale=0.02)
    assert result.verdict == "FAIL" and 2.0 < result.measurement.value < 10.0  # 5% lost, SLO < 0.5%


def test_scl_006_runs_over_quic_too() -> None:
    result = brief("SCL-006", duration_s=0.5, scale=0.01, transport="quic")
    check_shape(result)
    assert "over quic" in result.notes()[0]
    assert any("of 1 Gbps" in note for note in result.notes())


def test_scl_037_never_passes_with_a_key_store_slower_than_the_slo(monkeypatch: pytest.MonkeyPatch) -> None:
    from nyx.bench.scenarios import scl_037

    real_load = scl_037.load_key

    def slow_store() -> object:
        time.sleep(6.0)  # a secret store that takes 6 s to hand over a key, past the 5 s SLO
        return real_load()

    monkeypatch.setattr(scl_037, "load_key", slow_store)
    result = brief("SCL-037", duration_s=0.05, scale=0.2)  # one rotation is due in that window
    # The reload took past 5 s; the stall also held up the rest of the load, so the run may be
    # INCONCLUSIVE rather than FAIL, but never PASS.
    assert result.measurement.value > 5.0 and result.verdict in ("FAIL", "INCONCLUSIVE")


def test_scl_035_measures_real_quic_handshakes() -> None:
    result = brief("SCL-035", duration_s=1.0, scale=0.25)
    check_shape(result)
    assert result.measurement.value > 0
    assert len(result.measurement.latencies_s) >= 15  # 83/s x 0.25 x 1 s


def test_scl_025_audits_every_node_kind_that_exists_and_names_what_is_missing() -> None:
    result = brief("SCL-025", duration_s=0.6, scale=1.0)
    check_shape(result)
    assert result.measurement.value == int(result.measurement.value) >= 0
    assert all(f"{kind} " in result.notes()[0] for kind in ("mix", "gateway", "client", "directory"))
    # every name a mix, a gateway, a directory or a client should export is there (a client's
    # failover figures included: the audit fails a mix under it) ...
    assert "missing from node kinds that exist: none" in result.notes()
    # ... but regions and exit FEC do not exist yet, so it fails.
    assert result.measurement.value > 0 and result.verdict == "FAIL"
    assert any(note.startswith("missing, kinds not built yet: ") and "fec_encode_latency" in note
               and "route_update_latency" not in note and "directory_" not in note for note in result.notes())


@pytest.mark.parametrize("scenario_id", ["SCL-005", "SCL-032"])
def test_cover_replays_measure_on_the_virtual_clock(scenario_id: str) -> None:
    result = brief(scenario_id, duration_s=1800.0, scale=1.0)  # half a simulated hour
    check_shape(result)
    assert result.measurement.value >= 0
    assert "simulated" in result.notes()[0]
