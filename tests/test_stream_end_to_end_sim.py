"""The product's main path in one process over `SimTransport`: `nyx.Client` opens streams through
an entry gateway, three layers of real `MixNode`s and an exit gateway, with the real handshake,
real Sphinx packets, SURB replies and Poisson cover. (The same path over real QUIC and real
processes is tests/test_stream_end_to_end.py.)"""

from __future__ import annotations

import asyncio
import random

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from nyx.cover import CoverConfig, RatePolicy
from nyx.crypto.suites import Suite
from nyx.mix import KeyRing, MixCore, PoissonDelay
from nyx.mix.directory import Directory, NodeRecord
from nyx.mix.node import MixNode
from nyx.stream.client import Client, NoRouteError
from nyx.stream.gateway import Gateway, build_gateway
from nyx.stream.handshake import Responder
from nyx.stream.services import ExitServices, ServiceRegistry
from nyx.stream.target import Status, TargetError
from nyx.transport import LinkProfile, SimNetwork

GATEWAYS = ("gw-a", "gw-b")


class SimNet:
    """Three layers of mixes (two per layer) and two gateways on one SimNetwork."""

    def __init__(self, seed: int = 1, loss: float = 0.0) -> None:
        self.network = SimNetwork(LinkProfile(latency_s=0.002, jitter_s=0.001, loss=loss), seed=seed)
        self.mix_keys = {f"mix-{layer}-{i}": X25519PrivateKey.generate() for layer in (1, 2, 3) for i in (0, 1)}
        self.gw_keys = {gw: X25519PrivateKey.generate() for gw in GATEWAYS}
        self.stream_keys = {gw: Suite.HYBRID.kem().generate() for gw in GATEWAYS}
        records = [
            NodeRecord(node_id, "mix", int(node_id.split("-")[1]), "sim", 0, None,
                       {0: key.public_key().public_bytes_raw()})
            for node_id, key in self.mix_keys.items()
        ]
        records += [
            NodeRecord(gw, "gateway", 0, "sim", 0, None, {0: self.gw_keys[gw].public_key().public_bytes_raw()},
                       stream_keys={"hybrid": self.stream_keys[gw][1]})
            for gw in GATEWAYS
        ]
        self.directory = Directory.of(records)
        self.mixes: dict[str, MixNode] = {}
        self.gateways: dict[str, Gateway] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}

    async def start(self, tg: asyncio.TaskGroup) -> None:
        for node_id, key in self.mix_keys.items():
            transport = self.network.transport(node_id)
            await transport.listen()
            core = MixCore(KeyRing.single(key), delay=PoissonDelay(0.001, random.Random(node_id)), replay_capacity=1 << 14)
            self.mixes[node_id] = node = MixNode(core, transport)
            tg.create_task(node.run())
        for gw in GATEWAYS:
            transport = self.network.transport(gw)
            await transport.listen()
            services = ExitServices(ServiceRegistry())
            gateway = build_gateway(gw, transport, KeyRing.single(self.gw_keys[gw]),
                                    Responder({Suite.HYBRID: self.stream_keys[gw][0]}), services.serve,
                                    lambda peer: peer in self.directory.nodes, replay_capacity=1 << 14)
            self.gateways[gw] = gateway
            self.tasks[gw] = tg.create_task(gateway.run())

    def client(self, cover: CoverConfig | None = None, **options: object) -> Client:
        client_id = f"c{random.getrandbits(60):015x}"
        return Client(self.directory, gateway="gw-a", exit="gw-b", transport=self.network.transport(client_id),
                      cover=cover, client_id=client_id, **options)  # type: ignore[arg-type]


async def run_with_net(body, **options):  # type: ignore[no-untyped-def]
    net = SimNet(**options)
    async with asyncio.TaskGroup() as tg:
        await net.start(tg)
        try:
            await body(net)
        finally:
            for task in tg._tasks:  # type: ignore[attr-defined]
                task.cancel()
    await net.network.close()
    return net


