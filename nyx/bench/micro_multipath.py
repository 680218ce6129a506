"""Multipath's gain (issue 15): goodput and p95 latency of one stream over 1, 3 and 5 routes, with
no loss, with 5% loss on every link, and with a route's mix failed mid-transfer.

    python -m nyx.bench micro --only multipath            # the quick form (one seed, 40 KB)
    python -m nyx.bench micro --only multipath --budget 1 # the full form (three seeds, 300 KB)
    python -m nyx.bench.micro_multipath [--full] [--seeds N] [--json FILE]

**The network.** `nyx.bench.mixnet` in this process: 3 layers of 6 mixes (enough for 5 disjoint
routes and a spare for each replacement), 2 gateways (entry gw-01, exit gw-02), Poisson mix
delays of 5 ms mean, links of 2 ms +- 0.5 ms. Real Sphinx packets, sessions, SURBs; one client,
no cover (`Client(routes=...)` otherwise as shipped).

**The stream.** One echo stream; the client writes a fixed payload in 1,000-byte chunks on an
absolute schedule of 50 KB/s (a chunk is due at i x 10 ms whatever happened before it, so a
stall shows up as latency instead of lowering the offered load) and reads the echo back.
- goodput: payload bytes / (first chunk due -> last echoed byte read), application level;
- latency: per chunk, from its due time to the moment the echo of its last byte is read (queueing
  behind a stall included); the table shows the p95;
- retransmissions: records declared lost by either end's loss recovery (the client's session and
  the exit's), plus records the client resent at once when their route was suspected;
- replaced: forward routes the client replaced (suspected on 3 losses in a row, or rotated);
- failover: `mix_failover_duration` of the last replacement (first loss -> first record on the
  replacement), when there was one.

**The conditions.**
- `0% loss`: the links above.
- `5% loss per link`: `LinkProfile(loss=0.05)` on every link: client-entry, entry-mix, mix-mix,
  mix-exit, both ways. A record crosses 5 links each way, so 1 - 0.95^5 = 23% of records are lost
  one way and 40% of round trips (record and its ACK) lose something: a harsh network, which all
  routes share alike.
- `mix failed at 1/3`: once a third of the payload has been written, the layer-2 mix of the
  client's first forward route stops (`Mixnet.fail`: everything to or from it is lost). Forward
  and reply routes are drawn separately: the same mix may also carry some of the SURB routes
  (`reply hit`, how many). A reply route learns of a failure only from loop cover or the
  directory (no cover here), so replies sent through it keep being lost: with 1 route whose reply
  route crossed the mix, the stream stalls.

A run not finished `stall_s` after its last chunk was due is cut there and counted as unfinished
(stopped, or carrying less than the offered rate: its backlog grows): goodput is then what
arrived by the cut, and the p95 of a table row with unfinished chunks reads `unfinished`.

Each route count is compared with the 1-route run of the same condition and seed, in the same
process (the ratio columns): these machines are noisy, and a ratio of two runs minutes apart
survives noise a raw figure does not. With several seeds, a row is the median of its runs.
The whole network shares one core with the client: at 100 KB/s the Sphinx work is about 3,000
packet hops per second, within what one process carries, so goodput at 0% is the offered rate.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from nyx.bench.mixnet import Mixnet, MixnetShape, mixnet
from nyx.bench.timing import MicroRecord
from nyx.stream.client import Client
from nyx.stream.routes import RouteScheduler
from nyx.transport import LinkProfile

ROUTES = (1, 3, 5)
CONDITIONS = ("0% loss", "5% loss per link", "mix failed at 1/3")
LINK_LOSS = {"0% loss": 0.0, "5% loss per link": 0.05, "mix failed at 1/3": 0.0}
CHUNK_BYTES = 1000
OFFERED_BPS = 50_000.0  # bytes/s of payload offered
MIXES_PER_LAYER = 6
ENTRY, EXIT = "gw-01", "gw-02"

#: (forward routes, reply routes) -> the node to stop once a third of the payload is written.
Victim = Callable[[RouteScheduler, RouteScheduler], str]


@dataclass(frozen=True, slots=True)
class Plan:
    payload_bytes: int
    seeds: tuple[int, ...]
    stall_s: float  # after the last write: an echo still incomplete then is a stall

    def describe(self) -> str:
        return (f"{self.payload_bytes // 1000} KB echoed in {CHUNK_BYTES}-byte chunks offered at "
                f"{OFFERED_BPS / 1000:.0f} KB/s; seeds {list(self.seeds)}")


QUICK = Plan(payload_bytes=40_000, seeds=(1,), stall_s=12.0)
FULL = Plan(payload_bytes=300_000, seeds=(1, 2, 3), stall_s=30.0)


@dataclass(frozen=True, slots=True)
class Run:
    """One stream over `routes` routes under `condition`."""

    routes: int
    condition: str
    seed: int
    payload_bytes: int
    received_bytes: int
    intact: bool  # every byte echoed so far equals the payload's at its place (none lost or altered)
    elapsed_s: float  # first chunk due -> last byte read (or the stall deadline)
    latencies_s: tuple[float, ...]  # per chunk; inf for a chunk never echoed
    retransmissions: int
    replaced: int
    failover_s: float | None  # the last mix_failover_duration, if a route was replaced after a failure
    failed_mix: str | None
    reply_hit: int  # reply routes through the failed mix when it failed
    still_routed: int  # forward routes through the failed mix at the end (a replacement leaves it)

    @property
    def stalled(self) -> bool:
        """Not every byte echoed `stall_s` after the last write: stopped, or slower than offered."""
        return self.received_bytes < self.payload_bytes

    @property
    def goodput_bps(self) -> float:
        return self.received_bytes / self.elapsed_s

    @property
    def p95_s(self) -> float:
        return percentile(self.latencies_s, 0.95)


@dataclass(frozen=True, slots=True)
class Row:
    """A route count under a condition: the median over seeds, and its ratio to 1 route."""

    routes: int
    condition: str
    goodput_bps: float
    goodput_ratio: float  # / the 1-route goodput of the same condition
    p95_s: float
    p95_ratio: float  # / the 1-route p95 of the same condition (below 1: multipath is faster)
    retransmissions: float
    replaced: float
    failover_s: float | None
    runs: int
    intact: int  # runs whose echoed bytes were all the payload's (none altered or skipped)
    stalled: int
    reply_hit: int  # runs whose failed mix also carried reply routes


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else math.inf


def _session_routes(client: Client) -> tuple[RouteScheduler, RouteScheduler]:
    """The forward and reply routes of the client's one session (`Client` keeps them internal)."""
    session = next(iter(client._sessions.values()))
    assert session.routes is not None and session.reply_routes is not None
    return session.routes, session.reply_routes


