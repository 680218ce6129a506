"""Run SCL replays: pick the duration and scale, run each replay on its own event loop, judge it.

Each replay gets a fresh `asyncio.run`, so one scenario's tasks, sockets and timers cannot leak
into the next, and a failure in one is reported without stopping the others.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from nyx.bench import catalogue, scenarios
from nyx.bench.catalogue import Scenario, Threshold
from nyx.bench.context import run_context
from nyx.bench.report import Progress, Result, is_latency, write_plot
from nyx.bench.scenarios import RunOptions, TransportKind


class NotReplayedError(LookupError):
    """The scenario exists but has no replay here (pending, or out of scope); the message says why."""


@dataclass(frozen=True, slots=True)
class RunSettings:
    """Command-line choices. None = the replay's own default (or its quick setting with `quick`)."""

    duration_s: float | None = None
    scale: float | None = None
    transport: TransportKind = "sim"
    quick: bool = False
    seed: int = 1
    slo: Threshold | None = None  # judge against this instead of the catalogue's SLO
    gateways: int | None = None  # SCL-003's gateway processes


def replayed() -> list[Scenario]:
    """The scenarios that have a replay, in id order."""
    return [s for s in catalogue.load() if s.status == "replayed"]


def resolve(scenario_id: str) -> Scenario:
    """The scenario to run, or NotReplayedError saying what it waits for / why it is out of scope."""
    scenario = catalogue.by_id(scenario_id)
    if scenario.status == "pending":
        raise NotReplayedError(f"{scenario.id} is pending: it waits for {scenario.waits_for}")
    if scenario.status == "out-of-scope":
        raise NotReplayedError(f"{scenario.id} is out of scope: {scenario.out_of_scope_reason}")
    return scenario


def run_one(scenario: Scenario, settings: RunSettings, stream: TextIO | None = None) -> Result:
    """Run the replay of `scenario` and judge it against its SLO."""
    replay = scenarios.module(scenario.id)
    quick_duration_s, quick_scale = replay.QUICK
    duration_s = settings.duration_s or (quick_duration_s if settings.quick else replay.DEFAULT_DURATION_S)
    scale = settings.scale if settings.scale is not None else (quick_scale if settings.quick else 1.0)
    if duration_s <= 0 or scale <= 0:
        raise ValueError("--duration and --scale must be positive")
    progress = Progress(f"{scenario.id}", duration_s, stream)
    if settings.gateways is not None and settings.gateways < 1:
        raise ValueError("--gateways must be at least 1")
    options = RunOptions(
        duration_s=duration_s, scale=scale, transport=settings.transport, tick=progress, seed=settings.seed,
        gateways=settings.gateways,
    )
    try:
        measurement = asyncio.run(replay.replay(options))
    finally:
        progress.done()
    context = run_context(settings.seed, settings.transport, settings.quick, duration_s, scale)
    return Result(scenario, measurement, requested_scale=scale, slo=settings.slo, context=context)


def plot_path(result: Result, json_path: Path | None, out_dir: Path | None) -> Path | None:
    """Where the latency plot of `result` goes: beside its JSON, or None when it has no plot."""
    if not is_latency(result):
        return None
    if out_dir is not None:
        return out_dir / f"{result.scenario.id}.png"
    if json_path is not None:
        return json_path.with_name(f"{json_path.stem}-{result.scenario.id}.png")
    return None


def run_all(
    ids: Sequence[str], settings: RunSettings, stream: TextIO | None = None
) -> list[Result]:
    """Run each scenario in turn (ids already resolved), printing its verdict line as it ends."""
    results = []
    for scenario_id in ids:
        scenario = resolve(scenario_id)
        result = run_one(scenario, settings, stream)
        print(result.verdict_line(), flush=True)
        results.append(result)
    return results


def save(results: Sequence[Result], json_path: Path | None, out_dir: Path | None, stream: TextIO | None = None) -> list[Path]:
    """Write the JSON (one file, or one per scenario under `out_dir`) and any latency plots."""
    from nyx.bench.report import write_json

    written: list[Path] = []
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        for result in results:
            path = out_dir / f"{result.scenario.id}.json"
            write_json([result], path)
            written.append(path)
    if json_path is not None:
        write_json(results, json_path)
        written.append(json_path)
    for result in results:
        path = plot_path(result, json_path, out_dir)
        if path is not None and write_plot(result, path, stream):
            written.append(path)
    return written
