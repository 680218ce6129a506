"""The multipath failover load shared by SCL-004 and SCL-012: flows over a whole in-process mixnet,
mixes killed under them, and what each flow's route scheduler and application saw.

A **flow** is one `nyx.Client` (its own id and simulated link, entering at gateway i mod G and
leaving at another) with one session of `routes` (5) disjoint routes and one `echo` stream. Its
messages (`message_bytes` of seeded random bytes) are written open-loop, evenly spaced at
`flow_rate_msgs_s` from a random phase, awaiting `drain()` after each (backpressure: a flow that
falls behind writes late, and what it had not written when the schedule ended is missed). A
reader checks every echoed byte against what was written, in order.

Flows open before the clock, at most `open_concurrency` at once, within `open_deadline_s`: the
ones still opening then are abandoned and carry no load (the achieved load says so). At
`kill_at_s` into the load, `pick_victims` names the mixes to kill and `Mixnet.fail` makes them
unreachable (every packet to or from them is lost; nothing tells the clients). The flows keep
their schedules; the stack's own mechanisms (3 records lost in a row on a route: suspicion,
records in flight resent on the other routes, a replacement built) must carry them on.

Per flow, after the load and a drain of `drain_s` for echoes still in flight:
- the forward scheduler's `failovers_s` (first loss -> first record on the replacement) and
  `reconfigurations_s` (suspicion -> first record on the replacement), every event of the run;
- whether an active route went through a victim at the kill (`affected`), how long after the
  kill its first replacement carried a record (a watcher reads the scheduler every 20 ms), and
  whether a route through a victim was still active at the end (`unhealed`: its failover never
  happened; it counts with the time since the kill, a lower bound);
- bytes written, bytes echoed, and whether an echoed byte differed (`mismatched`).
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from nyx.bench.loadgen import percentile
from nyx.bench.mixnet import Mixnet, MixnetShape, mixnet
from nyx.bench.scenarios.scl_001 import quiet_client_log
from nyx.stream.client import Client
from nyx.stream.routes import RouteBuildError, RouteBuilder, RouteScheduler

WATCH_S = 0.020  # how often the watcher reads the schedulers after the kill
LAG_TIMER_S = 0.010


@dataclass(slots=True)
class FlowOutcome:
    """What one flow saw; the replay reduces these."""

    index: int
    opened: bool = False
    open_error: str = ""
    written_msgs: int = 0
    scheduled_msgs: int = 0
    written_bytes: int = 0
    echoed_bytes: int = 0
    mismatched: bool = False
    stream_error: str = ""
    affected: bool = False  # an active forward route went through a victim at the kill
    healed_after_kill_s: float | None = None  # kill -> first record on a replacement
    unhealed: bool = False  # a route through a victim still active at the end
    failovers_s: list[float] = field(default_factory=list)
    reconfigurations_s: list[float] = field(default_factory=list)
    events_before_kill: int = 0
    reply_unhealed: bool = False  # a reply route (its SURBs) through a victim still active at the end
    records_resent: int = 0
    echo_latencies_s: list[float] = field(default_factory=list)  # scheduled write -> echo read

    @property
    def lost_bytes(self) -> int:
        return self.written_bytes - self.echoed_bytes


@dataclass(frozen=True, slots=True)
class FailoverLoad:
    shape: MixnetShape
    flows: int
    flow_rate_msgs_s: float
    message_bytes: int
    duration_s: float
    kill_at_s: float
    pick_victims: Callable[[Mixnet, list[RouteScheduler], random.Random], list[str]]
    routes: int = 5
    open_concurrency: int = 16
    open_deadline_s: float = 60.0
    drain_s: float = 20.0
    lost_in_a_row: int | None = None  # None: the scheduler's own (3); a fault injection sets it high
    route_build_delay_s: float = 0.0  # a fault injection: replacements built this late (a slow route computation)


@dataclass(slots=True)
class FailoverRun:
    flows: list[FlowOutcome]
    victims: list[str]
    kill_clock: float  # on the clients' clock
    end_clock: float
    open_s: float
    load_s: float
    lag_p95_s: float
    lag_max_s: float
    gateway_drops: int
    mix_packets: int  # packets the mixes received over the whole run (set-up and drain included)

    @property
    def opened(self) -> list[FlowOutcome]:
        return [f for f in self.flows if f.opened]

    def written_msgs(self) -> int:
        return sum(f.written_msgs for f in self.flows)

    def lost_bytes(self) -> int:
        return sum(f.lost_bytes for f in self.flows)

    def mismatched(self) -> int:
        return sum(f.mismatched for f in self.flows)

    def affected(self) -> list[FlowOutcome]:
        return [f for f in self.flows if f.affected]

    def unhealed(self) -> list[FlowOutcome]:
        return [f for f in self.flows if f.unhealed]

    def censored_s(self) -> float:
        """What an unhealed flow counts with: the time from the kill to the end (a lower bound)."""
        return self.end_clock - self.kill_clock


def forward_routes(client: Client) -> RouteScheduler | None:
    """The forward route scheduler of the client's one session (None before it opened)."""
    return next((forward for _, forward, _ in client.route_schedulers()), None)