def _retransmissions(net: Mixnet, client: Client) -> int:
    """Records declared lost by the client's and the exit's loss recovery, plus the records the
    client resent when their route was suspected (not counted as lost)."""
    lost = client.records_resent
    exit_sessions = list(net.gateways[EXIT].exit._sessions.values())
    for session in [s.core.session for s in client._sessions.values()] + exit_sessions:
        if session is not None:
            lost += session._recovery.lost_total
    return lost


def first_route_mix(forward: RouteScheduler, replies: RouteScheduler) -> str:
    """The mix the failure condition stops: layer 2 of the client's first forward route."""
    del replies
    return forward.active()[0].mixes[1]


async def _echo(net: Mixnet, client: Client, plan: Plan, loss: float,
                victim: Victim | None) -> tuple[int, bool, list[float], float, str | None, int]:
    """Echo the payload on one stream; returns (bytes received, intact, per-chunk latencies,
    elapsed, failed mix, reply routes through it)."""
    reader, writer = await asyncio.wait_for(client.open_connection("echo"), 30)
    if loss:  # from the first chunk on: the session and stream opened on clean links
        net.network.model.default = dataclasses.replace(net.network.model.default, loss=loss)
    payload = random.Random(plan.payload_bytes).randbytes(plan.payload_bytes)
    chunks = math.ceil(plan.payload_bytes / CHUNK_BYTES)
    start = time.perf_counter()
    due = [start + i * CHUNK_BYTES / OFFERED_BPS for i in range(chunks)]
    echoed_at: list[float] = []
    received = bytearray()

    async def read_all() -> None:
        while len(received) < plan.payload_bytes:
            data = await reader.read(65536)
            if not data:
                return
            received.extend(data)
            now = time.perf_counter()
            done = len(received)
            while len(echoed_at) < chunks and min((len(echoed_at) + 1) * CHUNK_BYTES, plan.payload_bytes) <= done:
                echoed_at.append(now)  # every chunk whose last byte is now in

    failed_mix, reply_hit = None, 0

    async def write_all() -> None:
        nonlocal failed_mix, reply_hit
        for i in range(chunks):
            await asyncio.sleep(max(0.0, due[i] - time.perf_counter()))
            writer.write(payload[i * CHUNK_BYTES:(i + 1) * CHUNK_BYTES])
            await writer.drain()
            if victim is not None and failed_mix is None and (i + 1) * CHUNK_BYTES >= plan.payload_bytes // 3:
                forward, replies = _session_routes(client)
                failed_mix = victim(forward, replies)
                reply_hit = sum(failed_mix in r.mixes for r in replies.active())
                net.fail(failed_mix)

    try:
        async with asyncio.timeout(due[-1] - start + plan.stall_s):  # a stall blocks drain() too
            async with asyncio.TaskGroup() as tg:
                tg.create_task(read_all())
                tg.create_task(write_all())
    except TimeoutError:
        pass  # a stall: reported as bytes short, and inf latency for the chunks never echoed
    finally:
        writer.close()
    end = echoed_at[-1] if len(echoed_at) == chunks else time.perf_counter()
    latencies = [echoed_at[i] - due[i] if i < len(echoed_at) else math.inf for i in range(chunks)]
    return len(received), bytes(received) == payload[:len(received)], latencies, end - start, failed_mix, reply_hit