async def test_echo_round_trip_through_three_layers_and_two_gateways() -> None:
    async def body(net: SimNet) -> None:
        async with net.client() as client:
            reader, writer = await asyncio.wait_for(client.open_connection("echo"), 20)
            payload = random.Random(3).randbytes(50_000)
            writer.write(payload)
            await writer.drain()
            writer.write_eof()
            got = await asyncio.wait_for(reader.readexactly(len(payload)), 30)
            assert got == payload
            assert await asyncio.wait_for(reader.read(), 10) == b""
        exit_gw = net.gateways["gw-b"]
        assert exit_gw.counts["replies_sent"] > 0 and exit_gw.exit.sessions_opened == 1
        assert net.gateways["gw-a"].counts["client_deliveries"] > 0

    await asyncio.wait_for(run_with_net(body), 60)


async def test_with_poisson_cover_and_loss_every_byte_arrives_and_loops_come_back() -> None:
    cover = CoverConfig(policy=RatePolicy(base_pps=300.0), loop_pps=20.0, drop_pps=5.0, queue_limit=64)

    async def body(net: SimNet) -> None:
        async with net.client(cover=cover) as client:
            reader, writer = await asyncio.wait_for(client.open_connection("echo"), 30)
            payload = random.Random(4).randbytes(30_000)
            writer.write(payload)
            await writer.drain()
            writer.write_eof()
            assert await asyncio.wait_for(reader.readexactly(len(payload)), 60) == payload
            emitter = client.emitter
            assert emitter is not None and emitter.loops.returned > 0
        assert net.gateways["gw-b"].counts["cover_dropped"] + net.gateways["gw-a"].counts["cover_dropped"] > 0

    await asyncio.wait_for(run_with_net(body, loss=0.02), 120)


async def test_several_streams_share_one_session_and_bad_targets_get_their_status() -> None:
    async def body(net: SimNet) -> None:
        async with net.client() as client:
            pairs = [await asyncio.wait_for(client.open_connection("echo"), 20) for _ in range(3)]
            for i, (reader, writer) in enumerate(pairs):
                writer.write(bytes([i]) * 1000)
                writer.write_eof()
            for i, (reader, _) in enumerate(pairs):
                assert await asyncio.wait_for(reader.readexactly(1000), 20) == bytes([i]) * 1000
            with pytest.raises(TargetError) as refused:
                await asyncio.wait_for(client.open_connection("no-such-service"), 20)
            assert refused.value.status is Status.UNKNOWN_SERVICE
            with pytest.raises(TargetError) as not_allowed:
                await asyncio.wait_for(client.open_connection("127.0.0.1:9"), 20)
            assert not_allowed.value.status is Status.NOT_ALLOWED
        assert net.gateways["gw-b"].exit.sessions_opened == 1

    await asyncio.wait_for(run_with_net(body), 60)


async def test_a_directory_without_gateways_is_no_route() -> None:
    net = SimNet()
    mixes_only = Directory.of(r for r in net.directory.nodes.values() if r.role == "mix")
    with pytest.raises(NoRouteError):
        Client(mixes_only)


async def test_a_draining_exit_finishes_its_streams_and_refuses_new_sessions() -> None:
    async def body(net: SimNet) -> None:
        exit_gw = net.gateways["gw-b"]
        async with net.client() as client:
            reader, writer = await asyncio.wait_for(client.open_connection("echo"), 20)
            payload = random.Random(5).randbytes(200_000)
            writer.write(payload)
            drain = asyncio.create_task(exit_gw.drain(timeout_s=30))
            await asyncio.wait_for(writer.drain(), 30)
            assert not drain.done()  # the stream is still being served
            writer.write_eof()
            assert await asyncio.wait_for(reader.readexactly(len(payload)), 30) == payload
            assert await asyncio.wait_for(drain, 30) is True  # every accepted byte acknowledged
        async with net.client(resend_s=0.2, max_tries=2) as late:
            with pytest.raises(Exception) as refused:
                await asyncio.wait_for(late.open_connection("echo"), 20)
            assert "did not open a session" in str(refused.value)
        # refused: by the exit (sessions_full) while it drains, by the mix node once drained
        assert exit_gw.exit.all_drops()["sessions_full"] + exit_gw.node.node_drops["draining"] > 0

    await asyncio.wait_for(run_with_net(body), 90)


