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

sphinxmix is a bench-only dependency (`pip install 'nyx[bench]'`); without it the records that
need it are skipped with a printed note.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from nyx.bench.timing import MicroRecord, ops_per_s
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
    forwarding rate over SimTransport and QuicTransport beside a plain relay."""
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
    return out