async def measure(routes: int, condition: str, seed: int, plan: Plan, victim: Victim = first_route_mix) -> Run:
    """One stream of `plan.payload_bytes` over `routes` routes under `condition` (a fresh network).
    `victim` picks the node the failure condition stops (tests stop others)."""
    profile = LinkProfile(latency_s=0.002, jitter_s=0.0005)
    shape = MixnetShape(mixes_per_layer=MIXES_PER_LAYER, gateways=2, mean_delay_s=0.005, profile=profile)
    async with mixnet(shape, seed=seed) as net:
        client = net.client(gateway=ENTRY, exit=EXIT, routes=routes)
        async with client:
            received, intact, latencies, elapsed, failed_mix, reply_hit = await _echo(
                net, client, plan, LINK_LOSS[condition],
                victim if condition == "mix failed at 1/3" else None)
            forward, _ = _session_routes(client)
            still_routed = sum(failed_mix in r.mixes for r in forward.active()) if failed_mix else 0
            failover = client.metric_values().get("mix_failover_duration")
            return Run(routes, condition, seed, plan.payload_bytes, received, intact, elapsed, tuple(latencies),
                       _retransmissions(net, client),
                       forward.replaced, failover, failed_mix, reply_hit, still_routed)


def run_plan(plan: Plan, routes: Sequence[int] = ROUTES, conditions: Sequence[str] = CONDITIONS) -> list[Run]:
    runs = []
    for condition in conditions:
        for seed in plan.seeds:
            for width in routes:
                run = asyncio.run(measure(width, condition, seed, plan))
                print(f"micro multipath: {condition}, {width} route(s), seed {seed}: {run.received_bytes:,} of "
                      f"{run.payload_bytes:,} B in {run.elapsed_s:.2f} s, p95 {run.p95_s * 1000:.0f} ms, "
                      f"{run.retransmissions} retransmitted, {run.replaced} replaced"
                      + (f", failed {run.failed_mix} (on {run.reply_hit} reply routes)" if run.failed_mix else ""),
                      file=sys.stderr)
                runs.append(run)
    return runs


