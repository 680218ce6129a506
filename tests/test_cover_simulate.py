"""The issue's acceptance runs on the virtual clock: 48 h drift under 3%; compliance of at least
95% at 3x cover load, cover_ratio 0.4, latency_budget 200 ms. Same code as the CLI commands in
docs/cover.md (there with the default durations)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nyx.cover import CoverConfig, RatePolicy, per_hop_mean_delay
from nyx.cover.simulate import Lateness, MixPath, RealTraffic, main, run_client


def config(load: float) -> CoverConfig:
    return CoverConfig(RatePolicy(base_pps=5.0 * load, cover_ratio=0.4), loop_pps=load, drop_pps=load)


@pytest.mark.slow
def test_48_simulated_hours_with_the_adaptive_loop_drift_under_3_percent() -> None:
    report = run_client(config(1.0), 48 * 3600.0, seed=1, traffic=RealTraffic(), lateness=Lateness())
    assert report.drift_pct < 3.0
    assert report.drift_pct < 0.1  # in fact within Poisson noise (1/sqrt(1.5M) = 0.08%)
    assert report.sent["real"] > 300_000  # the adaptive loop had real traffic to follow
    assert report.wall_s < 30


@pytest.mark.slow
def test_compliance_at_3x_load_with_ratio_0_4_and_budget_200_ms_is_at_least_95_percent() -> None:
    path = MixPath(per_hop_mean_delay(0.2, 3))
    report = run_client(config(3.0), 48 * 3600.0, seed=1, traffic=RealTraffic(), lateness=Lateness(), path=path)
    assert report.windows == 17280
    assert report.compliance >= 0.95
    # an exact Poisson source scores the interval's mass (95.45% here); we are within 3 standard
    # errors of it (0.16% over 17,280 windows), i.e. indistinguishable from the target process
    assert abs(report.compliance - report.ideal_compliance) < 3 * (0.05 * 0.95 / report.windows) ** 0.5
    # the rise test waits for evidence before lifting the slot rate (docs/cover.md, "Flat below the
    # threshold"): busy bursts of 12 pps are only 1.33x the 9 pps threshold at 3x load, so a few
    # windows at a burst's onset carry too little cover (7 of 17,280 at seed 1; 0 with the
    # controller that rose on every 5 s excursion, and leaked below the threshold)
    assert report.share_failures <= 0.001 * report.windows
    assert abs(report.mixing_within_budget - 0.95) < 0.01
    assert report.loop_success > 0.999


def test_a_dropping_mix_lowers_loop_success_and_is_named() -> None:
    path = MixPath(per_hop_mean_delay(0.2, 3), bad_drop=0.3)
    report = run_client(config(1.0), 3 * 3600.0, seed=2, traffic=None, lateness=Lateness(), path=path)
    assert 0.85 < report.loop_success < 0.95  # a third of loops cross mix-1-0, 30% of those are lost
    assert list(report.suspect_mixes) == ["mix-1-0"]


def test_the_cli_prints_the_figures_and_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report.json"
    assert main(["compliance", "--hours", "0.2", "--load", "3", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "compliance" in printed and "mixing_p95_ms" in printed
    assert '"compliance"' in out.read_text()
