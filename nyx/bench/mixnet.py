"""A whole mixnet in one process over `SimTransport`: the node classes the programs run (real
`MixNode`s with Sphinx keys and Poisson delays, real `Gateway`s with `ExitServices`), a directory
listing them, and `nyx.Client`s on their own simulated links. For the stream scenarios, which
need the seed's node counts (10 to 20 gateways, 15 mixes) on one machine.

    async with mixnet(MixnetShape(gateways=10, mixes_per_layer=5), seed=1) as net:
        client = net.client(gateway="gw-01", exit="gw-02")
        async with client:
            reader, writer = await client.open_connection("echo")

Everything is real but the links: handshakes, Sphinx packets (one X25519 per hop), SURBs,
sessions, the target prelude. Node tasks belong to the context's TaskGroup and are cancelled
when it exits; the simulated network is closed after them.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from nyx.crypto.suites import Suite
from nyx.mix.core import MixCore
from nyx.mix.delay import PoissonDelay
from nyx.mix.directory import Directory, NodeRecord
from nyx.mix.keys import KeyRing
from nyx.mix.node import MixNode
from nyx.stream.client import Client
from nyx.stream.client_admission import ClientAdmission
from nyx.stream.gateway import Gateway, build_gateway
from nyx.stream.handshake import Responder
from nyx.stream.services import Allowlist, ExitServices, ServiceRegistry
from nyx.transport import LinkProfile, SimNetwork

__all__ = ["Mixnet", "MixnetShape", "mixnet"]

EPOCH = 0  # one key epoch for the whole run (KeyRing.single)


@dataclass(frozen=True, slots=True)
class MixnetShape:
    """How big, how slow, how lossy. `mean_delay_s`: each mix's Poisson mean delay."""

    layers: int = 3
    mixes_per_layer: int = 1
    gateways: int = 2
    mean_delay_s: float = 0.005
    suites: tuple[Suite, ...] = (Suite.HYBRID,)
    profile: LinkProfile = field(default_factory=lambda: LinkProfile(latency_s=0.002, jitter_s=0.0005))
    client_rate_per_min: float = 30.0
    max_sessions: int = 100_000
    allow: tuple[str, ...] = ()
    replay_capacity: int = 1 << 16
    # Regions: mix i of each layer and gateway i go to regions[i % len(regions)]; links between two
    # regions have `cross_region_s` of latency (within a region: `profile`'s latency).
    regions: tuple[str, ...] = ()
    cross_region_s: float = 0.045

    def region_of(self, index: int) -> str | None:
        return self.regions[index % len(self.regions)] if self.regions else None