def rows(runs: Sequence[Run]) -> list[Row]:
    """Median per (condition, routes) over seeds; ratios against the same condition's 1-route
    run of the same seed, then their median (so a seed's network is compared with itself)."""
    out = []
    conditions = list(dict.fromkeys(r.condition for r in runs))
    for condition in conditions:
        base = {r.seed: r for r in runs if r.condition == condition and r.routes == 1}
        for width in sorted({r.routes for r in runs if r.condition == condition}):
            group = [r for r in runs if r.condition == condition and r.routes == width]
            pairs = [(r, base[r.seed]) for r in group if r.seed in base]
            failovers = [r.failover_s for r in group if r.failover_s is not None]
            out.append(Row(
                width, condition,
                statistics.median(r.goodput_bps for r in group),
                statistics.median(r.goodput_bps / b.goodput_bps for r, b in pairs) if pairs else math.nan,
                statistics.median(r.p95_s for r in group),
                statistics.median(_ratio(r.p95_s, b.p95_s) for r, b in pairs) if pairs else math.nan,
                statistics.median(r.retransmissions for r in group),
                statistics.median(r.replaced for r in group),
                statistics.median(failovers) if failovers else None,
                len(group), sum(r.intact for r in group), sum(r.stalled for r in group),
                sum(r.reply_hit > 0 for r in group),
            ))
    return out


def _ratio(a: float, b: float) -> float:
    if math.isinf(a) and math.isinf(b):
        return 1.0
    return a / b if b else math.inf


def format_table(table: Sequence[Row]) -> str:
    header = (f"{'condition':<18} {'routes':>6} {'goodput KB/s':>12} {'x 1 route':>9} {'p95 ms':>8} "
              f"{'x 1 route':>9} {'retrans':>7} {'replaced':>8} {'failover s':>10} {'intact':>6} {'reply hit':>9}")
    lines = [header, "-" * len(header)]
    for r in table:
        failover = f"{r.failover_s:.2f}" if r.failover_s is not None else "-"
        p95 = f"{r.p95_s * 1000:.0f}" if math.isfinite(r.p95_s) else "unfinished"
        lines.append(
            f"{r.condition:<18} {r.routes:>6} {r.goodput_bps / 1000:>12.1f} {r.goodput_ratio:>9.2f} {p95:>8} "
            f"{r.p95_ratio:>9.2f} {r.retransmissions:>7.0f} {r.replaced:>8.0f} {failover:>10} "
            f"{r.intact:>3}/{r.runs:<2} {r.reply_hit:>9}"
        )
    return "\n".join(lines)


def records(budget_s: float) -> list[MicroRecord]:
    """The quick form below a budget of 1 s per operation (the default 0.3), the full form from 1 s.
    Two records per route count and condition: goodput and 1/p95, each beside the 1-route run."""
    plan = QUICK if budget_s < 1.0 else FULL
    table = rows(run_plan(plan))
    print(f"micro multipath ({plan.describe()}):\n{format_table(table)}", file=sys.stderr)
    base = {r.condition: r for r in table if r.routes == 1}
    out = []
    for r in table:
        b = base[r.condition]
        out.append(MicroRecord(f"multipath goodput B/s, {r.routes} routes, {r.condition}", r.goodput_bps,
                               "1 route, same condition", b.goodput_bps))
        out.append(MicroRecord(f"multipath 1/(p95 chunk RTT), {r.routes} routes, {r.condition}", 1.0 / r.p95_s,
                               "1 route, same condition", 1.0 / b.p95_s if b.p95_s else math.inf))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nyx.bench.micro_multipath", description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help=f"the full form ({FULL.describe()})")
    parser.add_argument("--seeds", type=int, help="how many seeds (default: the form's)")
    parser.add_argument("--json", type=Path, help="write every run and the table as JSON here")
    args = parser.parse_args(argv)
    plan = FULL if args.full else QUICK
    if args.seeds:
        plan = Plan(plan.payload_bytes, tuple(range(1, args.seeds + 1)), plan.stall_s)
    runs = run_plan(plan)
    table = rows(runs)
    print(f"{plan.describe()}\n{format_table(table)}")
    if args.json:
        args.json.write_text(json.dumps({
            "plan": asdict(plan), "rows": [asdict(r) for r in table],
            "runs": [{**asdict(r), "latencies_s": None, "p95_s": r.p95_s, "goodput_bps": r.goodput_bps} for r in runs],
        }, indent=2, default=str) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
