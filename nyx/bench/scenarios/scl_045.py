"""SCL-045 Mixノードローリング再起動: 10% of 300 mixes restarted per hour; drop < 0.2%.

A whole mixnet in this process (`nyx.bench.mixnet`): `GATEWAYS` gateways and three layers of 100
mixes (the scenario's 300), real Sphinx packets, real handshakes and SURB replies over
`SimTransport`. `CLIENTS` clients (`nyx.Client`, cover off, multipath on: 5 disjoint routes and
5 reply routes per session) each hold one persistent stream to an exit's `echo` service, opened
and warmed before the clock starts.

**Compression.** "10%/h" of 300 mixes is 30 restarts per hour; the run compresses one hour into
`--duration` seconds (x `--scale` restarts: 30 at scale 1), so restarts begin every
duration / restarts seconds, in a random order of the 300 (a 60 s run compresses 60x: one
restart every 2 s of the run for every 2 minutes of the hour). A restart's own phases are
compressed by the same factor, with a floor (`MIN_PHASE_S`) so that a short run does not cut
them below what the packets already on their way need:

1. **leave** (`directory step`): the mix leaves the directory. Every client gets a directory
   without it (`Client.update_directory`, what a client's refresh does with each verified
   document) and moves its routes off it at once, resending what those routes had in flight;
2. **linger** `LINGER_REAL_S` (compressed): the mix still forwards what reaches it (packets
   already on their way, replies on SURBs the exits still hold through it);
3. **drain and stop**: `MixNode.drain()` (stop accepting, flush the delay queue, as on SIGTERM),
   then the node is unreachable (`Mixnet.fail`) for `DOWN_REAL_S` (compressed);
4. **back**: reachable and accepting again with the same keys and the same `MixNode` and replay
   cache (what `python -m nyx.mix` restores from its saved replay tables), and listed again.

**The value** is counted at the application, after the session's retransmissions: messages
(`MESSAGE_BYTES` of random bytes, open loop at `MESSAGES_PER_S`, each on a random client's
stream) whose echo did not come back byte-exact within `DEADLINE_S`, over messages sent, in %.
A stream that breaks loses every message it had not echoed. The mixes' own drops are reported
beside it: their drop counters (`MixNode.drop_counts`: `draining`, `replay`, ...) and the packets
the network lost at a stopped mix, over the packets sent to mixes.

**Contrast.** The same schedule is run again, on fresh clients, without the directory step: the
mix drains and stops while still listed, and clients find out by losing records (3 lost in a
row on a route). Its figures are in the notes and `counts` (prefix `blind_`): what leaving the
directory first buys. `CONTRAST = False` skips it; `DIRECTORY_STEP = False` runs the main run
blind too (the tests' fault).

**Load and verdict**: the rate is restarts per simulated hour: 30 x --scale asked, the restarts
that completed all four phases achieved. Fewer than 95% completed is INCONCLUSIVE, and so is a
run of fewer than 1 / 0.2% = 500 messages, where a single lost message would already exceed the
SLO, so that a run with none cannot be told from one just above it.
"""

from __future__ import annotations

import asyncio
import collections
import math
import random
import time
from dataclasses import dataclass, field

from nyx.bench.loadgen import percentile
from nyx.bench.mixnet import Mixnet, MixnetShape, mixnet
from nyx.bench.report import Measurement
from nyx.bench.scenarios import RunOptions
from nyx.bench.scenarios.scl_001 import quiet_client_log
from nyx.directory.records import Directory
from nyx.mix.node import MixNode
from nyx.stream.client import Client
from nyx.stream.routes import RouteScheduler
from nyx.stream.shell import NyxStreamReader, NyxStreamWriter
from nyx.transport import Fate

