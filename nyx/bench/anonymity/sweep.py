"""The trade-off: anonymity against latency and bandwidth, one axis at a time around a baseline.

Each axis (per-hop mean delay, client cover rate, number of clients) varies alone while the
others stay at the baseline, over several seeds, so a row of the table answers one operator
question: what does this latency budget (or this much cover, or this many users) buy? Results go
to a table, JSON, and a plot (matplotlib, the `plot` extra; skipped with a message without it).
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, TextIO

from nyx.bench.anonymity.measure import AnonymityResult, measure
from nyx.bench.anonymity.simulation import MixnetSettings


@dataclass(frozen=True, slots=True)
class SweepPlan:
    """The baseline, the values each axis takes, the seeds, and the virtual seconds per run
    (at least `min_duration_s`, and at least 20 mean mixing delays so slow mixes reach steady
    state)."""

    baseline: MixnetSettings
    delays_s: tuple[float, ...]
    cover_pps: tuple[float, ...]
    clients: tuple[int, ...]
    seeds: tuple[int, ...]
    min_duration_s: float
    targets: int = 200

    def points(self) -> list[tuple[str, MixnetSettings]]:
        """(axis, settings) for each distinct point, baseline first; a point on several axes
        is run once and listed under each."""
        base = self.baseline
        rows = [("baseline", base)]
        rows += [("delay", replace(base, mean_delay_s=d)) for d in self.delays_s]
        rows += [("cover", replace(base, cover_pps=c)) for c in self.cover_pps]
        rows += [("clients", replace(base, clients=n)) for n in self.clients]
        return [(axis, replace(s, duration_s=max(self.min_duration_s, 20 * s.layers * s.mean_delay_s))) for axis, s in rows]


BASELINE = MixnetSettings(clients=10, layers=3, mixes_per_layer=2, mean_delay_s=0.05, real_pps=1.0, cover_pps=4.0)
"""Cover 4 pps on 1 real msg/s: the payload slots run at 5 pps, `RatePolicy`'s default base rate."""
QUICK = SweepPlan(BASELINE, delays_s=(0.0, 0.01, 0.2), cover_pps=(0.0, 1.0), clients=(5, 20), seeds=(1, 2),
                  min_duration_s=20.0, targets=100)
FULL = SweepPlan(BASELINE, delays_s=(0.0, 0.005, 0.01, 0.02, 0.1, 0.2, 0.5, 1.0), cover_pps=(0.0, 0.5, 1.0, 2.0, 8.0),
                 clients=(5, 20, 40, 80), seeds=(1, 2, 3), min_duration_s=60.0, targets=200)


@dataclass(frozen=True, slots=True)
class SweepRow:
    """One point's results over its seeds: the mean of each figure, and its spread over seeds
    (max - min) for the two headline figures."""

    axis: str
    settings: MixnetSettings
    runs: tuple[AnonymityResult, ...]

    def mean(self, figure: Callable[[AnonymityResult], float]) -> float:
        values = [figure(run) for run in self.runs if not math.isnan(figure(run))]
        return statistics.fmean(values) if values else math.nan

    def spread(self, figure: Callable[[AnonymityResult], float]) -> float:
        values = [figure(run) for run in self.runs]
        return max(values) - min(values)

    def figures(self) -> dict[str, float]:
        first = self.runs[0]
        return {
            "latency_mean_s": self.mean(lambda r: r.latency_mean_s),
            "latency_p95_s": self.mean(lambda r: r.latency_p95_s),
            "overhead": self.mean(lambda r: r.overhead),
            "pool_mean": self.mean(lambda r: r.pool_mean),
            "sender_entropy_bits": self.mean(lambda r: r.sender_entropy.mean),
            "sender_entropy_p10_bits": self.mean(lambda r: r.sender_entropy.p10),
            "sender_entropy_spread_bits": self.spread(lambda r: r.sender_entropy.mean),
            "ceiling_bits": first.ceiling_bits,
            "output_entropy_bits": self.mean(lambda r: r.output_entropy.mean),
            "attack_top1": self.mean(lambda r: r.attack.top1),
            "attack_topk": self.mean(lambda r: r.attack.topk),
            "attack_top1_spread": self.spread(lambda r: r.attack.top1),
            "chance_top1": first.attack.chance1,
            "chance_topk": first.attack.chancek,
            "k": first.attack.k,
            "messages": sum(r.attack.n for r in self.runs),
            "link_packets": sum(r.link_packets for r in self.runs),
            "cpu_s": sum(r.cpu_s for r in self.runs),
        }


