"""SCL-011 Directory再構築: rebuild a directory of 50,000 node entries on 4 shards; <= 15 min.

What a rebuild is here: the directory's servers lost their state (a disk, a bad deploy) and come
back from the last snapshots. The replay builds that situation, then times the way back to a
directory that serves lookups and a fresh signed document that clients accept.

**Precondition (not timed): snapshots taken.** 50,000 x --scale node records as a deployment
would publish them: mixes in 3 layers and 5% gateways (with a 1,216-byte X-Wing stream key),
spread over 7 regions, each with its own ECDSA P-256 TLS identity (the record's fingerprint is the
certificate's SHA-256), Sphinx keys for this epoch and the next, bandwidth weights. They are
placed on 4 shards by consistent hashing of the node id (`ShardMap`, each shard homed in a
region) in a `ShardedIndex`, and each shard's snapshot is taken: its canonical record snapshot
(`ShardedIndex.snapshot`) and its pins (each node's registered certificate and newest statement
time, which the authority needs to check heartbeats and refuse replays), plus the last epoch
issued. The nodes meanwhile prepare what they will send once the directory is back: one signed
heartbeat each, except 2% that died since the snapshot. A sample of nodes (256 x --scale, at
least 16) really listens on 127.0.0.1 with its own certificate over TLS; 1 in 16 of the sample
listens nowhere any more, and one is an impostor answering with another certificate.

**The rebuild (timed, one clock from the first restore to the last check).**

1. batch reload: for each shard, `ShardedIndex.restore` from its snapshot (which refuses records
   the map places elsewhere: a stale or forged snapshot), then one transaction inserting the
   shard's registrations into a fresh SQLite `Store` (the service's own), so the rebuilt
   directory answers lookups;
2. health checks. After a restart every node is unknown until it heartbeats (health is never
   restored from a snapshot: a snapshot cannot say who is alive now). (a) heartbeats: every
   live node's signed heartbeat goes through `Authority.accept` (parse, freshness, the ECDSA
   signature against the pinned certificate, replay check) into its `HealthTracker`; the newest
   statement times are saved in one transaction; (b) probes: the sample is probed for real, a
   TLS connection to the record's address whose certificate must hash to the record's
   fingerprint, retried until the tracker's `probe_failures` (3) in a row take a node down.
   Nodes that did not heartbeat stay unknown and are left out; probed nodes that fail are down;
3. issue: `Authority.issue` builds, canonically encodes and signs the next document (epoch + 1)
   of the up nodes; it is saved to the store;
4. client check: `verify_document` as a client holding the previous epoch would, and the listed
   node ids must be exactly the expected ones (all, less the dead and the failed probes);
5. serving check: 1,000 x --scale (at least 100) random ids looked up through `Store.lookup` on
   their shard must return the snapshot's record.

The value is the rebuild's time in minutes **plus one heartbeat interval (10 s), counted, not
slept**: here the heartbeats wait in a queue when the directory comes back, whereas in a
deployment the directory must wait that long to hear from every live node at least once before
it can tell a dead node from one that has not spoken yet. Counting both the wait and the
processing (which would overlap) errs on the long side. A wrong rebuild (a record lost, a
document listing the wrong nodes, a lookup answering wrongly) makes the value infinite: a fast
rebuild of the wrong directory fails.

Everything runs in one process on one core (4 shard servers would restore their shards in
parallel); setup is not timed. `--duration` has no effect: a rebuild runs until it is done.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import json
import math
import random
import socket
import ssl
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from nyx.bench.report import Measurement
from nyx.bench.scenarios import RunOptions
from nyx.crypto.suites import Suite
from nyx.directory.authority import Authority, AuthoritySettings, Registration
from nyx.directory.document import TrustPolicy, verify_document
from nyx.directory.records import DirectoryError, NodeRecord
from nyx.directory.sharding import ShardedIndex, ShardMap
from nyx.directory.statements import Statement, StatementError, sign_statement
from nyx.directory.store import Store
from nyx.transport.certs import NodeIdentity

NODES = 50_000
SHARDS = {"shard-0": "eu-west", "shard-1": "us-east", "shard-2": "ap-northeast", "shard-3": "eu-central"}
REGIONS = ("eu-west", "eu-central", "us-east", "us-west", "ap-south", "ap-northeast", "sa-east")
LAYERS = 3
GATEWAY_EVERY = 20  # 5% gateways
XWING_PUBLIC_BYTES = 1216
DEAD_SHARE = 0.02  # nodes that died since the snapshot: no heartbeat
PROBED = 256  # nodes probed for real (x --scale, at least MIN_PROBED)
MIN_PROBED = 16
UNREACHABLE_EVERY = 16  # of the probed sample: nothing listens any more
PROBE_CONCURRENCY = 32
PROBE_TIMEOUT_S = 2.0
LOOKUPS = 1_000  # serving check (x --scale, at least MIN_LOOKUPS)
MIN_LOOKUPS = 100
HEARTBEAT_INTERVAL_S = 10.0  # the agents' interval: the wait counted into the value (tests raise it)
LAST_EPOCH = 492_304
SNAPSHOT_AGE_MS = 600_000  # the newest statements the snapshot pins are 10 minutes old
DEFAULT_DURATION_S = 60.0  # for the progress bar only: a rebuild runs until done
QUICK = (5.0, 0.1)



@dataclass(slots=True)
class World:
    """The deployment before the rebuild: nodes, their snapshots, what they will send and serve."""

    records: dict[str, NodeRecord]
    identities: dict[str, NodeIdentity]
    shard_map: ShardMap
    snapshots: dict[str, bytes]  # shard -> ShardedIndex.snapshot
    pins: dict[str, bytes]  # shard -> canonical JSON of {node_id: [certificate b64, last_issued_at_ms]}
    heartbeats: list[bytes]  # one signed heartbeat per live node
    dead: set[str]
    probed: dict[str, str]  # node id -> "listening" | "unreachable" | "impostor"
    lookup_ids: list[str]
    servers: list[asyncio.Server] = field(default_factory=list)


def make_record(i: int, rng: random.Random, fingerprint: str) -> NodeRecord:
    """Node `i` as a deployment publishes it: a mix in one of LAYERS layers, or (one in
    GATEWAY_EVERY) a gateway with an X-Wing stream key; a host in 10/8, a region, Sphinx keys for
    this epoch and the next, a bandwidth weight."""
    gateway = i % GATEWAY_EVERY == 0
    return NodeRecord(
        node_id=node_name(i),
        role="gateway" if gateway else "mix",
        layer=0 if gateway else 1 + i % LAYERS,
        host=f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
        port=rng.randrange(1024, 65536),
        fingerprint=fingerprint,
        sphinx_keys={LAST_EPOCH + 1: rng.randbytes(32), LAST_EPOCH + 2: rng.randbytes(32)},
        region=rng.choice(REGIONS),
        weight=round(rng.uniform(1.0, 1000.0), 3),
        stream_keys={Suite.HYBRID.label: rng.randbytes(XWING_PUBLIC_BYTES)} if gateway else {},
    )


def node_name(i: int) -> str:
    return f"gw-{i:06d}" if i % GATEWAY_EVERY == 0 else f"mix-{i:06d}"


def make_records(count: int, rng: random.Random) -> tuple[dict[str, NodeRecord], dict[str, NodeIdentity]]:
    """`count` nodes, each with its own TLS identity (the record's fingerprint is its certificate's)."""
    records: dict[str, NodeRecord] = {}
    identities: dict[str, NodeIdentity] = {}
    for i in range(count):
        identity = NodeIdentity.generate(node_name(i))
        records[identity.node_id] = make_record(i, rng, identity.fingerprint)
        identities[identity.node_id] = identity
    return records, identities


def take_snapshots(index: ShardedIndex) -> dict[str, bytes]:
    """The precondition's record snapshots, one per shard (a test swaps in a faulty one)."""
    return {shard: index.snapshot(shard) for shard in index.shard_map.shards}


