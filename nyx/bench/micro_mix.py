"""Mix section of `python -m nyx.bench micro`: per-hop processing and packet creation.

Per-hop figures are `MixCore.process` on fresh packets (MAC, replay check, header and Lioness
body), judged against sphinxmix 0.0.7 (PyPI, default parameters: P-224, AES-128, 1,024-byte body)
processing its own packets in the same run; the goal is at least 3x. Both of our packet formats
are timed, so the choice recorded in docs/protocol.md can be re-checked on any machine. A second
hop record sits beside one X25519 exchange, the floor no Sphinx hop can go below. Creation is
timed for 3 and 5 hops beside sphinxmix's `create_forward_message` on the same number of hops.

A mix node's forwarding rate is timed end to end: a sender pushes fresh packets to a `MixNode`
(zero delay, so each still passes the delay heap and its timer) which forwards them to a sink,
over `SimTransport` and over `QuicTransport` (aioquic, asyncio loop, all three endpoints in this
one process and core, so the QUIC figure is a lower bound). The reference is the same topology
with a relay that forwards without Sphinx processing: the ratio is what the mix layer costs on
top of moving the packets.

A node process's forwarding rate is timed per QUIC backend and event loop (aioquic/qh3 x
asyncio/uvloop, as installed): `python -m nyx.mix` runs in a child process on that configuration
(zero mean delay, no loop cover, its keys copied from one clean stop so every run reuses one pool
of packets built beforehand on both cores), and this process is the load on the same backend,
on uvloop when installed: it keeps at most IN_FLIGHT packets between it and the node and counts
what the node forwards back to it. The node then runs at its own pace on one core while the load
takes part of the other (both share this machine). The reference is the crypto floor, one hop of
`MixCore.process` on one core, timed again right after each run: the ratio is the share of a core's Sphinx capacity the node
delivers over the network.

sphinxmix is a bench-only dependency (`pip install 'nyx[bench]'`); without it the records that
need it are skipped with a printed note.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from nyx.bench.timing import MicroRecord, ops_per_s
from nyx.mix.directory import Directory, NodeRecord
from nyx.mix import CLASSIC_FORMAT, KEM_FORMAT, Forward, Hop, KeyRing, MixCore, PacketFormat, create_packet
from nyx.mix.node import MixNode
from nyx.mix.replay import ReplayCache
from nyx.transport import LinkProfile, SimNetwork, Transport
from nyx.transport.certs import NodeIdentity
from nyx.transport.quic import QuicTransport

SPHINXMIX = "sphinxmix 0.0.7"
_POOL = 400  # fresh packets per format; the replay cache is reset when the pool wraps


def _hop_operation(fmt: PacketFormat) -> Callable[[], object]:
    """One call = one hop processed by a mix, on a packet that mix has not seen."""
    key = X25519PrivateKey.generate()
    public = key.public_key().public_bytes_raw()
    route = [Hop("mix-a", public), Hop("mix-b", public), Hop("mix-c", public)]
    pool = [create_packet(route, "svc", bytes(200), epoch=0, fmt=fmt)[1] for _ in range(_POOL)]
    core = MixCore(KeyRing.single(key), replay_capacity=_POOL, packet_format=fmt)
    packets = itertools.cycle(enumerate(pool))

    def operation() -> object:
        index, packet = next(packets)
        if index == 0:
            core.replay = ReplayCache(_POOL)
        event = core.process(packet, 0.0)
        if not isinstance(event, Forward):
            raise AssertionError(f"benchmark packet was not forwarded: {event}")
        return event

    return operation


def _sphinxmix() -> Any | None:
    try:
        from sphinxmix import SphinxClient, SphinxNode, SphinxParams
    except ImportError:
        print(f"micro mix: {SPHINXMIX} is not installed (pip install 'nyx[bench]'); skipping its records", file=sys.stderr)
        return None
    return SphinxParams, SphinxClient, SphinxNode


def _sphinxmix_operations(modules: Any, hops: int) -> tuple[Callable[[], object], Callable[[], object]]:
    """(process one hop, create one packet of `hops` hops) with sphinxmix's defaults."""
    params_module, client, node = modules
    params = params_module.SphinxParams()
    secret = params.group.gensecret()
    public = params.group.expon(params.group.g, [secret])
    route = [client.Nenc(i) for i in range(hops)]
    keys = [public] * hops
    header, body = client.create_forward_message(params, route, keys, b"svc", bytes(200))
    return (
        lambda: node.sphinx_process(params, secret, header, body),
        lambda: client.create_forward_message(params, route, keys, b"svc", bytes(200)),
    )


