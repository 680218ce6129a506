"""SCL-030 リージョン障害フェイルオーバー: an entire region fails; clients move off it in <= 3 min.

The mixnet of SCL-014 (`nyx.bench.mixnet`, regions eu, us and ap, 90 ms one way between regions,
2 ms inside one), active-active: three layers of 9 mixes (3 per region in each layer) and 6
gateways (2 per region), every region carrying traffic. Clients enter and exit in eu and us:
`DEFAULT_CLIENTS` draw their 5 routes from every region (most of them cross ap), `HOME_CLIENTS`
ask `low_latency` and keep theirs at home (a control group the failure should not touch). Each
holds one `echo` stream and writes `CHUNK_BYTES` every `CHUNK_EVERY_S` (awaiting `drain()`),
reading the echo back as it comes.

**The failure.** At `FAIL_AT_S`, every mix and gateway of ap stops (`Mixnet.fail_region`: every
packet to or from them is lost; no node announces it). Two mechanisms move clients off it:
- the client's own: a route with 3 records lost in a row is suspected, its records in flight
  are resent on the others, and a replacement avoids its mixes (nyx.stream.routes). This sees the
  forward routes only: a reply route's SURBs carry no acknowledgement the client can pin on one
  route, so a broken reply route is seen only by loop cover or the directory;
- the directory's: an authority `HealthTracker` (the real one, `heartbeat_interval_s` 10 s,
  down after 3 missed) fed by a node agent per node heartbeating every third of the interval,
  each at its own phase, as `nyx.directory.agent` does, and silent once its node failed. When
  the set of up nodes changes the authority issues a document without the silent nodes at once;
  each client adopts the newest document at its refresh, every `REFRESH_S` (10 s, `Client`'s
  `directory_refresh_s` default) at its own phase, through `Client.update_directory`, which
  suspects every route through a node the document no longer lists.

**Affected clients** are those with a mix of ap on an active forward or reply route at the
failure. **A client's failover completes** at the arrival of the first echo of a chunk written
after the start of its last stretch with no ap mix on any active forward or reply route (sampled
every `SAMPLE_S`): from then on it has traffic on routes outside the failed region, end to end.
**The value** is the last completion after the failure, in minutes ("last event"). A client still
with a route through ap at the end, though it adopted a directory without ap at least `RESOLVE_S`
before, would never move: the value is infinite. One that had not adopted it
by then, or whose routes left ap too late to carry a chunk before the writers stopped, leaves
the run unresolved (INCONCLUSIVE: the run was too short to see it).

**No accepted byte lost**: after the writers stop, every client's stream must echo every byte it
accepted, byte-exact and in order, within `GRACE_S`; a byte lost or altered on a surviving
client's stream makes the value infinite.

**Time.** The directory's timing dominates: up to 30 s of silence plus a heartbeat phase before
the document changes, then up to 10 s until a client's refresh. A full run (60 s) sleeps them
as configured. A shorter run compresses the directory's intervals and the failure time by
k = duration / 60 (the notes say so) and scales the waits they caused back by 1/k: a client
that completed after adopting the document at `a` reports `(a - fail) / k + (done - a)`, its own
reaction measured as is; one that completed before adopting reports `done - fail`.

**Load**: the streams asked (`DEFAULT_CLIENTS + HOME_CLIENTS`) against those opened and
running when the region failed; fewer than 95% is INCONCLUSIVE. The load model ("entire region
fail") gives no rate.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import math
import random
import time
from dataclasses import dataclass, field

from nyx.bench.loadgen import open_all
from nyx.bench.mixnet import Mixnet, MixnetShape, mixnet
from nyx.bench.report import Measurement
from nyx.bench.scenarios import RunOptions
from nyx.bench.scenarios.scl_001 import MEAN_DELAY_S, quiet_client_log
from nyx.bench.scenarios.scl_014 import CROSS_REGION_S, REGIONS, low_latency_client, route_nodes
from nyx.directory.authority import AuthoritySettings
from nyx.directory.health import HealthTracker
from nyx.mix.directory import Directory
from nyx.stream.client import Client
from nyx.stream.shell import NyxStreamReader, NyxStreamWriter

FAILED_REGION = "ap"
LAYERS = 3
MIXES_PER_LAYER = 9  # 3 per region
GATEWAYS = 6  # 2 per region
DEFAULT_CLIENTS = 8
HOME_CLIENTS = 2
CHUNK_BYTES = 256
CHUNK_EVERY_S = 0.1
HEARTBEAT_S = AuthoritySettings().heartbeat_interval_s  # 10 s; agents send 3 per interval, down after 3 missed
REFRESH_S = inspect.signature(Client).parameters["directory_refresh_s"].default  # the client's refresh, 10 s
FAIL_AT_S = 10.0
AUTHORITY_TICK_S = 0.25
SAMPLE_S = 0.05
RESOLVE_S = 2.0
GRACE_S = 15.0
SLO_S = 180.0
SETUP_TIMEOUT_S = 60.0  # for every stream to open (those that did not are a shortfall)
OPENING_AT_ONCE = 16
DEFAULT_DURATION_S = 60.0
QUICK = (12.0, 1.0)


@dataclass
class FailoverStream:
    """One client's echo stream: what it wrote, what came back, and its route history."""

    client: Client
    low_latency: bool
    reader: NyxStreamReader | None = None
    writer: NyxStreamWriter | None = None
    sent: bytearray = field(default_factory=bytearray)
    written_at: list[float] = field(default_factory=list)  # per chunk
    received: bytearray = field(default_factory=bytearray)
    echoed_at: list[float] = field(default_factory=list)  # per chunk, when its last byte came back
    affected: bool = False
    clean_since: float | None = None  # start of the current stretch with no failed-region mix
    adopted_at: float | None = None  # when it took a document without the failed region
    error: str = ""

    def completed_at(self) -> float | None:
        """The first echo of a chunk written since its routes left the failed region."""
        if self.clean_since is None:
            return None
        for written, echoed in zip(self.written_at, self.echoed_at, strict=False):
            if written >= self.clean_since:
                return echoed
        return None