def slow_builder(build: RouteBuilder, delay_s: float, clock: Callable[[], float]) -> RouteBuilder:
    """A fault: the route builder answers `delay_s` after it was first asked for a route (each
    ask until then is refused, as a directory with no usable mix would be), as a slow route
    computation would; the scheduler retries on its next `maintain` (every delivery report)."""
    asked: list[float] = []

    def build_late(avoid: frozenset[str], spread: frozenset[str]) -> tuple[str, ...]:
        now = clock()
        if not asked:
            asked.append(now)
        if now - asked[0] < delay_s:
            raise RouteBuildError(f"route computation under way ({now - asked[0]:.3f} of {delay_s:g} s)")
        asked.clear()
        return build(avoid, spread)

    return build_late


def reply_routes(client: Client) -> RouteScheduler | None:
    """The reply route scheduler (the routes of the SURBs handed to the exit) of the client's session."""
    return next((replies for _, _, replies in client.route_schedulers()), None)


def through(scheduler: RouteScheduler, victims: set[str]) -> bool:
    return any(victims.intersection(route.mixes) for route in scheduler.active())


async def run_failover(load: FailoverLoad, seed: int, tick: Callable[[float], None] | None = None) -> FailoverRun:
    rng = random.Random(seed)
    outcomes = [FlowOutcome(i) for i in range(load.flows)]
    clients: list[Client | None] = [None] * load.flows
    streams: dict[int, tuple[object, object]] = {}
    lags: list[float] = []

    with quiet_client_log():
        async with mixnet(load.shape, seed) as net:
            gateways = net.gateway_ids
            g = len(gateways)
            gate = asyncio.Semaphore(load.open_concurrency)

            async def open_flow(i: int) -> None:
                out = outcomes[i]
                async with gate:
                    client = net.client(gateway=gateways[i % g], exit=gateways[(i + 1 + (i // g) % (g - 1)) % g],
                                        routes=load.routes)
                    clients[i] = client
                    try:
                        await client.start()
                        reader, writer = await client.open_connection("echo")
                    except Exception as exc:  # counted: the load runs on the flows that opened
                        out.open_error = type(exc).__name__
                        return
                    scheduler = forward_routes(client)
                    if scheduler is not None and load.lost_in_a_row is not None:
                        scheduler.lost_in_a_row = load.lost_in_a_row
                    if scheduler is not None and load.route_build_delay_s > 0:
                        scheduler.build = slow_builder(scheduler.build, load.route_build_delay_s, client.clock)
                    streams[i] = (reader, writer)
                    out.opened = True

            open_start = time.perf_counter()
            opening = [asyncio.create_task(open_flow(i)) for i in range(load.flows)]
            done, pending = await asyncio.wait(opening, timeout=load.open_deadline_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            open_s = time.perf_counter() - open_start
            for out in outcomes:
                out.scheduled_msgs = round(load.flow_rate_msgs_s * load.duration_s)  # the opened set their own

            start = time.perf_counter()
            end = start + load.duration_s
            clock = time.time  # the clients' clock (Client's default), for the schedulers' times

            async def write_flow(i: int) -> None:
                out = outcomes[i]
                reader, writer = streams[i]
                payload_rng = random.Random(seed * 1_000_003 + i)
                period = 1.0 / load.flow_rate_msgs_s
                phase = payload_rng.random() * period
                out.scheduled_msgs = math.ceil((load.duration_s - phase) / period)
                sent = sent_buffers[i]
                n = 0
                while True:
                    due = phase + n * period
                    if due >= load.duration_s:
                        break
                    now = time.perf_counter() - start
                    if now >= load.duration_s:
                        break
                    if due > now:
                        await asyncio.sleep(due - now)
                    message = payload_rng.randbytes(load.message_bytes)
                    sent.extend(message)
                    due_times[i].append(due)
                    writer.write(message)  # type: ignore[attr-defined]
                    out.written_msgs += 1
                    out.written_bytes += len(message)
                    await writer.drain()  # type: ignore[attr-defined]
                    n += 1

            async def read_flow(i: int) -> None:
                out = outcomes[i]
                reader, _ = streams[i]
                sent = sent_buffers[i]
                size = load.message_bytes
                while True:
                    chunk = await reader.read(65536)  # type: ignore[attr-defined]
                    if not chunk:
                        return
                    at = out.echoed_bytes
                    if bytes(sent[at:at + len(chunk)]) != chunk:
                        out.mismatched = True
                    before = at // size
                    out.echoed_bytes += len(chunk)
                    now = time.perf_counter() - start
                    for m in range(before, out.echoed_bytes // size):
                        out.echo_latencies_s.append(now - due_times[i][m])

            async def watch_loop() -> None:
                while True:
                    before = time.perf_counter()
                    await asyncio.sleep(LAG_TIMER_S)
                    lags.append(time.perf_counter() - before - LAG_TIMER_S)

            sent_buffers = {i: bytearray() for i in streams}
            due_times: dict[int, list[float]] = {i: [] for i in streams}
            schedulers = {i: s for i in streams if (c := clients[i]) is not None and (s := forward_routes(c)) is not None}
            writers = [asyncio.create_task(write_flow(i)) for i in streams]
            readers = {i: asyncio.create_task(read_flow(i)) for i in streams}
            lag_task = asyncio.create_task(watch_loop())
            victims: list[str] = []
            kill_clock = math.nan
            try:
                await _sleep_until(start + load.kill_at_s, start, tick)
                victims = load.pick_victims(net, list(schedulers.values()), rng)
                kill_clock = clock()
                dead = set(victims)
                watched: dict[int, int] = {}
                for i, scheduler in schedulers.items():
                    outcomes[i].events_before_kill = len(scheduler.failovers_s)
                    if through(scheduler, dead):
                        outcomes[i].affected = True
                        watched[i] = len(scheduler.failovers_s)
                for node in victims:
                    net.fail(node)
                while time.perf_counter() < end:
                    for i in [i for i, seen in watched.items() if len(schedulers[i].failovers_s) > seen]:
                        outcomes[i].healed_after_kill_s = clock() - kill_clock
                        del watched[i]
                    if tick is not None:
                        tick(time.perf_counter() - start)
                    await asyncio.sleep(WATCH_S)
                await asyncio.gather(*writers, return_exceptions=True)
                load_s = time.perf_counter() - start
                # Drain: echoes still in flight, and failovers still under way, until every flow
                # has its bytes back or `drain_s` is over.
                drain_until = time.perf_counter() + load.drain_s
                while time.perf_counter() < drain_until:
                    for i in [i for i, seen in watched.items() if len(schedulers[i].failovers_s) > seen]:
                        outcomes[i].healed_after_kill_s = clock() - kill_clock
                        del watched[i]
                    if all(outcomes[i].echoed_bytes >= outcomes[i].written_bytes or readers[i].done() for i in streams):
                        break
                    await asyncio.sleep(WATCH_S)
                end_clock = clock()
            finally:
                lag_task.cancel()
                for task in [*writers, *readers.values()]:
                    task.cancel()
                results = await asyncio.gather(*readers.values(), return_exceptions=True)
                await asyncio.gather(*writers, return_exceptions=True)
            for i, result in zip(readers, results):
                if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                    outcomes[i].stream_error = type(result).__name__
            for i, scheduler in schedulers.items():
                out = outcomes[i]
                out.failovers_s = list(scheduler.failovers_s)
                out.reconfigurations_s = list(scheduler.reconfigurations_s)
                out.unhealed = out.affected and through(scheduler, set(victims))
                client = clients[i]
                replies = reply_routes(client) if client is not None else None
                out.reply_unhealed = replies is not None and through(replies, set(victims))
                out.records_resent = client.records_resent if client is not None else 0
            await asyncio.gather(*(c.close() for c in clients if c is not None), return_exceptions=True)
            gateway_drops = sum(sum(gw.drops.values()) for gw in net.gateways.values())
            mix_packets = sum(node.received for node in net.mixes.values())

    return FailoverRun(
        flows=outcomes, victims=victims, kill_clock=kill_clock, end_clock=end_clock, open_s=open_s, load_s=load_s,
        lag_p95_s=percentile(lags, 95), lag_max_s=max(lags, default=math.nan), gateway_drops=gateway_drops, mix_packets=mix_packets,
    )


async def _sleep_until(deadline: float, start: float, tick: Callable[[float], None] | None) -> None:
    while (left := deadline - time.perf_counter()) > 0:
        await asyncio.sleep(min(left, 0.25))
        if tick is not None:
            tick(time.perf_counter() - start)


def victims_on_routes(count: int) -> Callable[[Mixnet, list[RouteScheduler], random.Random], list[str]]:
    """SCL-004: `count` mixes on active routes, one per layer in turn (layer 2 first), each the
    mix carrying the most active routes of its layer (ties broken at random)."""

    def pick(net: Mixnet, schedulers: list[RouteScheduler], rng: random.Random) -> list[str]:
        load: dict[str, int] = {}
        for scheduler in schedulers:
            for route in scheduler.active():
                for mix in route.mixes:
                    load[mix] = load.get(mix, 0) + 1
        layers = net.shape.layers
        order = [2, 1, 3] if layers == 3 else list(range(1, layers + 1))
        chosen: list[str] = []
        for k in range(count):
            layer = order[k % len(order)]
            candidates = [m for m in net.mix_keys if int(m.split("-")[1]) == layer and m not in chosen]
            rng.shuffle(candidates)
            candidates.sort(key=lambda m: -load.get(m, 0))
            if candidates:
                chosen.append(candidates[0])
        return chosen

    return pick


def victims_share(share: float) -> Callable[[Mixnet, list[RouteScheduler], random.Random], list[str]]:
    """SCL-012: `share` of every layer's mixes, drawn at random (chaos kill)."""

    def pick(net: Mixnet, schedulers: list[RouteScheduler], rng: random.Random) -> list[str]:
        chosen: list[str] = []
        for layer in range(1, net.shape.layers + 1):
            mixes = sorted(m for m in net.mix_keys if int(m.split("-")[1]) == layer)
            chosen += rng.sample(mixes, max(1, round(share * len(mixes))))
        return chosen

    return pick


def load_notes(run: FailoverRun, load: FailoverLoad) -> list[str]:
    """The notes both replays share: the load carried, what was killed, the application's view."""
    opened = run.opened
    written, scheduled = run.written_msgs(), sum(f.scheduled_msgs for f in run.flows)
    echoes = [x for f in run.flows for x in f.echo_latencies_s]
    errors: dict[str, int] = {}
    for f in run.flows:
        for err in (f.open_error, f.stream_error):
            if err:
                errors[err] = errors.get(err, 0) + 1
    not_opened = load.flows - len(opened)
    shape = load.shape
    return [
        f"load: {len(opened):,} of {load.flows:,} flows opened in {run.open_s:.1f} s before the clock "
        f"({not_opened:,} abandoned at the {load.open_deadline_s:g} s set-up deadline or failed), each a client "
        f"with {load.routes} routes and one echo stream writing {load.message_bytes} B messages at "
        f"{load.flow_rate_msgs_s:g}/s; {written:,} of {scheduled:,} scheduled messages written in "
        f"{load.duration_s:g} s ({written / load.duration_s:,.1f} msgs/s)",
        f"killed at {load.kill_at_s:g} s: {len(run.victims)} of {shape.layers * shape.mixes_per_layer} mixes "
        f"({', '.join(run.victims)}), unreachable from then on (every packet to or from them lost, nothing "
        f"tells the clients); {len(run.affected()):,} flows had an active route through one",
        f"application: {run.lost_bytes():,} bytes written and never echoed (after a drain of up to "
        f"{load.drain_s:g} s), {run.mismatched()} flows with an echoed byte differing; echo latency from the "
        f"scheduled write p50 {1000 * percentile(echoes, 50):.0f} ms, p99 {1000 * percentile(echoes, 99):.0f} ms, "
        f"max {1000 * max(echoes, default=math.nan):.0f} ms; records resent at once off suspected routes "
        f"{sum(f.records_resent for f in run.flows):,}; errors: "
        + (", ".join(f"{k} {v}" for k, v in sorted(errors.items())) or "none"),
        f"one process: {shape.gateways} gateways, {shape.layers}x{shape.mixes_per_layer} mixes (Poisson mean "
        f"{1000 * shape.mean_delay_s:g} ms), every client and the generator share one event loop: "
        f"{run.mix_packets:,} packets through the mixes ({run.mix_packets / max(written, 1):.1f} per message: "
        f"data, echo, ACKs and SURBs); event loop lag p95 {1000 * run.lag_p95_s:.1f} ms, max "
        f"{1000 * run.lag_max_s:.0f} ms; gateway drops {run.gateway_drops}",
    ]


def load_counts(run: FailoverRun) -> dict[str, int]:
    return {
        "flows_opened": len(run.opened),
        "messages_written": run.written_msgs(),
        "lost_bytes": run.lost_bytes(),
        "mismatched_flows": run.mismatched(),
        "victims": len(run.victims),
        "affected_flows": len(run.affected()),
        "unhealed_flows": len(run.unhealed()),
        "reply_unhealed_flows": sum(f.reply_unhealed for f in run.flows),
        "failovers": sum(len(f.failovers_s) for f in run.flows),
        "reconfigurations": sum(len(f.reconfigurations_s) for f in run.flows),
        "events_before_kill": sum(f.events_before_kill for f in run.flows),
        "records_resent": sum(f.records_resent for f in run.flows),
        "mix_packets": run.mix_packets,
    }