class Mixnet:
    """The running network: its directory, nodes, and a factory of clients."""

    def __init__(self, shape: MixnetShape, seed: int) -> None:
        self.shape = shape
        self.rng = random.Random(seed)
        matrix = {(a, b): (shape.cross_region_s if a != b else shape.profile.latency_s)
                  for a in shape.regions for b in shape.regions}
        self.network = SimNetwork(shape.profile, region_latency_s=matrix, seed=seed)
        self.mix_keys = {
            f"mix-{layer}-{i:02d}": X25519PrivateKey.generate()
            for layer in range(1, shape.layers + 1) for i in range(shape.mixes_per_layer)
        }
        self.gateway_ids = [f"gw-{i:02d}" for i in range(1, shape.gateways + 1)]
        self.gateway_keys = {gw: X25519PrivateKey.generate() for gw in self.gateway_ids}
        self.static_keys = {gw: {suite: suite.kem().generate() for suite in shape.suites} for gw in self.gateway_ids}
        self.regions: dict[str, str | None] = {
            node_id: shape.region_of(int(node_id.split("-")[2])) for node_id in self.mix_keys
        }
        self.regions.update({gw: shape.region_of(i) for i, gw in enumerate(self.gateway_ids)})
        records = [
            NodeRecord(node_id, "mix", int(node_id.split("-")[1]), "sim", 0, None,
                       {EPOCH: key.public_key().public_bytes_raw()}, region=self.regions[node_id])
            for node_id, key in self.mix_keys.items()
        ]
        records += [
            NodeRecord(gw, "gateway", 0, "sim", 0, None, {EPOCH: self.gateway_keys[gw].public_key().public_bytes_raw()},
                       stream_keys={suite.label: pair[1] for suite, pair in self.static_keys[gw].items()},
                       region=self.regions[gw])
            for gw in self.gateway_ids
        ]
        self.directory = Directory.of(records)
        self.mixes: dict[str, MixNode] = {}
        self.gateways: dict[str, Gateway] = {}
        self.services: dict[str, ExitServices] = {}
        self._clients = 0
        self.tasks: list[asyncio.Task[None]] = []

    async def start(self, tg: asyncio.TaskGroup) -> None:
        shape = self.shape
        for node_id, key in self.mix_keys.items():
            transport = self.network.transport(node_id, self.regions[node_id])
            await transport.listen()
            core = MixCore(KeyRing.single(key), delay=PoissonDelay(shape.mean_delay_s, random.Random(self.rng.random())),
                           replay_capacity=shape.replay_capacity)
            self.mixes[node_id] = node = MixNode(core, transport)
            self.tasks.append(tg.create_task(node.run(), name=node_id))
        for gw in self.gateway_ids:
            transport = self.network.transport(gw, self.regions[gw])
            await transport.listen()
            services = ExitServices(ServiceRegistry(), Allowlist(shape.allow))
            responder = Responder({suite: pair[0] for suite, pair in self.static_keys[gw].items()})
            gateway = build_gateway(gw, transport, KeyRing.single(self.gateway_keys[gw]), responder, services.serve,
                                    self.directory.nodes.__contains__, replay_capacity=shape.replay_capacity,
                                    max_sessions=shape.max_sessions,
                                    admission=ClientAdmission(shape.client_rate_per_min))
            self.gateways[gw], self.services[gw] = gateway, services
            self.tasks.append(tg.create_task(gateway.run(), name=gw))

    def client(self, *, gateway: str | None = None, exit: str | None = None, region: str | None = None,
               **options: Any) -> Client:
        """A client on its own simulated link (not started: `async with` it), in `region` (default:
        its entry gateway's). Default: no cover, so a scenario measures the network, not the cover
        rate (pass `cover=` to change)."""
        self._clients += 1
        client_id = f"c{self._clients:07d}{self.rng.getrandbits(32):08x}"
        options.setdefault("cover", None)
        options.setdefault("rng", random.Random(self.rng.random()))
        if region is None and gateway is not None:
            region = self.regions.get(gateway)
        return Client(self.directory, gateway=gateway, exit=exit, transport=self.network.transport(client_id, region),
                      client_id=client_id, **options)

    # -- failures (what the multipath scenarios inject) --------------------------------------------

    def fail(self, node_id: str) -> None:
        """The node stops: every packet to or from it is lost (its task keeps running, unreachable)."""
        self.network.model.fail_node(node_id)

    def restore(self, node_id: str) -> None:
        self.network.model.restore_node(node_id)

    def fail_region(self, region: str, roles: tuple[str, ...] = ("mix", "gateway")) -> list[str]:
        """Every node of `roles` in `region` fails; returns their ids."""
        failed = [n for n, r in self.regions.items() if r == region and self.directory.nodes[n].role in roles]
        for node_id in failed:
            self.fail(node_id)
        return failed


@contextlib.asynccontextmanager
async def mixnet(shape: MixnetShape = MixnetShape(), seed: int = 1) -> AsyncIterator[Mixnet]:
    """A started `Mixnet`; its node tasks end when the context does."""
    net = Mixnet(shape, seed)
    try:
        async with asyncio.TaskGroup() as tg:
            await net.start(tg)
            try:
                yield net
            finally:
                for task in net.tasks:
                    task.cancel()
    finally:
        await net.network.close()
