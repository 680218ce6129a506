"""What a replay measured, judged against its SLO: verdict lines, tables, JSON and a latency plot.

A replay returns a `Measurement` (value in the SLO's unit, offered and achieved rates); `Result`
adds the catalogue's threshold and the verdict. The achieved scale is the achieved rate over the
load model's full rate, floored (never rounded up): if this machine offered only part of the
load, the report says so and by how much.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO

from nyx.bench.catalogue import Scenario, Threshold

#: Below this share of the load it was asked to offer, a replay's verdict is INCONCLUSIVE: what it
#: measured describes a lighter load than the scenario's, so it can neither pass nor fail it.
SHORTFALL = 0.95

Verdict = Literal["PASS", "FAIL", "INCONCLUSIVE"]


def floor_to(value: float, digits: int) -> float:
    """`value` rounded down to `digits` decimals, so a reported scale never overstates the load."""
    factor = 10**digits
    return math.floor(value * factor) / factor


@dataclass(frozen=True, slots=True)
class Measurement:
    """What a replay returns.

    value: the main metric in the SLO's unit. offered_rate / achieved_rate: arrivals per second
    offered by the generator (after --scale) and actually handled; full_rate: the load model's
    rate at scale 1. All three are None when the load model has no rate (e.g. an audit).
    latencies_s: per-arrival latencies for the plot, when the metric is a latency.
    """

    value: float
    duration_s: float
    offered_rate: float | None = None
    achieved_rate: float | None = None
    full_rate: float | None = None
    rate_unit: str = "/s"
    detail: str = ""  # how the value was taken, e.g. "p95 of 41,650 blocks"
    notes: tuple[str, ...] = ()
    latencies_s: tuple[float, ...] = ()
    counts: dict[str, int] = field(default_factory=dict)  # events a replay counts, e.g. retries
    # Why the value, though measured at the full load, cannot be judged (e.g. too few samples to
    # resolve the SLO's number): a non-empty reason makes the verdict INCONCLUSIVE.
    unresolved: str = ""


@dataclass(frozen=True, slots=True)
class Result:
    """A measurement judged against its SLO (the catalogue's, or `slo` when one was given to
    probe a replay, e.g. `run SCL-044 --slo '<= 0.01 ms'`). `context` records the run (versions,
    commit, seed, time) for the JSON."""

    scenario: Scenario
    measurement: Measurement
    requested_scale: float
    slo: Threshold | None = None
    context: dict[str, Any] = field(default_factory=dict)

    @property
    def threshold(self) -> Threshold:
        return self.slo if self.slo is not None else self.scenario.threshold

    @property
    def meets_slo(self) -> bool:
        """Whether the measured value meets the SLO, whatever load was offered."""
        value = self.measurement.value
        return not math.isnan(value) and self.threshold.holds(value)

    @property
    def verdict(self) -> Verdict:
        """PASS or FAIL on the value; INCONCLUSIVE when nothing was measured or the replay handled
        less than SHORTFALL of the load it was asked to offer."""
        if math.isnan(self.measurement.value) or self.shortfall or self.measurement.unresolved:
            return "INCONCLUSIVE"
        return "PASS" if self.meets_slo else "FAIL"

    @property
    def passed(self) -> bool:
        return self.verdict == "PASS"

    @property
    def scale(self) -> float:
        """The share of the full load actually handled (floored to 3 decimals)."""
        m = self.measurement
        if m.full_rate is None or m.achieved_rate is None:
            return floor_to(self.requested_scale, 3)
        return floor_to(m.achieved_rate / m.full_rate, 3)

    @property
    def shortfall(self) -> bool:
        """Whether the generator handled clearly less than it was asked to offer."""
        m = self.measurement
        if m.offered_rate is None or m.achieved_rate is None or m.offered_rate <= 0:
            return False
        return m.achieved_rate < SHORTFALL * m.offered_rate

    def notes(self) -> list[str]:
        m = self.measurement
        notes: list[str] = []
        if m.detail:
            notes.append(m.detail)
        if self.shortfall and m.achieved_rate is not None and m.offered_rate is not None:
            notes.append(
                f"INCONCLUSIVE: this machine could not offer the load: it handled {m.achieved_rate:,.1f} of the "
                f"{m.offered_rate:,.1f} {m.rate_unit} asked ({floor_to(100 * m.achieved_rate / m.offered_rate, 1)}%, "
                f"below {SHORTFALL:.0%}); at that lighter load the value "
                + ("met" if self.meets_slo else "missed") + " the SLO"
            )
        if math.isnan(m.value):
            notes.append("INCONCLUSIVE: the replay measured no value")
        if m.unresolved:
            notes.append(f"INCONCLUSIVE: {m.unresolved}")
        if self.slo is not None:
            notes.append(f"judged against --slo {self.slo.text!r}, not the catalogue's {self.scenario.threshold.text!r}")
        if self.requested_scale < 1:
            notes.append(f"run at --scale {self.requested_scale:g} of the load model; the verdict holds for that load only")
        notes.extend(m.notes)
        return notes

    def as_json(self) -> dict[str, Any]:
        """The record of `--json` (keys listed in docs/benchmarks.md)."""
        m = self.measurement
        return {
            "scenario": self.scenario.id,
            "metric": self.scenario.metric,
            "value": None if math.isnan(m.value) else m.value,
            "unit": self.threshold.unit,
            "slo": self.threshold.as_json(),
            "verdict": self.verdict,
            "pass": self.passed,
            "offered_rate": m.offered_rate,
            "achieved_rate": m.achieved_rate,
            "scale": self.scale,
            "duration_s": m.duration_s,
            "notes": self.notes(),
            "counts": dict(m.counts),
            "run": self.context,
        }

    def value_text(self) -> str:
        value, unit = self.measurement.value, self.threshold.unit
        if math.isnan(value):
            return "not measured"
        text = f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.0f}"
        return f"{text}{unit}" if unit in ("%", "x", "") else f"{text} {unit}"

    def verdict_line(self) -> str:
        m = self.measurement
        verdict = self.verdict
        load = f"scale {self.scale:.3f}"
        if m.achieved_rate is not None and m.full_rate is not None:
            load += f" ({m.achieved_rate:,.1f} of {m.full_rate:,.1f} {m.rate_unit})"
        if self.shortfall:
            load += " - machine limit"
        return (
            f"{self.scenario.id} {verdict}  {self.scenario.metric} = {self.value_text()}  "
            f"(SLO {self.threshold.text})  {load}  in {m.duration_s:.1f} s"
        )


def verdict_table(results: Sequence[Result]) -> str:
    """One row per result: id, metric, value, SLO, verdict, achieved scale."""
    header = f"{'id':<8} {'metric':<26} {'value':>14}  {'SLO':<12} {'verdict':<12} {'scale':>6}"
    lines = [header, "-" * len(header)]
    for r in results:
        lines.append(
            f"{r.scenario.id:<8} {r.scenario.metric:<26} {r.value_text():>14}  "
            f"{r.threshold.text:<12} {r.verdict:<12} {r.scale:>6.3f}"
            + ("  machine limit" if r.shortfall else "")
        )
    return "\n".join(lines)


def catalogue_table(scenarios: Sequence[Scenario]) -> str:
    """`python -m nyx.bench list`: id, name, layer, SLO, status (and what a pending one waits for)."""
    rows = [(s.id, s.name, s.target_layer, s.slo, _status(s)) for s in scenarios]
    widths = [max(_width(row[i]) for row in rows + [("id", "name", "layer", "SLO", "status")]) for i in range(4)]
    lines = ["  ".join(_pad(h, w) for h, w in zip(("id", "name", "layer", "SLO"), widths)) + "  status"]
    lines.append("-" * (sum(widths) + 2 * 4 + 6))
    for row in rows:
        lines.append("  ".join(_pad(cell, w) for cell, w in zip(row, widths)) + "  " + row[4])
    return "\n".join(lines)


def _status(scenario: Scenario) -> str:
    if scenario.status == "pending":
        return f"pending: {scenario.waits_for}"
    if scenario.status == "out-of-scope":
        return f"out-of-scope: {scenario.out_of_scope_reason}"
    return scenario.status


def _width(text: str) -> int:
    """Display columns: CJK characters take two (the source names are Japanese)."""
    import unicodedata

    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _pad(text: str, width: int) -> str:
    return text + " " * (width - _width(text))


def write_json(results: Sequence[Result], path: Path) -> None:
    """One object for one scenario, a list for several."""
    records = [r.as_json() for r in results]
    payload: Any = records[0] if len(records) == 1 else records
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def is_latency(result: Result) -> bool:
    return result.threshold.unit in ("ms", "s") and bool(result.measurement.latencies_s)


def write_plot(result: Result, path: Path, stream: TextIO | None = None) -> bool:
    """A latency histogram and CDF as PNG; False (with a message) when matplotlib is missing."""
    stream = stream if stream is not None else sys.stderr  # looked up per call: tests swap sys.stderr
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"{result.scenario.id}: no plot (install the plot extra: pip install 'nyx[plot]')", file=stream)
        return False
    samples_ms = sorted(1000.0 * s for s in result.measurement.latencies_s)
    figure, (hist, cdf) = plt.subplots(1, 2, figsize=(10, 4))
    hist.hist(samples_ms, bins=60, color="tab:blue")
    hist.set_xlabel("latency from scheduled send (ms)")
    hist.set_ylabel("arrivals")
    cdf.plot(samples_ms, [(i + 1) / len(samples_ms) for i in range(len(samples_ms))], color="tab:blue")
    threshold = result.threshold
    slo_ms = threshold.number * (1000.0 if threshold.unit == "s" else 1.0)
    for axis in (hist, cdf):
        axis.axvline(slo_ms, color="tab:red", linestyle="--", label=f"SLO {threshold.text}")
    cdf.set_xlabel("latency (ms)")
    cdf.set_ylabel("share of arrivals")
    cdf.legend(loc="lower right")
    figure.suptitle(f"{result.scenario.id} {result.scenario.metric}: {result.value_text()} at scale {result.scale:.3f}")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True


class Progress:
    """A one-line progress bar on a terminal for runs longer than a few seconds; silent otherwise."""

    def __init__(self, label: str, total_s: float, stream: TextIO | None = None, min_total_s: float = 3.0) -> None:
        self.label = label
        self.total_s = total_s
        self.stream = stream = stream if stream is not None else sys.stderr
        self.enabled = total_s >= min_total_s and stream.isatty()

    def __call__(self, elapsed_s: float) -> None:
        if not self.enabled:
            return
        share = min(1.0, elapsed_s / self.total_s)
        bar = "#" * int(30 * share)
        self.stream.write(f"\r{self.label} [{bar:<30}] {elapsed_s:5.1f}/{self.total_s:.1f} s")
        self.stream.flush()

    def done(self) -> None:
        if self.enabled:
            self.stream.write("\r" + " " * (len(self.label) + 50) + "\r")
            self.stream.flush()