class DirectoryModel:
    """The authority's view (a real `HealthTracker` fed by node agents) and the documents it issues."""

    def __init__(self, net: Mixnet, k: float, rng: random.Random, now: float) -> None:
        self.net, self.k = net, k
        self.tracker = HealthTracker(heartbeat_interval_s=HEARTBEAT_S * k)
        self.phases = {node: rng.random() for node in net.directory.nodes}
        self.document = net.directory
        self.issued: list[tuple[float, int]] = []  # (when, nodes listed)
        for node in net.directory.nodes:
            self.tracker.heartbeat(node, now)
        self._last_beat = now

    def tick(self, now: float) -> None:
        """Heartbeats from the agents of live nodes since the last tick, then a document if the
        set of up nodes changed."""
        every = self.tracker.heartbeat_interval_s / 3
        failed = self.net.network.model.failed_nodes
        for node, phase in self.phases.items():
            if node in failed:
                continue
            # the agent's beats fall at (n + phase) * every; send the latest one since the last tick
            n = math.floor(now / every - phase)
            beat = (n + phase) * every
            if beat > self._last_beat:
                self.tracker.heartbeat(node, beat)
        self._last_beat = now
        up = self.tracker.up(now)
        if up != set(self.document.nodes):
            self.document = Directory.of(r for n, r in self.net.directory.nodes.items() if n in up)
            self.issued.append((now, len(up)))