LAYERS = 3
MIXES_PER_LAYER = 100
GATEWAYS = 6
MEAN_DELAY_S = 0.005
RESTART_SHARE_PER_H = 0.10
HOUR_S = 3600.0
LINGER_REAL_S = 30.0  # a directory refresh interval: every client has the document without it
DOWN_REAL_S = 60.0  # process restart, key and replay-table load
MIN_PHASE_S = 0.25
CLIENTS = 24
ROUTES = 5
MESSAGES_PER_S = 120.0
MESSAGE_BYTES = 256
DEADLINE_S = 10.0
SLO_PERCENT = 0.2
SETUP_TIMEOUT_S = 60.0
DIRECTORY_STEP = True  # the main run's restarts leave the directory first (tests turn it off)
CONTRAST = True  # also run the schedule without the directory step, for the notes
LINK_LOSS = 0.0  # extra random loss on every link (tests add it)
DEFAULT_DURATION_S = 60.0
QUICK = (5.0, 1.0)


# -- the application's load: messages echoed on persistent streams (SCL-050 uses it too) -----------


@dataclass(slots=True)
class Message:
    due_s: float  # scheduled send time, from the start of the load
    payload: bytes
    latency_s: float | None = None  # to the echo's last byte; None: no echo
    intact: bool = False


class EchoStream:
    """One client's persistent echo stream and its messages not yet echoed, oldest first."""

    def __init__(self, client: Client, reader: NyxStreamReader, writer: NyxStreamWriter) -> None:
        self.client, self.reader, self.writer = client, reader, writer
        self.waiting: collections.deque[Message] = collections.deque()
        self.error: str | None = None
        self._sent = asyncio.Event()

    async def read_echoes(self, start: float) -> None:
        try:
            while True:
                if not self.waiting:
                    self._sent.clear()
                    await self._sent.wait()
                    continue
                message = self.waiting[0]
                echo = await self.reader.readexactly(len(message.payload))
                self.waiting.popleft()
                message.latency_s = time.perf_counter() - start - message.due_s
                message.intact = echo == message.payload
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the stream broke: what it still waits for is lost
            self.error = type(exc).__name__

    def send(self, message: Message) -> None:
        if self.error is not None:
            return  # lost with the stream
        try:
            self.writer.write(message.payload)
        except Exception as exc:
            self.error = type(exc).__name__
            return
        self.waiting.append(message)
        self._sent.set()


async def open_streams(net: Mixnet, clients: list[Client], size: int,
                       failures: collections.Counter[str]) -> list[EchoStream]:
    """Start each client, open its echo stream and warm it (one echo of `size` bytes)."""

    async def open_one(client: Client) -> EchoStream | None:
        try:
            await client.start()
            reader, writer = await client.open_connection("echo")
            writer.write(bytes(size))
            await reader.readexactly(size)
            return EchoStream(client, reader, writer)
        except Exception as exc:  # counted; the load runs on the streams that opened
            failures[type(exc).__name__] += 1
            return None

    try:
        async with asyncio.timeout(SETUP_TIMEOUT_S):
            opened = await asyncio.gather(*(open_one(c) for c in clients))
    except TimeoutError:
        failures["setup timeout"] += 1
        return []
    return [s for s in opened if s is not None]


def route_schedulers(client: Client) -> list[RouteScheduler]:
    """Every route scheduler (forward and reply) of `client`'s sessions: the client exports only
    the last failover as a gauge, and a replay counts them all."""
    return [s for _, forward, replies in client.route_schedulers() for s in (forward, replies)]


# -- the mixes' side -------------------------------------------------------------------------------


class MixLedger:
    """The mixes' own drops over a stretch of the run: their drop counters and the packets the
    network lost at a stopped mix (sent to or from it), against the packets sent to mixes."""

    def __init__(self, net: Mixnet) -> None:
        self.net = net
        self.mixes = set(net.mixes)
        self.to_mixes = 0
        self.lost_at_stopped = 0
        self._failed_seen = 0
        self._counts0 = self._counts()
        self._fates0 = net.network.fates[Fate.FAILED]
        net.network.add_tap(self._tap)

    def _counts(self) -> collections.Counter[str]:
        total: collections.Counter[str] = collections.Counter()
        for node in self.net.mixes.values():
            total.update(node.drop_counts())
        return total

    def _tap(self, seen: object) -> None:
        dst, fate = seen.dst, seen.fate  # type: ignore[attr-defined]
        to_mix = dst in self.mixes
        if to_mix:
            self.to_mixes += 1
        if fate is Fate.FAILED and (to_mix or seen.src in self.mixes):  # type: ignore[attr-defined]
            self.lost_at_stopped += 1
            self._failed_seen += 1
        elif fate is Fate.FAILED:
            self._failed_seen += 1

    def close(self) -> dict[str, int]:
        self.net.network.remove_tap(self._tap)
        drops = self._counts() - self._counts0
        # Lost on delivery (in flight when the mix stopped): counted by the network, not the tap.
        in_flight = self.net.network.fates[Fate.FAILED] - self._fates0 - self._failed_seen
        result = {f"drop_{reason}": n for reason, n in sorted(drops.items()) if n}
        result["lost_at_stopped_mix"] = self.lost_at_stopped + max(0, in_flight)
        result["sent_to_mixes"] = self.to_mixes
        return result