def run_sweep(plan: SweepPlan, progress: TextIO | None | bool = True) -> list[SweepRow]:
    """Every point of `plan` over its seeds (each distinct point once); a line per point on
    `progress` (True: stderr, None or False: quiet)."""
    if progress is True:
        progress = sys.stderr
    done: dict[MixnetSettings, tuple[AnonymityResult, ...]] = {}
    rows = []
    for axis, settings in plan.points():
        if settings not in done:
            runs = []
            for seed in plan.seeds:
                runs.append(measure(replace(settings, seed=seed), targets=plan.targets))
            done[settings] = tuple(runs)
            if progress:
                print(f"  {axis:8s} delay {settings.mean_delay_s:g} s, cover {settings.cover_pps:g} pps, "
                      f"{settings.clients} clients: {sum(r.cpu_s for r in runs):.1f} s", file=progress, flush=True)
        rows.append(SweepRow(axis, settings, done[settings]))
    return rows


def format_table(rows: Sequence[SweepRow]) -> str:
    """The trade-off as a plain-text table, one line per point."""
    head = ("axis", "delay s", "cover pps", "clients", "lat mean s", "lat p95 s", "pkts/msg", "pool",
            "H_send bits", "(p10)", "ceiling", "H_out bits", "top-1", "top-k", "chance 1/k")
    lines = []
    for row in rows:
        f, s = row.figures(), row.settings
        lines.append((
            row.axis, f"{s.mean_delay_s:g}", f"{s.cover_pps:g}", str(s.clients), f"{f['latency_mean_s']:.3f}",
            f"{f['latency_p95_s']:.3f}", f"{f['overhead']:.2f}", f"{f['pool_mean']:.1f}",
            f"{f['sender_entropy_bits']:.2f}", f"{f['sender_entropy_p10_bits']:.2f}", f"{f['ceiling_bits']:.2f}",
            f"{f['output_entropy_bits']:.2f}", f"{f['attack_top1']:.2f}", f"{f['attack_topk']:.2f}",
            f"{f['chance_top1']:.2f}/{f['chance_topk']:.2f}",
        ))
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(head)]
    out = ["  ".join(h.rjust(w) for h, w in zip(head, widths))]
    out += ["  ".join(v.rjust(w) for v, w in zip(line, widths)) for line in lines]
    return "\n".join(out)


def describe(plan: SweepPlan, rows: Sequence[SweepRow]) -> str:
    """The scale that was run, in one paragraph (the table is meaningless without it)."""
    base = plan.baseline
    packets = sum(r["link_packets"] for r in (row.figures() for row in _distinct(rows)))
    cpu = sum(r["cpu_s"] for r in (row.figures() for row in _distinct(rows)))
    return (
        f"scale: {base.layers} layers x {base.mixes_per_layer} mixes + 1 provider, real MixNodes over SimTransport "
        f"on a virtual clock; clients send {base.real_pps:g} real msg/s each (Poisson), {base.link_latency_s * 1e3:g} ms "
        f"links; baseline delay {base.mean_delay_s:g} s, cover {base.cover_pps:g} pps, {base.clients} clients; "
        f">= {plan.min_duration_s:g} virtual s per run, seeds {', '.join(map(str, plan.seeds))}, "
        f"{plan.targets} targets per run; {packets:,} link packets in {cpu:.0f} CPU s. "
        f"top-k is top-{rows[0].runs[0].attack.k}."
    )