def _create_operation(hops: int) -> Callable[[], object]:
    route = [Hop(f"mix-{i}", X25519PrivateKey.generate().public_key().public_bytes_raw()) for i in range(hops)]
    return lambda: create_packet(route, "svc", bytes(200), epoch=0)


Endpoints = Callable[[], Awaitable[tuple[Transport, Transport, Transport]]]


async def _forwarding_rate(endpoints: Endpoints, packets: list[bytes], key: X25519PrivateKey, sphinx: bool) -> float:
    """Packets/s from the first send until the sink has them all (or progress stops for 2 s)."""
    sender, middle, sink = await endpoints()
    arrived = [0]
    sink.set_handler(lambda peer, packet: arrived.__setitem__(0, arrived[0] + 1))
    node = MixNode(MixCore(KeyRing.single(key), replay_capacity=len(packets)), middle)
    task = asyncio.ensure_future(node.run()) if sphinx else None
    if not sphinx:
        middle.set_handler(lambda peer, packet: middle.send("sink", packet))
    try:
        await sender.connect("mix")
        await middle.connect("sink")
        start = time.perf_counter()
        for packet in packets:
            await sender.send_wait("mix", packet)
        last, last_change = 0, time.perf_counter()
        while arrived[0] < len(packets) and time.perf_counter() - last_change < 2.0:
            await asyncio.sleep(0.002)
            if arrived[0] != last:
                last, last_change = arrived[0], time.perf_counter()
        elapsed = (last_change if arrived[0] < len(packets) else time.perf_counter()) - start
        if arrived[0] < len(packets):
            print(f"micro mix: only {arrived[0]} of {len(packets)} packets reached the sink ({type(middle).__name__})")
        return arrived[0] / elapsed
    finally:
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        for transport in (sender, middle, sink):
            await transport.close()


async def _sim_endpoints() -> tuple[Transport, Transport, Transport]:
    network = SimNetwork(LinkProfile(latency_s=0.0005))
    ends = tuple(network.transport(name) for name in ("client", "mix", "sink"))
    for end in ends:
        await end.listen()
    return ends  # type: ignore[return-value]


async def _quic_endpoints() -> tuple[Transport, Transport, Transport]:
    ends = [QuicTransport(name, NodeIdentity.generate(name), queue_packets=1024) for name in ("client", "mix", "sink")]
    for end in ends:
        await end.listen()
    ends[0].add_peer("mix", ends[1].address)
    ends[1].add_peer("sink", ends[2].address)
    return ends[0], ends[1], ends[2]


def _node_records(budget_s: float) -> list[MicroRecord]:
    key = X25519PrivateKey.generate()
    public = key.public_key().public_bytes_raw()
    count = max(300, int(budget_s * 4000))
    route = [Hop("mix", public), Hop("sink", public)]
    packets = [create_packet(route, "svc", bytes(200), epoch=0)[1] for _ in range(count)]
    logging.getLogger("nyx.transport").setLevel(logging.WARNING)
    out = []
    for name, endpoints in (("SimTransport", _sim_endpoints), ("QuicTransport", _quic_endpoints)):
        rates = [asyncio.run(_forwarding_rate(endpoints, packets, key, sphinx)) for sphinx in (True, False)]
        out.append(MicroRecord(f"mix node forward/s, {name}", rates[0], f"plain relay forward/s, {name}", rates[1]))
    return out


