"""The trade-off sweep's outputs: table, JSON, the plot's skip without matplotlib, the CLI."""

from __future__ import annotations

import json
import sys
from dataclasses import replace

from nyx.bench.__main__ import main
from nyx.bench.anonymity import sweep

TINY = sweep.SweepPlan(
    replace(sweep.BASELINE, clients=4, mixes_per_layer=1, cover_pps=1.0), delays_s=(0.0,), cover_pps=(1.0,),
    clients=(4,), seeds=(1,), min_duration_s=6.0, targets=20,
)


def test_points_run_once_and_are_listed_under_every_axis_they_lie_on():
    rows = sweep.run_sweep(TINY, progress=None)
    assert [row.axis for row in rows] == ["baseline", "delay", "cover", "clients"]
    # cover 1.0 and 4 clients are the baseline itself: one run shared by three rows
    assert rows[0].runs is rows[2].runs is rows[3].runs
    assert rows[1].settings.mean_delay_s == 0.0 and rows[1].runs is not rows[0].runs
    table = sweep.format_table(rows)
    assert table.splitlines()[0].split()[:3] == ["axis", "delay", "s"]
    assert len(table.splitlines()) == 5
    assert rows[1].figures()["sender_entropy_bits"] < 0.05  # no delay: traced


def test_runs_last_at_least_twenty_mean_mixing_delays():
    plan = replace(TINY, delays_s=(1.0,))
    durations = {axis: s.duration_s for axis, s in plan.points()}
    assert durations["delay"] == 60.0  # 20 x 3 layers x 1 s
    assert durations["baseline"] == 6.0


def test_json_is_always_written_and_the_plot_skipped_with_a_message_without_matplotlib(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sweep, "QUICK", TINY)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    path = tmp_path / "anon.json"
    assert main(["anonymity", "--quick", "--json", str(path)]) == 0
    out, err = capsys.readouterr()
    assert "H_send bits" in out and "scale: 3 layers x 1 mixes" in out
    assert f"wrote {path}" in out
    assert "plot skipped: matplotlib is not installed" in err
    assert not (tmp_path / "anon.png").exists()
    data = json.loads(path.read_text())
    assert data["plan"]["seeds"] == [1]
    row = data["rows"][0]
    assert row["axis"] == "baseline" and row["settings"]["clients"] == 4
    assert 0 <= row["attack_top1"] <= 1 and row["ceiling_bits"] == 2.0
    assert row["runs"][0]["sender_entropy"]["n"] > 0