async def test_the_client_reports_its_slis_under_their_catalogue_names() -> None:
    from nyx.telemetry.catalogue import CATALOGUE

    async def body(net: SimNet) -> None:
        async with net.client() as client:
            reader, writer = await asyncio.wait_for(client.open_connection("echo"), 20)
            for _ in range(20):
                writer.write(b"x" * 64)
                await writer.drain()
                await asyncio.wait_for(reader.readexactly(64), 10)
            values = client.metric_values()
        names = {spec.name for spec in CATALOGUE}
        assert set(values) <= names
        assert values["sdk_session_success"] == 1.0 and client.sessions_attempted == 1
        assert 0.0 < values["stream_latency_p95"] < 5.0
        assert client.queue_wait.count == 21 and values["stream_queue_latency"] >= 0.0  # 20 writes + the prelude

    await asyncio.wait_for(run_with_net(body), 60)


async def test_a_client_cannot_use_its_gateway_to_relay_packets_or_fake_refusals_to_another() -> None:
    """An attacker who even knows a victim's client id builds packets through their shared
    entry: one naming the victim as the next hop (the gateway would forward a whole packet the
    attacker shaped, e.g. to look like a refusal) is dropped; one delivered to the victim's id
    arrives as a message, which the victim's client counts and ignores."""
    from nyx.mix.packet import Hop, create_packet
    from nyx.stream.entry_wire import RefusalReason, encode_refusal

    async def body(net: SimNet) -> None:
        gateway = net.gateways["gw-a"]
        async with net.client() as victim, net.client() as attacker:
            await asyncio.wait_for(victim.open_connection("echo"), 20)
            entry = net.directory.nodes["gw-a"].hop(0)
            fake = encode_refusal(RefusalReason.RATE_LIMITED, "forged")
            any_key = X25519PrivateKey.generate().public_key().public_bytes_raw()
            relayed = create_packet([entry, Hop(victim.client_id, any_key)], victim.client_id, fake, 0)[1]
            delivered = create_packet([entry], victim.client_id, fake, 0)[1]
            assert attacker.transport is not None
            for packet in (relayed, delivered):
                attacker.transport.send("gw-a", packet)
            for _ in range(100):
                if victim.drops["unexpected_message"]:
                    break
                await asyncio.sleep(0.02)
            assert gateway.node.node_drops["unknown_peer"] == 1  # not relayed to a client
            assert victim.drops["unexpected_message"] == 1 and victim.refusal is None
            reader, writer = await asyncio.wait_for(victim.open_connection("echo"), 20)  # still served
            writer.write(b"ok")
            assert await asyncio.wait_for(reader.readexactly(2), 20) == b"ok"

    await asyncio.wait_for(run_with_net(body), 60)


async def test_a_gateway_cancelled_with_streams_open_stops_promptly() -> None:
    async def body(net: SimNet) -> None:
        async with net.client() as client:
            reader, writer = await asyncio.wait_for(client.open_connection("echo"), 20)
            writer.write(b"still open")
            assert await asyncio.wait_for(reader.readexactly(10), 20) == b"still open"
            gateway, task = net.gateways["gw-b"], net.tasks["gw-b"]
            assert gateway.counts["streams_opened"] == 1 and gateway.counts["streams_ended"] == 0
            task.cancel()
            done, _ = await asyncio.wait([task], timeout=5)
            assert task in done  # its stream's service was released, not left waiting for ever
            assert gateway.counts["streams_ended"] == 1

    await asyncio.wait_for(run_with_net(body), 60)