def records(budget_s: float) -> list[MicroRecord]:
    """Hops/s for both formats beside sphinxmix and the X25519 floor; packets/s created; a node's
    forwarding rate over SimTransport and QuicTransport beside a plain relay; a `python -m nyx.mix`
    process's forwarding rate for each backend x loop beside the crypto floor."""
    modules = _sphinxmix()
    out: list[MicroRecord] = []
    kem_hops = ops_per_s(_hop_operation(KEM_FORMAT), budget_s)
    classic_hops = ops_per_s(_hop_operation(CLASSIC_FORMAT), budget_s)
    peer = X25519PublicKey.from_public_bytes(X25519PrivateKey.generate().public_key().public_bytes_raw())
    key = X25519PrivateKey.generate()
    floor = ops_per_s(lambda: key.exchange(peer), budget_s)
    if modules is not None:
        sphinx_hop, _ = _sphinxmix_operations(modules, 3)
        reference = ops_per_s(sphinx_hop, budget_s)
        out.append(MicroRecord("mix hop/s, kem format (default)", kem_hops, f"{SPHINXMIX} hop/s (P-224)", reference))
        out.append(
            MicroRecord("mix hop/s, classic Sphinx format", classic_hops, f"{SPHINXMIX} hop/s (P-224)", reference)
        )
    out.append(MicroRecord("mix hop/s, kem format (default)", kem_hops, "X25519 exchange/s (floor)", floor))
    for hops in (3, 5):
        created = ops_per_s(_create_operation(hops), budget_s)
        if modules is not None:
            _, sphinx_create = _sphinxmix_operations(modules, hops)
            out.append(
                MicroRecord(f"mix create/s, {hops} hops", created, f"{SPHINXMIX} create/s, {hops} hops",
                            ops_per_s(sphinx_create, budget_s))
            )
        else:
            reference_name = f"X25519 exchange/s / {2 * hops}"
            out.append(MicroRecord(f"mix create/s, {hops} hops", created, reference_name, floor / (2 * hops)))
    out.extend(_node_records(budget_s))
    for (backend, loop), run in node_process_runs(window_s=max(1.0, min(3.0, budget_s * 6))).items():
        out.append(MicroRecord(f"mix node process forward/s, {backend} {loop}", run.forward_pps,
                               "mix hop/s, kem format (floor, same minute)", run.floor_hops))
        if run.node_cpu > 0:  # what one core of the node's process does, busy or not
            out.append(MicroRecord(f"mix node process forward per CPU-s, {backend} {loop}",
                                   run.forward_pps / run.node_cpu, "mix hop/s, kem format (floor, same minute)",
                                   run.floor_hops))
    return out


# -- a node in its own process -------------------------------------------------------------------
#
# `python -m nyx.mix` runs in a child process (its own interpreter, loop and core) with zero mean
# delay and no loop cover; this process is the load: one QuicTransport ("load") that sends fresh
# two-hop packets (mix, then load) as fast as the link takes them and counts what the node forwards
# back. The load runs on the fastest configuration installed (qh3 on uvloop), so that it is not
# the bottleneck; on a 2-core machine it still takes the other core. The reference is the crypto
# floor: `MixCore.process` alone on one core, measured in the same run.

LOAD_ID = "load"
IN_FLIGHT = 256
NODE_ID = "mix"


#: The programs whose forwarding is timed: a mix, and a gateway's entry role (no entry delay by default).
PROGRAMS = {
    "mix": ["-m", "nyx.mix", "--loop-rate", "0", "--mean-delay", "0"],
    "gateway": ["-m", "nyx.stream", "gateway"],
}