async def replay(options: RunOptions) -> Measurement:
    rng = random.Random(options.seed)
    k = min(1.0, options.duration_s / DEFAULT_DURATION_S)
    fail_at = FAIL_AT_S * k
    shape = MixnetShape(layers=LAYERS, mixes_per_layer=MIXES_PER_LAYER, gateways=GATEWAYS, mean_delay_s=MEAN_DELAY_S,
                        regions=REGIONS, cross_region_s=CROSS_REGION_S)
    setup_failures: collections.Counter[str] = collections.Counter()

    with quiet_client_log():
        async with mixnet(shape, options.seed) as net:
            ends = [g for g in net.gateway_ids if net.regions[g] != FAILED_REGION]
            streams: list[FailoverStream] = []
            for i in range(DEFAULT_CLIENTS + HOME_CLIENTS):
                entry = ends[i % len(ends)]
                if i < DEFAULT_CLIENTS:
                    exit_id = ends[(i + 1 + i // len(ends)) % len(ends)]
                    streams.append(FailoverStream(net.client(gateway=entry, exit=exit_id), False))
                else:
                    home = [g for g in ends if net.regions[g] == net.regions[entry] and g != entry]
                    streams.append(FailoverStream(low_latency_client(net, entry, home[0]), True))

            async def open_one(stream: FailoverStream) -> None:
                await stream.client.start()
                stream.reader, stream.writer = await stream.client.open_connection("echo")
                stream.writer.write(b"w" * CHUNK_BYTES)  # warm-up: SURBs in place, windows open
                await stream.reader.readexactly(CHUNK_BYTES)

            live, setup_s = await open_all(streams, open_one, setup_failures, OPENING_AT_ONCE, SETUP_TIMEOUT_S)
            start = time.perf_counter()

            def clock() -> float:
                return time.perf_counter() - start

            directory = DirectoryModel(net, k, rng, clock())
            refresh_phase = {id(s): rng.random() for s in live}
            failed_nodes: set[str] = set()
            failed_at: float | None = None

            async def write(stream: FailoverStream) -> None:
                assert stream.writer is not None
                due = 0.0
                while due < options.duration_s:
                    now = clock()
                    if due > now:
                        await asyncio.sleep(due - now)
                    chunk = rng.randbytes(CHUNK_BYTES)
                    stream.written_at.append(clock())
                    stream.sent += chunk
                    stream.writer.write(chunk)
                    await stream.writer.drain()
                    due += CHUNK_EVERY_S

            async def read(stream: FailoverStream) -> None:
                assert stream.reader is not None
                while True:
                    data = await stream.reader.read(1 << 16)
                    if not data:
                        return
                    stream.received += data
                    now = clock()
                    while len(stream.echoed_at) < len(stream.received) // CHUNK_BYTES:
                        stream.echoed_at.append(now)

            async def watch() -> None:
                """The failure, the authority, the clients' refreshes, and each client's routes."""
                nonlocal failed_at
                next_authority = 0.0
                refresh_every = REFRESH_S * k
                last_refresh = {id(s): -math.inf for s in live}
                while True:
                    now = clock()
                    if failed_at is None and now >= fail_at:
                        for stream in live:
                            stream.affected = bool(route_nodes(stream.client) & regional)
                        failed_nodes.update(net.fail_region(FAILED_REGION))
                        failed_at = now
                    if now >= next_authority:
                        directory.tick(now)
                        next_authority = now + AUTHORITY_TICK_S * k
                    for stream in live:
                        phase = refresh_phase[id(stream)] * refresh_every
                        due = math.floor((now - phase) / refresh_every) * refresh_every + phase
                        if due > last_refresh[id(stream)] and due >= 0:
                            last_refresh[id(stream)] = due
                            if stream.client.directory is not directory.document:
                                stream.client.update_directory(directory.document)
                                if stream.adopted_at is None and failed_nodes and not (
                                        failed_nodes & directory.document.nodes.keys()):
                                    stream.adopted_at = now
                        if failed_at is not None:
                            dirty = bool(route_nodes(stream.client) & failed_nodes)
                            if dirty:
                                stream.clean_since = None
                            elif stream.clean_since is None:
                                stream.clean_since = now
                    await asyncio.sleep(SAMPLE_S)

            regional = {n for n, r in net.regions.items() if r == FAILED_REGION}
            readers = [asyncio.create_task(read(s)) for s in live]
            writers = [asyncio.create_task(write(s)) for s in live]
            watcher = asyncio.create_task(watch())
            try:
                last_tick = 0.0
                while clock() < options.duration_s:
                    await asyncio.sleep(0.25)
                    if options.tick is not None and clock() - last_tick >= 1.0:
                        last_tick = clock()
                        options.tick(last_tick)
                await asyncio.wait(writers, timeout=GRACE_S)
                grace_until = time.perf_counter() + GRACE_S
                while (any(len(s.received) < len(s.sent) for s in live) and time.perf_counter() < grace_until
                       and not all(r.done() for r in readers)):
                    await asyncio.sleep(0.05)
            finally:
                end = clock()
                watcher.cancel()
                for task in (*readers, *writers):
                    task.cancel()
                results = await asyncio.gather(watcher, *readers, *writers, return_exceptions=True)
            for stream, outcome in zip(live + live, results[1:], strict=True):
                if isinstance(outcome, Exception) and not isinstance(outcome, asyncio.CancelledError):
                    stream.error = stream.error or f"{type(outcome).__name__}: {outcome}"
            failovers = [f for s in live if (f := s.client.metric_values().get("mix_failover_duration")) is not None]
            resent = sum(s.client.records_resent for s in live)
            await asyncio.gather(*(s.client.close() for s in streams), return_exceptions=True)

    lost = [s for s in live if bytes(s.received) != bytes(s.sent)]
    affected = [s for s in live if s.affected]
    per_client: list[float] = []
    reactions: list[float] = []  # adoption of the document -> completion, measured as is
    never = unresolved = 0
    for stream in affected:
        done = stream.completed_at()
        assert failed_at is not None
        if done is None:
            if stream.clean_since is None and stream.adopted_at is not None and end - stream.adopted_at >= RESOLVE_S:
                never += 1
            else:
                unresolved += 1
            continue
        if stream.adopted_at is not None and stream.adopted_at <= done:
            per_client.append((stream.adopted_at - failed_at) / k + (done - stream.adopted_at))
            reactions.append(done - stream.adopted_at)
        else:
            per_client.append(done - failed_at)
    if lost or never:
        value_min = math.inf
    elif unresolved or not affected:
        value_min = max(per_client, default=math.nan) / 60
    else:
        value_min = max(per_client) / 60
    why_unresolved = ""
    if unresolved and not (lost or never):
        why_unresolved = (f"{unresolved} affected client(s) had neither left {FAILED_REGION} nor adopted a directory "
                          f"without it {RESOLVE_S:g} s before the run ended: the run was too short to see them move")
    elif not affected and not lost:
        why_unresolved = f"no client had a route through {FAILED_REGION} when it failed: nothing to fail over"
    docs = ", ".join(f"{(t - (failed_at or 0)) / k:.1f} s after the failure ({n} nodes)" for t, n in directory.issued)
    per_text = ", ".join(f"{x:.1f}" for x in sorted(per_client)) or "none"
    compressed = (f"directory intervals and the failure time compressed by k = {k:.3f} (heartbeats every "
                  f"{HEARTBEAT_S * k:.2f} s, refreshes every {REFRESH_S * k:.2f} s): waits for them scaled back by 1/k"
                  if k < 1 else f"directory as configured: heartbeats every {HEARTBEAT_S:g} s (down after 3 missed), "
                  f"client refresh every {REFRESH_S:g} s")
    bytes_text = (f"{len(lost)} stream(s) lost or altered accepted bytes: "
                  + "; ".join(f"{s.client.client_id}: {len(s.received):,} of {len(s.sent):,} B back"
                              f"{' (' + s.error + ')' if s.error else ''}" for s in lost)
                  if lost else "every accepted byte came back byte-exact on every stream")
    return Measurement(
        value=value_min,
        duration_s=options.duration_s,
        offered_rate=float(len(streams)),
        achieved_rate=float(len(live)),
        full_rate=float(len(streams)),
        rate_unit="streams",
        detail=(
            f"last of {len(affected)} affected clients to have traffic on routes outside {FAILED_REGION} after every "
            f"mix and gateway of {FAILED_REGION} failed; {len(live)} streams (entry and exit in eu/us), "
            f"{LAYERS}x{MIXES_PER_LAYER} mixes (3 per region a layer), {GATEWAYS} gateways"
        ),
        notes=(
            f"per affected client, s after the failure: {per_text}; {never} never left it, {unresolved} unresolved",
            f"{len(reactions)} completed after adopting the document, {len(per_client) - len(reactions)} before "
            f"(on their own suspicion); adoption to completion: "
            + (f"max {max(reactions):.2f} s, mean {sum(reactions) / len(reactions):.2f} s" if reactions else "none"),
            f"documents without the silent nodes issued {docs or 'never'}",
            compressed,
            bytes_text,
            "clients' own figures: mix_failover_duration (last, per client) "
            + (", ".join(f"{f:.2f} s" for f in sorted(failovers)) or "none")
            + f"; {resent:,} records resent at once off suspected routes",
            f"affected: {len(affected)} of {len(live)}; of the {HOME_CLIENTS} low-latency clients "
            f"{sum(1 for s in live if s.low_latency and s.affected)} (their region has {MIXES_PER_LAYER // 3} mixes a "
            "layer for 5 disjoint routes: the route builder fills the rest from other regions)",
            f"set-up (not measured): {len(live)} of {len(streams)} streams opened in {setup_s:.1f} s; failures: "
            + ("; ".join(f"{a}: {b}" for a, b in sorted(setup_failures.items())) or "none"),
            "the failed region's own clients (entry or exit in it) lose their session with their gateway and are "
            "not in the value: a client's entry is its identity to the network, and moving it is a new client",
        ),
        counts={
            "streams": len(live),
            "affected": len(affected),
            "completed": len(per_client),
            "never": never,
            "unresolved": unresolved,
            "lost_streams": len(lost),
            "records_resent": resent,
            "documents": len(directory.issued),
        },
        unresolved=why_unresolved,
    )
