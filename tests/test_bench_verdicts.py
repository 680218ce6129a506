"""Verdicts that can fail: PASS, FAIL and INCONCLUSIVE from the same runner, through the CLI.

Each replay is also driven to FAIL in tests/test_bench_scenarios.py (a tightened SLO, and for
some an injected fault); here the runner's rules are checked on their own.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest

from nyx.bench import catalogue
from nyx.bench.__main__ import main
from nyx.bench.report import SHORTFALL, Measurement, Result, verdict_table

SCL_044 = catalogue.by_id("SCL-044")  # fec_encode_latency <= 3 ms


def judged(value: float, offered: float | None = 100.0, achieved: float | None = 100.0) -> Result:
    measurement = Measurement(value=value, duration_s=1.0, offered_rate=offered, achieved_rate=achieved, full_rate=100.0)
    return Result(SCL_044, measurement, requested_scale=1.0)


def test_a_value_within_the_slo_at_the_full_load_passes_and_one_beyond_fails() -> None:
    assert judged(2.9).verdict == "PASS" and judged(2.9).passed
    assert judged(3.1).verdict == "FAIL" and not judged(3.1).passed


@pytest.mark.parametrize("value", [0.5, 30.0])
def test_a_replay_that_handled_less_than_95_percent_of_its_load_is_inconclusive(value: float) -> None:
    short = judged(value, achieved=100.0 * SHORTFALL - 0.1)
    assert SHORTFALL == 0.95
    assert short.verdict == "INCONCLUSIVE" and not short.passed
    assert short.as_json()["verdict"] == "INCONCLUSIVE" and short.as_json()["pass"] is False
    assert any(note.startswith("INCONCLUSIVE: this machine could not offer the load") for note in short.notes())
    assert "INCONCLUSIVE" in verdict_table([short]) and short.verdict_line().startswith("SCL-044 INCONCLUSIVE")
    assert judged(value, achieved=100.0 * SHORTFALL).verdict in ("PASS", "FAIL")  # exactly 95% is enough


def test_a_replay_that_measured_nothing_is_inconclusive() -> None:
    result = judged(math.nan)
    assert result.verdict == "INCONCLUSIVE" and result.as_json()["value"] is None


def test_fail_on_slo_exits_1_on_fail_and_0_on_pass(tmp_path: Path) -> None:
    args = ["run", "SCL-044", "--duration", "0.3", "--scale", "0.02", "--fail-on-slo"]
    assert main([*args, "--slo", "<= 60 s"]) == 0
    path = tmp_path / "fail.json"
    assert main([*args, "--slo", "<= 0.000001 ms", "--json", str(path)]) == 1
    record = json.loads(path.read_text())
    assert record["verdict"] == "FAIL" and record["slo"]["number"] == 0.000001
    assert any("judged against --slo" in note for note in record["notes"])


def test_fail_on_slo_exits_1_when_a_slowed_component_leaves_the_run_inconclusive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nyx.fec import BlockEncoder

    real_encode = BlockEncoder.encode

    def slowed(self: BlockEncoder, *args: object, **kwargs: object) -> list[bytes]:
        time.sleep(0.02)  # 20 ms a block against 833 blocks/s asked: the generator falls behind
        return real_encode(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(BlockEncoder, "encode", slowed)
    path = tmp_path / "short.json"
    assert main(["run", "SCL-044", "--duration", "0.5", "--fail-on-slo", "--json", str(path)]) == 1
    record = json.loads(path.read_text())
    assert record["verdict"] == "INCONCLUSIVE"
    assert record["achieved_rate"] < SHORTFALL * record["offered_rate"]


def test_an_unreadable_slo_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "SCL-044", "--slo", "fast please"]) == 2
    assert "--slo" in capsys.readouterr().err