def _node_command(data_dir: Path, backend: str, loop: str, directory: Path | None, program: str = "mix") -> list[str]:
    command = [sys.executable, *PROGRAMS[program], "--node-id", NODE_ID, "--data-dir", str(data_dir),
               "--metrics-port", "-1", "--log-level", "WARNING", "--backend", backend, "--loop", loop]
    if directory is not None:
        command += ["--directory", str(directory)]
    return command


def _node_env() -> dict[str, str]:
    root = str(Path(__file__).resolve().parents[2])
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, (root, os.environ.get("PYTHONPATH")))))


async def _start_node(command: list[str]) -> tuple[asyncio.subprocess.Process, NodeRecord]:
    proc = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, env=_node_env()
    )
    assert proc.stdout is not None
    async with asyncio.timeout(30):
        line = b" "
        while line and not line.startswith(b"{"):  # the record is the first JSON line
            line = await proc.stdout.readline()
    if not line:
        raise RuntimeError(f"micro mix: the node exited before printing its record: {' '.join(command)}")
    return proc, NodeRecord.from_json(json.loads(line))


async def _stop_node(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
    try:
        async with asyncio.timeout(20):
            await proc.wait()
    except TimeoutError:
        proc.kill()
        await proc.wait()


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of process `pid` (Linux /proc; 0.0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _create_packets(args: tuple[bytes, int, int]) -> list[bytes]:
    key, epoch, count = args
    route = [Hop(NODE_ID, key), Hop(LOAD_ID, key)]
    return [create_packet(route, "svc", bytes(200), epoch=epoch)[1] for _ in range(count)]


@dataclass(slots=True)
class NodeRun:
    """What one node process did under load: forwarded packets/s in the window, and the CPU
    share its process and the load's used then (1.0 = one core)."""

    forward_pps: float
    node_cpu: float
    load_cpu: float
    sent: int
    forwarded: int
    floor_hops: float = 0.0  # MixCore.process hops/s on one core, timed right after the run


async def _load_node(
    clean_dir: Path, workdir: Path, backend: str, loop: str, packets: list[bytes], identity: NodeIdentity,
    window_s: float, load_backend: str, program: str = "mix",
) -> NodeRun:
    data_dir = workdir / f"{backend}-{loop}"
    shutil.rmtree(data_dir, ignore_errors=True)
    shutil.copytree(clean_dir, data_dir)  # the same keys, a clean stop's marker: a clean restart
    arrived, sent, lost = [0], [0], [0]
    room = asyncio.Event()

    def on_packet(peer: str, packet: bytes) -> None:
        arrived[0] += 1
        if sent[0] - arrived[0] - lost[0] < IN_FLIGHT // 2:
            room.set()

    async with QuicTransport(LOAD_ID, identity, backend=load_backend, queue_packets=1024) as load:
        load.set_handler(on_packet)
        me = load.address
        directory = workdir / f"directory-{backend}-{loop}.json"
        Directory.of([NodeRecord(LOAD_ID, "endpoint", 0, me.host, me.port, me.fingerprint)]).save(directory)
        proc, record = await _start_node(_node_command(data_dir, backend, loop, directory, program))
        try:
            load.add_peer(NODE_ID, record.address())
            await load.connect(NODE_ID)

            async def send_all() -> None:
                # Closed loop: at most IN_FLIGHT packets between us and the sink, so the node runs
                # at its own pace instead of being flooded until its socket buffer overflows (an
                # overloaded node loses ACKs too and its outbound link collapses). Packets that
                # never arrive are written off after 0.1 s without arrivals.
                for packet in packets:
                    while sent[0] - arrived[0] - lost[0] >= IN_FLIGHT:
                        room.clear()
                        try:
                            async with asyncio.timeout(0.1):
                                await room.wait()
                        except TimeoutError:
                            lost[0] = sent[0] - arrived[0]
                    await load.send_wait(NODE_ID, packet)
                    sent[0] += 1

            async with asyncio.TaskGroup() as tg:
                sender = tg.create_task(send_all())
                warm = min(len(packets) // 10, 2000)
                async with asyncio.timeout(30):
                    while arrived[0] < warm:
                        await asyncio.sleep(0.005)
                start, start_count = time.perf_counter(), arrived[0]
                cpu_node, cpu_load = _cpu_s(proc.pid), time.process_time()
                last, last_change = arrived[0], start
                while time.perf_counter() - start < window_s:
                    await asyncio.sleep(0.01)
                    if arrived[0] != last:
                        last, last_change = arrived[0], time.perf_counter()
                    elif sender.done() and time.perf_counter() - last_change > 0.3:
                        break
                elapsed = last_change - start
                node_cpu = (_cpu_s(proc.pid) - cpu_node) / elapsed
                load_cpu = (time.process_time() - cpu_load) / elapsed
                sender.cancel()
            if sender.done() and not sender.cancelled() and elapsed < window_s / 2:
                print(f"micro mix: the packet pool ran out after {elapsed:.2f} s ({backend}, {loop})", file=sys.stderr)
            return NodeRun((last - start_count) / elapsed, node_cpu, load_cpu, sent[0], arrived[0])
        finally:
            await _stop_node(proc)


def _loop_factory(loop: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if loop == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return None


def node_configurations() -> list[tuple[str, str]]:
    """Every installed (backend, loop), baseline first."""
    from nyx.transport.backends import available

    backends = ["aioquic"] + (["qh3"] if available("qh3") else [])
    loops = ["asyncio"] + (["uvloop"] if available("uvloop") else [])
    return [(backend, loop) for backend in backends for loop in loops]


def node_process_runs(
    window_s: float = 2.0, pool: int = 40_000, configurations: list[tuple[str, str]] | None = None,
    program: str = "mix",
) -> dict[tuple[str, str], NodeRun]:
    """For each (backend, loop), by default every installed one: a `python -m nyx.mix` process (or
    with `program="gateway"`, a `python -m nyx.stream gateway`, whose entry role forwards a
    client's packet to the next hop the same way) forwarding under load from this one. The load
    is a directory node to the gateway, so client admission is not on this path (it is one dict
    lookup per packet)."""
    configurations = configurations or node_configurations()
    load_loop = "uvloop" if any(loop == "uvloop" for _, loop in node_configurations()) else "asyncio"
    identity = NodeIdentity.generate(LOAD_ID)
    logging.getLogger("quic").setLevel(logging.ERROR)
    out: dict[tuple[str, str], NodeRun] = {}
    floor = _hop_operation(KEM_FORMAT)
    with tempfile.TemporaryDirectory(prefix="nyx-micro-mix-") as scratch:
        workdir = Path(scratch)
        clean_dir = workdir / "clean"

        async def first_start() -> NodeRecord:  # create the keys once; a clean stop vouches for them
            proc, record = await _start_node(_node_command(clean_dir, "aioquic", "asyncio", None, program))
            await _stop_node(proc)
            return record

        record = asyncio.run(first_start())
        epoch = min(record.sphinx_keys)
        key = record.sphinx_keys[epoch]
        workers = max(1, os.cpu_count() or 1)
        with multiprocessing.get_context("spawn").Pool(workers) as creators:
            chunks = creators.map(_create_packets, [(key, epoch, pool // workers)] * workers)
        packets = [packet for chunk in chunks for packet in chunk]
        for backend, loop in configurations:
            with asyncio.Runner(loop_factory=_loop_factory(load_loop)) as runner:
                run = runner.run(_load_node(clean_dir, workdir, backend, loop, packets, identity, window_s, backend,
                                            program))
            # This machine's speed drifts by tens of percent within minutes (shared cores): time the
            # floor beside each run rather than once.
            run.floor_hops = ops_per_s(floor, 0.3)
            out[backend, loop] = run
    return out