@dataclass(slots=True)
class RestartLog:
    mix: str
    began_s: float
    ended_s: float | None = None
    replay_kept: bool = True


@dataclass(slots=True)
class Roll:
    """The rolling restart's state: mixes out of the directory, and the directory without them."""

    net: Mixnet
    clients: list[Client]
    directory_step: bool
    out: set[str] = field(default_factory=set)
    logs: list[RestartLog] = field(default_factory=list)

    def publish(self) -> None:
        directory = Directory({n: r for n, r in self.net.directory.nodes.items() if n not in self.out})
        for client in self.clients:
            client.update_directory(directory)

    async def restart(self, mix: str, began_s: float, linger_s: float, down_s: float) -> None:
        node = self.net.mixes[mix]
        log = RestartLog(mix, began_s)
        self.logs.append(log)
        if self.directory_step:
            self.out.add(mix)
            self.publish()
            await asyncio.sleep(linger_s)
        tags_before = _replay_tags(node)
        await node.drain()
        self.net.fail(mix)
        await asyncio.sleep(down_s)
        self.net.restore(mix)
        node.accepting = True  # the restarted process: same keys, replay tables loaded
        log.replay_kept = _replay_tags(node) >= tags_before
        if self.directory_step:
            self.out.discard(mix)
            self.publish()
        log.ended_s = began_s + (linger_s if self.directory_step else 0.0) + down_s


def _replay_tags(node: MixNode) -> int:
    return sum(table.count for table in node.core.replay.filters().values())


# -- one run of the schedule -----------------------------------------------------------------------


@dataclass(slots=True)
class RunFigures:
    messages: list[Message]
    restarts: list[RestartLog]
    mix: dict[str, int]
    streams: int
    stream_errors: collections.Counter[str]
    setup_failures: collections.Counter[str]
    failovers_s: list[float]
    reconfigurations_s: list[float]
    lost_records: int

    @property
    def dropped(self) -> int:
        return sum(1 for m in self.messages if not (m.intact and m.latency_s is not None and m.latency_s <= DEADLINE_S))

    @property
    def drop_percent(self) -> float:
        return 100.0 * self.dropped / len(self.messages) if self.messages else math.nan

    @property
    def mix_drop_percent(self) -> float:
        lost = sum(n for k, n in self.mix.items() if k.startswith("drop_") or k == "lost_at_stopped_mix")
        return 100.0 * lost / self.mix["sent_to_mixes"] if self.mix.get("sent_to_mixes") else math.nan

    def completed(self) -> int:
        return sum(1 for r in self.restarts if r.ended_s is not None)


