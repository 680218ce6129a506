"""The network the adversary watches: real `MixNode`s (Sphinx keys, Poisson delays), a provider
that removes the last layer and delivers, clients that send real Sphinx packets (through a real
`CoverEmitter` when cover is on) and recipients, all on one `SimNetwork`, on a virtual clock.

Routes are `[L1, ..., Ln, provider]` (one mix per layer by `select_route`): every layer mixes,
and the provider, as the final hop, delivers at once to the recipient, as a Loopix provider or
a nyx exit gateway does. Cover (fill packets in the client's payload slots) takes the same route
to a destination the provider discards, so no mix can tell it from a real packet.

The recipients decode each delivery, whose payload names its sender and when it was written:
that is the ground truth the attack is scored against, kept apart from what the adversary sees.
"""

from __future__ import annotations

import asyncio
import os
import random
import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from nyx.bench.anonymity.observer import LinkEvent, LinkObserver, Topology
from nyx.bench.anonymity.virtual_time import run_virtual
from nyx.cover.client import CoverConfig
from nyx.cover.emitter import CoverEmitter
from nyx.cover.packets import DROP_TAG, CoverPacket
from nyx.cover.rate import RatePolicy
from nyx.cover.slots import Kind
from nyx.mix.core import Deliver, MixCore
from nyx.mix.delay import PoissonDelay
from nyx.mix.directory import Directory, NodeRecord, select_route
from nyx.mix.keys import KeyRing
from nyx.mix.node import MixNode, decode_delivery, encode_delivery
from nyx.mix.packet import create_packet
from nyx.transport import LinkProfile, SimNetwork, SimTransport

EPOCH = 0
PROVIDER = "provider"
DISCARD = "discard"  # the destination of cover: the provider drops it
_REAL = struct.Struct(">4sHId")  # tag, sender index, sequence, written at (virtual s)
_REAL_TAG = b"anon"
COVER_RATIO = 0.2  # the lowest the rate law allows: cover fills slots until real traffic exceeds 80% of them


@dataclass(frozen=True, slots=True)
class MixnetSettings:
    """One run. `real_pps` and `cover_pps` are per client; `cover_pps` 0 sends each real packet
    the moment it is written (no emitter), otherwise the client's payload slots run at
    real_pps + cover_pps and real packets wait for a slot. `duration_s` is virtual seconds of
    traffic (then the network drains)."""

    clients: int = 10
    layers: int = 3
    mixes_per_layer: int = 2
    mean_delay_s: float = 0.05
    real_pps: float = 1.0
    cover_pps: float = 0.0
    duration_s: float = 30.0
    link_latency_s: float = 0.002
    seed: int = 1


@dataclass(frozen=True, slots=True)
class Delivery:
    """Ground truth of one delivered real message: the adversary's `events[event_index]` carried
    it from the provider to its recipient."""

    event_index: int
    sender: str
    written_at: float
    received_at: float


@dataclass(slots=True)
class Observation:
    """A finished run: what the adversary saw (`events`, `topology`), the ground truth
    (`deliveries`) and the run's costs."""

    settings: MixnetSettings
    topology: Topology
    events: list[LinkEvent]
    deliveries: list[Delivery]
    real_written: int
    client_packets: int
    real_unsent: int = 0  # real messages still waiting for a cover slot when traffic stopped
    mix_drops: int = 0


def simulate(settings: MixnetSettings) -> Observation:
    """Run `settings` on a virtual clock and return what was observed (seconds of CPU, not of
    waiting: a 60 s run with 20 clients takes about a second here)."""
    return run_virtual(_run(settings))


class _Provider:
    """The final hop's delivery: real messages to their recipient, cover dropped."""

    def __init__(self, transport: SimTransport) -> None:
        self.transport = transport
        self.dropped_cover = 0

    def __call__(self, event: Deliver) -> None:
        if event.destination == DISCARD:
            self.dropped_cover += 1
        else:
            self.transport.send(event.destination, encode_delivery(event))


class _CoverFactory:
    """Fill and drop cover over the real route shape, to the provider's discard address."""

    def __init__(self, directory: Directory, rng: random.Random) -> None:
        self.directory, self.rng = directory, rng

    def __call__(self, kind: Kind) -> CoverPacket:
        if kind not in (Kind.FILL, Kind.DROP):
            raise ValueError(f"this bench sends no {kind.name.lower()} cover")
        route = select_route(self.directory, EPOCH, exit_node=PROVIDER, rng=self.rng)
        first, packet = create_packet(route, DISCARD, DROP_TAG + os.urandom(16), EPOCH)
        return CoverPacket(first, packet)


def _directory(settings: MixnetSettings) -> tuple[Directory, dict[str, X25519PrivateKey], Topology]:
    keys = {f"mix-{layer}-{i:02d}": X25519PrivateKey.generate()
            for layer in range(1, settings.layers + 1) for i in range(settings.mixes_per_layer)}
    keys[PROVIDER] = X25519PrivateKey.generate()
    records = [NodeRecord(node, "mix" if node != PROVIDER else "gateway",
                          int(node.split("-")[1]) if node != PROVIDER else 0, "sim", 0, None,
                          {EPOCH: key.public_key().public_bytes_raw()}) for node, key in keys.items()]
    topology = Topology(
        clients=tuple(f"client-{i:03d}" for i in range(settings.clients)),
        layers=tuple(tuple(f"mix-{layer}-{i:02d}" for i in range(settings.mixes_per_layer))
                     for layer in range(1, settings.layers + 1)),
        providers=(PROVIDER,),
        recipients=tuple(f"rcpt-{i:03d}" for i in range(settings.clients)),
        mean_delay_s=settings.mean_delay_s,
    )
    return Directory.of(records), keys, topology


