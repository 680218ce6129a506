"""Multipath and route failover end to end: real mix, gateway and client classes over SimTransport,
with mixes failed under a running stream. No byte may be lost; failed routes are replaced."""

from __future__ import annotations

import asyncio
import random

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from nyx.crypto.suites import Suite
from nyx.mix import KeyRing, MixCore, PoissonDelay
from nyx.mix.directory import Directory, NodeRecord
from nyx.mix.node import MixNode
from nyx.stream.client import Client
from nyx.stream.gateway import build_gateway
from nyx.stream.handshake import Responder
from nyx.stream.services import ExitServices, ServiceRegistry
from nyx.transport import LinkProfile, SimNetwork

REGIONS = ("eu", "us")


class RegionNet:
    """3 layers x `per_region` mixes in each of two regions, and two gateways."""

    def __init__(self, per_region: int = 3, seed: int = 5) -> None:
        self.network = SimNetwork(LinkProfile(latency_s=0.002, jitter_s=0.001), seed=seed)
        self.mix_keys = {
            f"m{layer}{region}{i}": (layer, region, X25519PrivateKey.generate())
            for layer in (1, 2, 3) for region in REGIONS for i in range(per_region)
        }
        self.gw_keys = {gw: X25519PrivateKey.generate() for gw in ("gw-a", "gw-b")}
        self.stream_keys = {gw: Suite.HYBRID.kem().generate() for gw in self.gw_keys}
        records = [NodeRecord(n, "mix", layer, "sim", 0, None, {0: key.public_key().public_bytes_raw()}, region=region)
                   for n, (layer, region, key) in self.mix_keys.items()]
        records += [NodeRecord(gw, "gateway", 0, "sim", 0, None, {0: key.public_key().public_bytes_raw()},
                               stream_keys={"hybrid": self.stream_keys[gw][1]}) for gw, key in self.gw_keys.items()]
        self.directory = Directory.of(records)

    async def start(self, tg: asyncio.TaskGroup) -> None:
        for node_id, (_, region, key) in self.mix_keys.items():
            transport = self.network.transport(node_id, region)
            await transport.listen()
            core = MixCore(KeyRing.single(key), delay=PoissonDelay(0.002, random.Random(node_id)), replay_capacity=1 << 14)
            tg.create_task(MixNode(core, transport).run())
        for gw, key in self.gw_keys.items():
            transport = self.network.transport(gw)
            await transport.listen()
            services = ExitServices(ServiceRegistry())
            gateway = build_gateway(gw, transport, KeyRing.single(key), Responder({Suite.HYBRID: self.stream_keys[gw][0]}),
                                    services.serve, lambda peer: peer in self.directory.nodes, replay_capacity=1 << 14)
            tg.create_task(gateway.run())

    def client(self, routes: int) -> Client:
        client_id = f"c{random.getrandbits(60):015x}"
        return Client(self.directory, gateway="gw-a", exit="gw-b", transport=self.network.transport(client_id),
                      cover=None, client_id=client_id, routes=routes, rng=random.Random(7))

    def kill(self, node_id: str) -> None:
        self.network.model.fail_node(node_id)


async def run(body, **options) -> None:  # type: ignore[no-untyped-def]
    net = RegionNet(**options)
    async with asyncio.TaskGroup() as tg:
        await net.start(tg)
        try:
            await body(net)
        finally:
            for task in tg._tasks:  # type: ignore[attr-defined]
                task.cancel()
    await net.network.close()


async def echo_while(client: Client, size: int, during) -> bytes:  # type: ignore[no-untyped-def]
    """Echo `size` bytes in chunks; call `during()` once a third has been written."""
    reader, writer = await asyncio.wait_for(client.open_connection("echo"), 20)
    payload = random.Random(size).randbytes(size)
    received = bytearray()

    async def read_all() -> None:
        while len(received) < size:
            chunk = await reader.read(65536)
            if not chunk:
                break
            received.extend(chunk)

    reading = asyncio.create_task(read_all())
    step = 2000
    for offset in range(0, size, step):
        writer.write(payload[offset:offset + step])
        await writer.drain()
        if offset <= size // 3 < offset + step:
            during()
        await asyncio.sleep(0.005)
    await asyncio.wait_for(reading, 60)
    writer.close()
    assert bytes(received) == payload
    return payload


async def test_a_mix_killed_on_one_route_of_a_multipath_stream_loses_no_byte_and_the_route_is_replaced() -> None:
    async def body(net: RegionNet) -> None:
        async with net.client(routes=5) as client:
            victims: list[str] = []

            def kill_one() -> None:
                session = next(iter(client._sessions.values()))
                assert session.routes is not None and len(session.routes.active()) == 5
                victims.append(session.routes.active()[0].mixes[1])
                net.kill(victims[0])

            await echo_while(client, 120_000, kill_one)
            session = next(iter(client._sessions.values()))
            assert session.routes is not None
            assert all(victims[0] not in r.mixes for r in session.routes.active())
            assert session.routes.replaced >= 1 and session.routes.failovers_s
            values = client.metric_values()
            assert values["mix_failover_duration"] == session.routes.failovers_s[-1]
            assert values["route_update_latency"] == session.routes.reconfigurations_s[-1]
            assert values["route_update_latency"] <= values["mix_failover_duration"]

    await asyncio.wait_for(run(body), 90)


async def test_every_mix_of_one_layer_in_one_region_killed_streams_continue_on_the_other_region() -> None:
    async def body(net: RegionNet) -> None:
        async with net.client(routes=5) as client:
            dead = [n for n, (layer, region, _) in net.mix_keys.items() if layer == 2 and region == "eu"]

            def kill_region_layer() -> None:
                for node in dead:
                    net.kill(node)

            await echo_while(client, 80_000, kill_region_layer)
            session = next(iter(client._sessions.values()))
            assert session.routes is not None
            assert not {m for r in session.routes.active() for m in r.mixes} & set(dead)

    await asyncio.wait_for(run(body), 90)


async def test_with_multipath_off_a_failure_costs_a_retransmission_never_data() -> None:
    async def body(net: RegionNet) -> None:
        async with net.client(routes=1) as client:
            used: list[tuple[str, ...]] = []

            def kill_the_route() -> None:
                session = next(iter(client._sessions.values()))
                assert session.routes is not None and len(session.routes.active()) == 1
                used.append(session.routes.active()[0].mixes)
                net.kill(used[0][2])

            await echo_while(client, 60_000, kill_the_route)
            session = next(iter(client._sessions.values()))
            assert session.routes is not None and len(session.routes.active()) == 1
            assert session.routes.active()[0].mixes != used[0]
            assert session.core.session is not None and session.core.session._recovery.lost_total + client.records_resent > 0

    await asyncio.wait_for(run(body), 90)