async def run_schedule(net: Mixnet, options: RunOptions, *, directory_step: bool, seed: int,
                       tick: bool) -> RunFigures:
    rng = random.Random(seed)
    restarts = max(1, round(round(RESTART_SHARE_PER_H * len(net.mixes)) * options.scale))
    compression = HOUR_S / options.duration_s
    cadence_s = options.duration_s / restarts
    linger_s = max(MIN_PHASE_S, LINGER_REAL_S / compression)
    down_s = max(MIN_PHASE_S, DOWN_REAL_S / compression)
    order = rng.sample(sorted(net.mixes), restarts)
    gateways = net.gateway_ids
    clients = [net.client(gateway=gateways[i % len(gateways)], exit=gateways[(i + 1 + i // len(gateways)) % len(gateways)],
                          routes=ROUTES) for i in range(CLIENTS)]
    setup_failures: collections.Counter[str] = collections.Counter()
    streams = await open_streams(net, clients, MESSAGE_BYTES, setup_failures)
    roll = Roll(net, clients, directory_step)
    ledger = MixLedger(net)
    messages: list[Message] = []
    start = time.perf_counter()
    readers = [asyncio.create_task(s.read_echoes(start)) for s in streams]
    restart_tasks: list[asyncio.Task[None]] = []
    try:
        interval = 1.0 / MESSAGES_PER_S
        next_restart, last_tick = 0, 0.0
        index = 0
        while streams:
            due = index * interval
            if due >= options.duration_s:
                break
            now = time.perf_counter() - start
            while next_restart < restarts and next_restart * cadence_s <= max(now, due):
                restart_tasks.append(asyncio.create_task(
                    roll.restart(order[next_restart], next_restart * cadence_s, linger_s, down_s)))
                next_restart += 1
            if due > now:
                await asyncio.sleep(due - now)
            message = Message(due, rng.randbytes(MESSAGE_BYTES))
            messages.append(message)
            streams[rng.randrange(len(streams))].send(message)
            index += 1
            if tick and options.tick is not None and due - last_tick >= 0.25:
                last_tick = due
                options.tick(due)
        # Every restart ends (mixes back, listed); then echoes have DEADLINE_S to come back.
        await asyncio.gather(*restart_tasks, return_exceptions=True)
        until = time.perf_counter() + DEADLINE_S
        while any(s.waiting and s.error is None for s in streams) and time.perf_counter() < until:
            await asyncio.sleep(0.02)
    finally:
        for task in readers + restart_tasks:
            task.cancel()
        await asyncio.gather(*readers, *restart_tasks, return_exceptions=True)
        mix = ledger.close()
    schedulers = [s for c in clients for s in route_schedulers(c)]
    lost_records = sum(r.lost for s in schedulers for r in s.routes.values())
    figures = RunFigures(
        messages=messages, restarts=roll.logs, mix=mix, streams=len(streams),
        stream_errors=collections.Counter(s.error for s in streams if s.error is not None),
        setup_failures=setup_failures,
        failovers_s=[f for s in schedulers for f in s.failovers_s],
        reconfigurations_s=[f for s in schedulers for f in s.reconfigurations_s],
        lost_records=lost_records,
    )
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
    return figures


async def replay(options: RunOptions) -> Measurement:
    with quiet_client_log():
        return await _replay(options)


async def _replay(options: RunOptions) -> Measurement:
    profile = MixnetShape().profile
    if LINK_LOSS:
        profile = type(profile)(latency_s=profile.latency_s, jitter_s=profile.jitter_s, loss=LINK_LOSS)
    shape = MixnetShape(layers=LAYERS, mixes_per_layer=MIXES_PER_LAYER, gateways=GATEWAYS, mean_delay_s=MEAN_DELAY_S,
                        profile=profile)
    async with mixnet(shape, options.seed) as net:
        main = await run_schedule(net, options, directory_step=DIRECTORY_STEP, seed=options.seed, tick=True)
        blind = (await run_schedule(net, options, directory_step=False, seed=options.seed + 1, tick=False)
                 if CONTRAST and DIRECTORY_STEP else None)
    return _measurement(options, main, blind)


def _describe(run: RunFigures) -> str:
    latencies = [m.latency_s for m in run.messages if m.latency_s is not None]
    mix = run.mix
    drop_kinds = ", ".join(f"{k[5:]} {n:,}" for k, n in mix.items() if k.startswith("drop_")) or "none"
    return (
        f"{run.dropped:,} of {len(run.messages):,} messages not echoed intact within {DEADLINE_S:g} s "
        f"({run.drop_percent:.3f}%); the mixes' own drops {run.mix_drop_percent:.3f}% of "
        f"{mix['sent_to_mixes']:,} packets sent to mixes (counters: {drop_kinds}; lost at a stopped mix "
        f"{mix['lost_at_stopped_mix']:,}); echo latency p50 {1000 * percentile(latencies, 50):.0f} ms, "
        f"p99 {1000 * percentile(latencies, 99):.0f} ms, max {1000 * max(latencies, default=math.nan):.0f} ms; "
        f"{run.lost_records:,} records declared lost on routes, {len(run.failovers_s):,} route replacements "
        f"(failover p50 {1000 * percentile(run.failovers_s, 50):.0f} ms, max "
        f"{1000 * max(run.failovers_s, default=math.nan):.0f} ms from the first loss or report)"
    )


def _measurement(options: RunOptions, main: RunFigures, blind: RunFigures | None) -> Measurement:
    full = round(RESTART_SHARE_PER_H * LAYERS * MIXES_PER_LAYER)
    asked = max(1, round(full * options.scale))
    compression = HOUR_S / options.duration_s
    linger_s = max(MIN_PHASE_S, LINGER_REAL_S / compression)
    down_s = max(MIN_PHASE_S, DOWN_REAL_S / compression)
    need = math.ceil(100.0 / SLO_PERCENT)
    value = main.drop_percent
    unresolved = ""
    if len(main.messages) < need and main.dropped == 0:
        unresolved = (f"{len(main.messages):,} messages cannot resolve drop < {SLO_PERCENT:g}%: one lost message in "
                      f"fewer than {need:,} would already exceed it")
    failures = main.setup_failures + main.stream_errors
    notes = [
        f"directory step {'on' if DIRECTORY_STEP else 'OFF (clients are not told)'}: " + _describe(main),
        f"compression: one hour of the rolling restart in {options.duration_s:g} s ({compression:.0f}x): "
        f"{asked} of {LAYERS * MIXES_PER_LAYER} mixes, one every {options.duration_s / asked:.2f} s; each leaves the "
        f"directory, lingers {linger_s:.2f} s ({LINGER_REAL_S:g} s real), drains, is down {down_s:.2f} s "
        f"({DOWN_REAL_S:g} s real), comes back with its keys and replay cache; {main.completed()} completed, "
        f"replay state kept in {sum(r.replay_kept for r in main.restarts)}",
        f"load: {len(main.messages):,} messages of {MESSAGE_BYTES} B at {MESSAGES_PER_S:g}/s over {main.streams} clients "
        f"({ROUTES} routes each), {GATEWAYS} gateways, {LAYERS}x{MIXES_PER_LAYER} mixes with Poisson mean "
        f"{MEAN_DELAY_S * 1000:g} ms" + (f", {LINK_LOSS:.0%} loss on every link" if LINK_LOSS else "")
        + "; set-up and stream failures: "
        + ("; ".join(f"{k}: {n}" for k, n in sorted(failures.items())) or "none"),
    ]
    if blind is not None:
        notes.append("contrast, same schedule WITHOUT the directory step (the mix drains and stops while listed; "
                     "clients find out by loss): " + _describe(blind))
    counts = {
        "messages": len(main.messages), "dropped": main.dropped, "restarts": main.completed(),
        "streams": main.streams, "failovers": len(main.failovers_s), "lost_records": main.lost_records,
        **{f"mix_{k}": n for k, n in main.mix.items()},
    }
    if blind is not None:
        counts.update({"blind_messages": len(blind.messages), "blind_dropped": blind.dropped,
                       "blind_failovers": len(blind.failovers_s), "blind_lost_records": blind.lost_records,
                       **{f"blind_mix_{k}": n for k, n in blind.mix.items()}})
    return Measurement(
        value=value,
        duration_s=options.duration_s,
        offered_rate=float(asked),
        achieved_rate=float(main.completed()),
        full_rate=float(full),
        rate_unit="restarts/h (simulated)",
        detail=(f"end-to-end drop at the application: {main.dropped:,} of {len(main.messages):,} messages not echoed "
                f"byte-exact within {DEADLINE_S:g} s, after the sessions' retransmissions, during a rolling restart; "
                f"the mixes' own drops {main.mix_drop_percent:.3f}%"),
        notes=tuple(notes),
        counts=counts,
        unresolved=unresolved,
    )