async def _run(settings: MixnetSettings) -> Observation:
    rng = random.Random(settings.seed)
    directory, keys, topology = _directory(settings)
    network = SimNetwork(LinkProfile(latency_s=settings.link_latency_s), seed=settings.seed)
    observer = LinkObserver()
    observer.attach(network)
    received: dict[str, list[tuple[str, float, float]]] = {r: [] for r in topology.recipients}
    written = [0]
    nodes: list[MixNode] = []
    emitters: list[CoverEmitter] = []
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.TaskGroup() as tg:
            tasks: list[asyncio.Task[None]] = []
            for node_id, key in keys.items():
                transport = network.transport(node_id)
                await transport.listen()
                delay = PoissonDelay(settings.mean_delay_s if node_id != PROVIDER else 0.0,
                                     random.Random(rng.random()))
                node = MixNode(MixCore(KeyRing.single(key), delay=delay, replay_capacity=1 << 16), transport,
                               on_deliver=_Provider(transport) if node_id == PROVIDER else None,
                               rotate_interval_s=3600.0)
                nodes.append(node)
                tasks.append(tg.create_task(node.run(), name=node_id))
            for recipient in topology.recipients:
                transport = network.transport(recipient)
                await transport.listen()
                transport.set_handler(_recipient(received[recipient], topology, loop))
            senders = []
            for index, client_id in enumerate(topology.clients):
                transport = network.transport(client_id)
                await transport.listen()
                client_rng = random.Random(rng.random())
                emitter = None
                if settings.cover_pps > 0:
                    policy = RatePolicy(base_pps=settings.real_pps + settings.cover_pps, cover_ratio=COVER_RATIO)
                    config = CoverConfig(policy=policy, loop_pps=0.0, drop_pps=0.0, queue_limit=10_000)
                    emitter = CoverEmitter(transport, _CoverFactory(directory, client_rng), config, rng=client_rng)
                    emitters.append(emitter)
                    tasks.append(tg.create_task(emitter.run(), name=f"{client_id}-cover"))
                senders.append(tg.create_task(
                    _write_messages(index, transport, emitter, directory, topology, settings, client_rng, written),
                    name=client_id))
            await asyncio.sleep(settings.duration_s)
            for task in senders:
                task.cancel()
            for task in tasks:
                if task.get_name().endswith("-cover"):
                    task.cancel()
            # drain: a packet's mixing delay is Erlang(layers); 40 means per hop leaves e^-40 behind
            await asyncio.sleep(settings.layers * (40 * settings.mean_delay_s + 2 * settings.link_latency_s) + 0.1)
            for task in tasks:
                task.cancel()
    finally:
        observer.detach()
        await network.close()
    client_ids = set(topology.clients)
    client_packets = sum(1 for e in observer.events if e.src in client_ids)
    return Observation(
        settings, topology, observer.events, _ground_truth(observer.events, received), written[0],
        client_packets, real_unsent=sum(len(e.unsent()) for e in emitters), mix_drops=sum(sum(n.drop_counts().values()) for n in nodes),
    )


def _recipient(log: list[tuple[str, float, float]], topology: Topology, loop: asyncio.AbstractEventLoop):
    def on_packet(peer: str, datagram: bytes) -> None:
        _, payload = decode_delivery(datagram)
        tag, sender, _seq, written_at = _REAL.unpack_from(payload)
        if tag == _REAL_TAG:
            log.append((topology.clients[sender], written_at, loop.time()))
    return on_packet


async def _write_messages(index: int, transport: SimTransport, emitter: CoverEmitter | None, directory: Directory,
                          topology: Topology, settings: MixnetSettings, rng: random.Random, written: list[int]) -> None:
    """A client's real messages: Poisson(real_pps), each to a random recipient."""
    loop = asyncio.get_running_loop()
    seq = 0
    while True:
        await asyncio.sleep(rng.expovariate(settings.real_pps))
        route = select_route(directory, EPOCH, exit_node=PROVIDER, rng=rng)
        message = _REAL.pack(_REAL_TAG, index, seq, loop.time())
        first, packet = create_packet(route, rng.choice(topology.recipients), message, EPOCH)
        seq += 1
        written[0] += 1
        if emitter is None:
            transport.send(first, packet)
        else:
            await emitter.send(first, packet)


def _ground_truth(events: list[LinkEvent], received: dict[str, list[tuple[str, float, float]]]) -> list[Delivery]:
    """Join the provider-to-recipient events with what each recipient decoded, in arrival order."""
    by_recipient: dict[str, list[int]] = {r: [] for r in received}
    for i, event in enumerate(events):
        if event.src == PROVIDER and event.dst in by_recipient:
            by_recipient[event.dst].append(i)
    deliveries = []
    for recipient, indices in by_recipient.items():
        indices.sort(key=lambda i: events[i].arrives_at)
        for i, (sender, written_at, received_at) in zip(indices, received[recipient]):
            deliveries.append(Delivery(i, sender, written_at, received_at))
    deliveries.sort(key=lambda d: d.event_index)
    return deliveries