def _pins_snapshot(shard_ids: list[str], identities: dict[str, NodeIdentity], issued_ms: int) -> bytes:
    pins = {node_id: [base64.b64encode(identities[node_id].certificate_der).decode(), issued_ms]
            for node_id in sorted(shard_ids)}
    return json.dumps(pins, sort_keys=True, separators=(",", ":")).encode()


def _server_context(identity: NodeIdentity, directory: Path) -> ssl.SSLContext:
    """A TLS server context presenting `identity` (ssl loads certificates from files only)."""
    cert, key = directory / f"{identity.node_id}.crt", directory / f"{identity.node_id}.key"
    cert.write_bytes(identity.certificate_pem)
    key.write_bytes(identity.private_key_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _serve_tls(context: ssl.SSLContext) -> asyncio.Server:
    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    return await asyncio.start_server(hold, "127.0.0.1", 0, ssl=context)


@contextlib.asynccontextmanager
async def prepared(count: int, seed: int) -> AsyncIterator[World]:
    """The precondition: records, shards, snapshots, the nodes' heartbeats, listeners for probes."""
    rng = random.Random(seed)
    records, identities = make_records(count, rng)
    ids = sorted(records)
    probed_count = min(count, max(MIN_PROBED, round(PROBED * count / NODES)))
    probed_ids = rng.sample(ids, probed_count)
    probed = {node_id: "unreachable" if i % UNREACHABLE_EVERY == UNREACHABLE_EVERY - 1 else "listening"
              for i, node_id in enumerate(probed_ids)}
    probed[probed_ids[0]] = "impostor"
    servers: list[asyncio.Server] = []
    with tempfile.TemporaryDirectory(prefix="nyx-scl011-") as tmp:
        impostor = NodeIdentity.generate("impostor")
        for node_id, kind in probed.items():
            if kind == "unreachable":
                port = _closed_port()
            else:
                server = await _serve_tls(_server_context(impostor if kind == "impostor" else identities[node_id], Path(tmp)))
                servers.append(server)
                port = server.sockets[0].getsockname()[1]
            records[node_id] = dataclasses.replace(records[node_id], host="127.0.0.1", port=port)
        shard_map = ShardMap(SHARDS)
        index = ShardedIndex(shard_map)
        by_shard: dict[str, list[str]] = {shard: [] for shard in shard_map.shards}
        for record in records.values():
            by_shard[index.put(record)].append(record.node_id)
        snapshots = take_snapshots(index)
        pinned_ms = int(time.time() * 1000) - SNAPSHOT_AGE_MS
        pins = {shard: _pins_snapshot(members, identities, pinned_ms) for shard, members in by_shard.items()}
        dead = set(rng.sample(ids, round(DEAD_SHARE * count)))
        now_ms = int(time.time() * 1000)
        heartbeats = [
            sign_statement(Statement("heartbeat", node_id, now_ms + i % 1000), identities[node_id].private_key_pem)
            for i, node_id in enumerate(ids) if node_id not in dead
        ]
        lookup_ids = [rng.choice(ids) for _ in range(max(MIN_LOOKUPS, round(LOOKUPS * count / NODES)))]
        try:
            yield World(records, identities, shard_map, snapshots, pins, heartbeats, dead, probed, lookup_ids, servers)
        finally:
            for server in servers:
                server.close()
            for server in servers:
                await server.wait_closed()


async def probe(record: NodeRecord) -> bool:
    """One health probe: a TLS connection to the record's address whose certificate hashes to the
    record's fingerprint (the node is reachable there, and it is the node the document pins)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # self-signed: the pin is the check
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            reader, writer = await asyncio.open_connection(record.host, record.port, ssl=context)
    except (OSError, TimeoutError, ssl.SSLError):
        return False
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        return der is not None and hashlib.sha256(der).hexdigest() == record.fingerprint
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()


class Clock:
    """Per-step wall time of the rebuild, on one monotonic clock."""

    def __init__(self, tick: Callable[[float], None] | None) -> None:
        self.start = time.perf_counter()
        self.steps: dict[str, float] = {}
        self._mark = self.start
        self._tick = tick

    def step(self, name: str) -> None:
        now = time.perf_counter()
        self.steps[name] = self.steps.get(name, 0.0) + now - self._mark
        self._mark = now
        if self._tick is not None:
            self._tick(now - self.start)

    @property
    def total_s(self) -> float:
        return self._mark - self.start


async def rebuild(world: World, data_dir: Path, clock: Clock) -> tuple[dict[str, int], list[str], dict[str, float]]:
    """The timed rebuild; returns (counts, problems found by the checks, per-shard reload seconds)."""
    problems: list[str] = []
    counts: dict[str, int] = {}
    shard_s: dict[str, float] = {}
    store = Store(data_dir / "directory.sqlite3")
    try:
        # 1. batch reload, shard by shard
        index = ShardedIndex(world.shard_map)
        registrations: dict[str, Registration] = {}
        restored = 0
        for shard in sorted(world.snapshots):
            started = time.perf_counter()
            try:
                held = index.restore(shard, world.snapshots[shard])
            except DirectoryError as exc:
                problems.append(f"shard {shard} not restored: {exc}")
                continue
            restored += held
            pins = json.loads(world.pins[shard])
            if len(pins) != held:
                problems.append(f"shard {shard}: {held:,} records but {len(pins):,} pins")
            entries = []
            for node_id, (certificate_b64, issued_ms) in pins.items():
                record = index.get(node_id)
                if record is None:
                    problems.append(f"{node_id} is pinned on {shard} but its record is not there")
                    continue
                certificate = base64.b64decode(certificate_b64)
                registrations[node_id] = Registration(record, certificate, issued_ms)
                entries.append((shard, registrations[node_id]))
            await store.call(store.save_registrations, entries)
            shard_s[shard] = time.perf_counter() - started
        counts["restored"] = restored
        sizes = await store.call(store.shard_sizes)
        if sizes != {s: n for s, n in index.shard_sizes().items() if n}:
            problems.append(f"store holds {sizes}, the index {index.shard_sizes()}")
        clock.step("batch reload")

        # 2a. health: one signed heartbeat per live node
        authority = Authority(
            Ed25519PrivateKey.generate(), AuthoritySettings(heartbeat_interval_s=HEARTBEAT_INTERVAL_S),
            registrations, LAST_EPOCH,
        )
        refused = 0
        for i, body in enumerate(world.heartbeats):
            try:
                authority.accept(body, time.time(), "heartbeat")
            except StatementError:
                refused += 1
            if i % 2048 == 2047:
                await asyncio.sleep(0)
        touched = [(node_id, r.last_issued_at_ms) for node_id, r in authority.registrations.items()]
        await store.call(store.touch_many, touched)
        counts["heartbeats_accepted"] = len(world.heartbeats) - refused
        counts["heartbeats_refused"] = refused
        clock.step("health: heartbeats")

        # 2b. health: probes of the sample, retried up to the tracker's limit
        gate = asyncio.Semaphore(PROBE_CONCURRENCY)
        probe_failures = authority.health.probe_failures
        outcomes: dict[str, bool] = {}

        async def check(node_id: str) -> None:
            async with gate:
                record = index.get(node_id)
                ok = False
                for _ in range(probe_failures):
                    ok = record is not None and await probe(record)
                    authority.probe(node_id, ok, time.time())
                    if ok:
                        break
                outcomes[node_id] = ok

        async with asyncio.TaskGroup() as group:
            for node_id in world.probed:
                group.create_task(check(node_id))
        counts["probed"] = len(outcomes)
        counts["probes_ok"] = sum(outcomes.values())
        clock.step("health: probes")

        # 3. issue and sign the next document
        now = time.time()
        document = authority.issue(now)
        raw = document.encode()
        await store.call(store.save_document, authority.last_epoch, raw)
        counts["document_bytes"] = len(raw)
        clock.step("issue + sign")

        # 4. a client's check
        policy = TrustPolicy(frozenset({authority.public_key}), 1)
        body = verify_document(raw, policy, time.time(), held_epoch=LAST_EPOCH)
        listed = {record.node_id for record in body.nodes}
        expected = {node_id for node_id in world.records if node_id not in world.dead
                    and world.probed.get(node_id, "listening") == "listening"}
        counts["listed"] = len(listed)
        counts["expected_listed"] = len(expected)
        if listed != expected:
            problems.append(f"the document lists {len(listed):,} nodes, {len(listed - expected)} unexpected and "
                            f"{len(expected - listed)} missing (e.g. {sorted(expected ^ listed)[:3]})")
        clock.step("client verify")

        # 5. the rebuilt store serves lookups
        wrong = await store.call(_check_lookups, store, world, [(world.shard_map.shard_for(i), i) for i in world.lookup_ids])
        counts["lookups_checked"] = len(world.lookup_ids)
        counts["lookups_wrong"] = wrong
        if wrong:
            problems.append(f"{wrong} of {len(world.lookup_ids)} lookups did not return the snapshot's record")
        clock.step("serving check")
    finally:
        store.close()
    return counts, problems, shard_s


def _check_lookups(store: Store, world: World, wanted: list[tuple[str, str]]) -> int:
    wrong = 0
    for shard, node_id in wanted:
        found = store.lookup(shard, node_id)
        if found is None or NodeRecord.from_json(json.loads(found), "lookup") != world.records[node_id]:
            wrong += 1
    return wrong


async def replay(options: RunOptions) -> Measurement:
    count = max(MIN_PROBED, round(NODES * options.scale))
    setup_started = time.perf_counter()
    async with prepared(count, options.seed) as world:
        setup_s = time.perf_counter() - setup_started
        with tempfile.TemporaryDirectory(prefix="nyx-scl011-store-") as tmp:
            clock = Clock(options.tick)
            counts, problems, shard_s = await rebuild(world, Path(tmp), clock)
    measured_s = clock.total_s
    total_s = measured_s + HEARTBEAT_INTERVAL_S
    value = math.inf if problems else total_s / 60
    gateways = sum(1 for r in world.records.values() if r.role == "gateway")
    probed_kinds = {kind: sum(1 for k in world.probed.values() if k == kind) for kind in ("listening", "unreachable", "impostor")}
    steps = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in clock.steps.items())
    shard_sizes = {shard: len(json.loads(world.pins[shard])) for shard in sorted(world.pins)}
    counts |= {
        "nodes": count,
        "gateways": gateways,
        "dead": len(world.dead),
        "probed_unreachable": probed_kinds["unreachable"],
        "probed_impostor": probed_kinds["impostor"],
        "problems": len(problems),
    }
    notes = [
        f"directory_rebuild_duration = {total_s:.2f} s: measured {measured_s:.2f} s ({steps}) + one heartbeat "
        f"interval {HEARTBEAT_INTERVAL_S:g} s counted, not slept",
        "batch reload per shard: " + ", ".join(
            f"{shard} ({SHARDS[shard]}) {shard_sizes[shard]:,} records {shard_s.get(shard, math.nan):.2f} s"
            for shard in sorted(shard_sizes)),
        f"{count:,} nodes ({count - gateways:,} mixes in {LAYERS} layers, {gateways:,} gateways, {len(REGIONS)} regions); "
        f"{counts.get('heartbeats_accepted', 0):,} heartbeats verified ({counts.get('heartbeats_refused', 0)} refused), "
        f"{len(world.dead):,} dead nodes silent; {counts.get('probed', 0)} probed over TLS "
        f"({counts.get('probes_ok', 0)} ok; {probed_kinds['unreachable']} unreachable and {probed_kinds['impostor']} "
        f"impostor expected down); document of {counts.get('listed', 0):,} nodes, "
        f"{counts.get('document_bytes', 0) / 1e6:.1f} MB, verified as a client; "
        f"{counts.get('lookups_checked', 0):,} lookups checked",
        f"setup (not timed): {setup_s:.1f} s for identities, records, snapshots, heartbeats and listeners",
    ]
    if problems:
        notes.insert(0, "REBUILD WRONG (value set to infinity): " + "; ".join(problems[:5]))
    return Measurement(
        value=value,
        duration_s=measured_s,
        offered_rate=float(count),
        # The entries put before the rebuild: all of them, always (setup is not timed, so this replay
        # cannot fall short of its load). Entries the rebuild failed to restore are a FAIL, above.
        achieved_rate=float(len(world.records)),
        full_rate=float(NODES),
        rate_unit="entries",
        detail=(
            f"rebuild of {counts.get('restored', 0):,} of {count:,} entries on {len(SHARDS)} shards from snapshots: batch "
            f"reload into the index and SQLite, heartbeats and TLS probes, next document signed and verified, lookups "
            f"served; plus one heartbeat interval"
        ),
        notes=tuple(notes),
        counts=counts,
    )