def _distinct(rows: Sequence[SweepRow]) -> list[SweepRow]:
    seen, out = set(), []
    for row in rows:
        if row.settings not in seen:
            seen.add(row.settings)
            out.append(row)
    return out


def to_json(plan: SweepPlan, rows: Sequence[SweepRow]) -> dict[str, Any]:
    return {
        "plan": {"baseline": asdict(plan.baseline), "delays_s": plan.delays_s, "cover_pps": plan.cover_pps,
                 "clients": plan.clients, "seeds": plan.seeds, "min_duration_s": plan.min_duration_s,
                 "targets": plan.targets},
        "scale": describe(plan, rows),
        "rows": [{"axis": row.axis, "settings": asdict(row.settings), **row.figures(),
                  "runs": [_run_json(run) for run in row.runs]} for row in rows],
    }


def _run_json(run: AnonymityResult) -> dict[str, Any]:
    data = asdict(run)
    data.pop("settings")
    return data


def write_json(plan: SweepPlan, rows: Sequence[SweepRow], path: Path) -> None:
    path.write_text(json.dumps(to_json(plan, rows), indent=2, allow_nan=True) + "\n")


def write_plot(rows: Sequence[SweepRow], path: Path, stream: TextIO | None = None) -> bool:
    """Entropy and attack success against latency (delay axis), overhead (cover axis) and the
    number of clients; False, with a message on `stream`, when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"plot skipped: matplotlib is not installed (pip install 'nyx[plot]'); {path} not written",
              file=stream or sys.stderr)
        return False
    axes_spec = (("delay", "end-to-end latency, mean (s)", "latency_mean_s"),
                 ("cover", "client packets per real message", "overhead"),
                 ("clients", "clients (senders)", None))
    figure, grid = plt.subplots(2, 3, figsize=(14, 7.5), squeeze=False)
    for col, (axis, label, x_key) in enumerate(axes_spec):
        points = sorted((row for row in rows if row.axis in (axis, "baseline")),
                        key=lambda r: r.figures()[x_key] if x_key else r.settings.clients)
        points = [row for row in points if row.axis == axis or _on_axis(row, rows, axis)]
        figs = [row.figures() for row in points]
        xs = [f[x_key] if x_key else row.settings.clients for f, row in zip(figs, points)]
        top, bottom = grid[0][col], grid[1][col]
        top.plot(xs, [f["sender_entropy_bits"] for f in figs], "o-", label="sender entropy (mean)")
        top.plot(xs, [f["ceiling_bits"] for f in figs], "k--", label="ceiling log2(senders)")
        top.plot(xs, [f["output_entropy_bits"] for f in figs], "s:", label="output entropy (Loopix)")
        top.set_ylabel("bits")
        bottom.plot(xs, [f["attack_top1"] for f in figs], "o-", label="attack top-1")
        bottom.plot(xs, [f["attack_topk"] for f in figs], "s-", label=f"attack top-{int(figs[0]['k'])}")
        bottom.plot(xs, [f["chance_top1"] for f in figs], "k--", label="chance top-1")
        bottom.plot(xs, [f["chance_topk"] for f in figs], "k:", label=f"chance top-{int(figs[0]['k'])}")
        bottom.set_ylabel("success rate")
        bottom.set_ylim(0, 1.05)
        bottom.set_xlabel(label)
        top.set_title(f"varying {axis}")
        for ax in (top, bottom):
            ax.grid(True, alpha=0.3)
            if axis == "clients":
                ax.set_xscale("log", base=2)
        if col == 0:
            top.legend(fontsize=8)
            bottom.legend(fontsize=8)
    figure.suptitle("Nyx anonymity vs. latency and bandwidth (global passive adversary)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def _on_axis(row: SweepRow, rows: Sequence[SweepRow], axis: str) -> bool:
    """The baseline belongs on every axis' curve unless that axis lists it already."""
    return not any(r.axis == axis and r.settings == row.settings for r in rows)
