"""SCL-032 カバートラフィック連続補正: 48 h of continuous cover; drift < 3%.

One client's cover for 48 simulated hours with the adaptive loop every 15 minutes (the bench
configuration "adaptive loop=15m"), on nyx.cover's virtual-clock simulator (see `_cover.py`).
The value is `cover_drift_percent`: how far the packets emitted over the whole run are from
the target process's expectation, in percent. The worst 15-minute period is in the notes.
"""

from __future__ import annotations

from nyx.bench.report import Measurement
from nyx.bench.scenarios import RunOptions
from nyx.bench.scenarios._cover import simulate

DEFAULT_DURATION_S = 48 * 3600.0  # simulated
QUICK = (12 * 3600.0, 1.0)


async def replay(options: RunOptions) -> Measurement:
    report = simulate(
        load=options.scale, cover_ratio=0.4, latency_budget_s=0.200, adjust_s=900.0,
        duration_s=options.duration_s, seed=options.seed,
    )
    return Measurement(
        value=report.drift_pct,
        duration_s=options.duration_s,
        detail=f"{options.duration_s / 3600:g} simulated h ({report.wall_s:.1f} s wall), {report.target_packets:,.0f} packets expected",
        notes=(
            f"worst 15-minute period: drift {report.max_period_drift_pct:.2f}%, z {report.max_period_z:.2f}; "
            f"sent {report.sent}",
            "--duration is simulated seconds here (virtual clock)"
            + ("" if options.duration_s >= DEFAULT_DURATION_S else "; shorter than the scenario's 48 h"),
        ),
    )
