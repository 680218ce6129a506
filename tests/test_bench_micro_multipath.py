"""`nyx.bench micro --only multipath`: the table has a row per route count and condition judged
against the same condition's 1-route run; no run loses or alters a byte; a failed mix is routed
around; a stream that stops is reported as a stall, not waited on. No speed assertions."""

from __future__ import annotations

import dataclasses
import math

import pytest

from nyx.bench import micro
from nyx.bench.micro_multipath import (
    CONDITIONS,
    EXIT,
    QUICK,
    ROUTES,
    Plan,
    Run,
    format_table,
    measure,
    rows,
    run_plan,
)


@pytest.fixture(scope="module")
def quick_runs() -> list[Run]:
    return run_plan(QUICK)  # the quick form, as `micro --only multipath` runs it (~30 s)


def test_the_quick_table_has_a_row_per_route_count_and_condition_against_one_route(quick_runs: list[Run]) -> None:
    table = rows(quick_runs)
    assert [(r.condition, r.routes) for r in table] == [(c, n) for c in CONDITIONS for n in ROUTES]
    for row in table:
        assert row.runs == len(QUICK.seeds)
        if row.routes == 1:
            assert row.goodput_ratio == row.p95_ratio == 1.0
        assert row.goodput_bps > 0 and row.p95_s > 0
    assert format_table(table).count("\n") == len(table) + 1


def test_no_run_loses_or_alters_a_byte_and_the_unfailed_ones_deliver_all(quick_runs: list[Run]) -> None:
    for run in quick_runs:
        assert run.intact, run
        if run.condition != "mix failed at 1/3":
            assert not run.stalled and run.failed_mix is None and math.isfinite(run.p95_s), run
    # Loss on every link really reached the stream: its recovery worked for it.
    assert all(r.retransmissions > 0 for r in quick_runs if r.condition == "5% loss per link")


def test_a_failed_mix_is_routed_around_and_every_byte_arrives(quick_runs: list[Run]) -> None:
    failed = [r for r in quick_runs if r.condition == "mix failed at 1/3"]
    assert sorted(r.routes for r in failed) == sorted(ROUTES * len(QUICK.seeds))
    for run in failed:
        assert run.failed_mix is not None and run.failed_mix.startswith("mix-2-")
        assert run.replaced >= 1 and run.still_routed == 0, run  # its forward route was replaced
        if run.reply_hit == 0 or run.routes > 1:
            # A reply route through the failed mix is not replaced (no loop cover here): with one
            # reply route that is a stall (docs/stream.md "Multipath's gain"); otherwise, all arrives.
            assert not run.stalled and run.received_bytes == run.payload_bytes, run


async def test_a_stream_that_stops_is_reported_as_a_stall_with_unbounded_latency() -> None:
    plan = Plan(payload_bytes=6_000, seeds=(1,), stall_s=1.0)
    run = await measure(3, "mix failed at 1/3", 1, plan, victim=lambda forward, replies: EXIT)
    assert run.failed_mix == EXIT
    assert run.stalled and run.received_bytes < run.payload_bytes and run.intact
    assert math.isinf(run.p95_s)
    one_route = dataclasses.replace(run, routes=1, received_bytes=6_000, latencies_s=(0.1,))
    row = rows([run, one_route])[1]
    assert row.routes == 3
    assert row.stalled == 1 and row.goodput_ratio < 1 and row.p95_ratio == math.inf
    assert "unfinished" in format_table([row])


def test_the_section_is_registered() -> None:
    assert dict(micro.SECTIONS)["multipath"] == "nyx.bench.micro_multipath"
