"""`python -m nyx.bench list` and `run`: the catalogue table, open-loop load, verdicts and JSON."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from nyx.bench import catalogue, scenarios
from nyx.bench.__main__ import main
from nyx.bench.loadgen import Schedule, drive_async, drive_sync, percentile
from nyx.bench.report import Measurement, Result

JSON_KEYS = {
    "scenario", "metric", "value", "unit", "slo", "verdict", "pass", "offered_rate", "achieved_rate", "scale",
    "duration_s", "notes", "counts", "run",
}
RUN_KEYS = {"nyx", "commit", "python", "implementation", "packages", "cpus", "transport", "seed", "quick", "duration_s", "scale", "timestamp"}


def test_list_prints_fifty_rows_with_status(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line for line in lines if line.startswith("SCL-")]
    assert len(rows) == 50
    assert any("out-of-scope: etcd" in row for row in rows)
    assert "50 scenarios:" in lines[-1]


def test_replayed_status_names_exactly_the_replays() -> None:
    replayed = {s.id for s in catalogue.load() if s.status == "replayed"}
    assert replayed == set(scenarios.REPLAYS)


def test_run_of_a_pending_scenario_says_what_it_waits_for(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every data-plane scenario is replayed now; a scenario marked pending again must still say why.
    import dataclasses

    from nyx.bench import runner

    pending = dataclasses.replace(catalogue.by_id("SCL-004"), status="pending", waits_for="nyx.stream multipath")
    monkeypatch.setattr(runner.catalogue, "by_id", lambda scenario_id: pending)
    assert main(["run", "SCL-004"]) == 2
    assert "waits for nyx.stream multipath" in capsys.readouterr().err


def test_run_of_an_out_of_scope_scenario_says_why(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "SCL-019"]) == 2
    assert "Vault" in capsys.readouterr().err


def test_open_loop_latency_counts_queueing_behind_a_slow_operation() -> None:
    # 100 arrivals/s, each taking 15 ms: the system falls behind and latency grows past 15 ms.
    import time

    def slow(_: int) -> bool:
        time.sleep(0.015)
        return True

    result = asyncio.run(drive_sync(Schedule(100, 0.5), slow))
    assert result.missed > 0  # not everything due could be started in time
    assert result.achieved_rate < 100
    assert percentile(result.latencies_s, 100) > 0.1  # far beyond one 15 ms service time


def test_open_loop_async_counts_failures_and_timeouts() -> None:
    async def operation(index: int) -> bool:
        if index % 2:
            await asyncio.sleep(1)  # times out
        return True

    result = asyncio.run(drive_async(Schedule(40, 0.25), operation, timeout_s=0.05))
    assert result.completed == 5 and result.failed == 5


def test_scale_is_floored_and_a_shortfall_is_reported() -> None:
    measurement = Measurement(value=1.0, duration_s=1.0, offered_rate=1000.0, achieved_rate=433.96, full_rate=1000.0)
    result = Result(catalogue.by_id("SCL-044"), measurement, requested_scale=1.0)
    assert result.scale == 0.433
    assert result.shortfall
    assert any("could not offer the load" in note and "43.3%" in note for note in result.notes())
    assert "machine limit" in result.verdict_line()


def test_run_writes_json_whose_verdict_is_the_printed_one_with_the_run_context(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "out.json"
    assert main(["run", "SCL-044", "--duration", "0.5", "--scale", "0.2", "--seed", "7", "--json", str(path)]) == 0
    record = json.loads(path.read_text())
    assert set(record) == JSON_KEYS and set(record["run"]) == RUN_KEYS
    assert record["scenario"] == "SCL-044" and record["unit"] == "ms"
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("SCL-044 "))
    assert line.split()[1] == record["verdict"] in ("PASS", "FAIL", "INCONCLUSIVE")
    assert record["pass"] == (record["verdict"] == "PASS")
    assert record["run"]["seed"] == 7 and record["run"]["transport"] == "sim" and record["run"]["scale"] == 0.2
    assert record["run"]["python"].count(".") == 2 and record["run"]["packages"]["aioquic"]


def test_run_with_out_writes_a_json_and_a_latency_plot_per_scenario(tmp_path: Path) -> None:
    assert main(["run", "SCL-044", "--duration", "0.3", "--scale", "0.1", "--out", str(tmp_path)]) == 0
    assert set(json.loads((tmp_path / "SCL-044.json").read_text())) == JSON_KEYS
    pytest.importorskip("matplotlib")
    assert (tmp_path / "SCL-044.png").read_bytes().startswith(b"\x89PNG")
