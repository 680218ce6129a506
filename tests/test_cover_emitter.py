"""The asyncio shells over SimTransport and real MixNodes: a client's CoverEmitter and a mix's
loop cover, with cover packets built as real mix packets."""

from __future__ import annotations

import asyncio
import random

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from nyx.cover import CoverConfig, Kind, RatePolicy
from nyx.cover.emitter import CoverEmitter, EmitterStoppedError, MixLoopEmitter
from nyx.cover.packets import DROP_TAG, LOOP_TAG, MixCoverPackets, is_drop_cover, loop_id_of
from nyx.mix import KeyRing, MixCore, PoissonDelay, create_packet
from nyx.mix.directory import Directory, NodeRecord, select_route
from nyx.mix.node import MixNode, decode_delivery
from nyx.mix.packet import PACKET_BYTES
from nyx.telemetry.registry import MetricRegistry
from nyx.transport import LinkProfile, SimNetwork


def mix_keys(per_layer: int) -> dict[str, X25519PrivateKey]:
    return {f"mix-{layer}-{i}": X25519PrivateKey.generate() for layer in range(1, 4) for i in range(per_layer)}


def directory_of(keys: dict[str, X25519PrivateKey], per_layer: int, gateways: tuple[str, ...] = ()) -> Directory:
    records = [
        NodeRecord(node_id, "mix", i // per_layer + 1, "sim", 0, None, {0: key.public_key().public_bytes_raw()})
        for i, (node_id, key) in enumerate(keys.items())
    ]
    gw_key = X25519PrivateKey.generate().public_key().public_bytes_raw()
    records += [NodeRecord(gw, "gateway", 0, "sim", 0, None, {0: gw_key}) for gw in gateways]
    return Directory.of(records)


async def start_mixes(network: SimNetwork, keys: dict[str, X25519PrivateKey]) -> dict[str, MixNode]:
    nodes = {}
    for node_id, key in keys.items():
        transport = network.transport(node_id)
        await transport.listen()
        core = MixCore(KeyRing.single(key), delay=PoissonDelay(0.002, random.Random(node_id)), replay_capacity=1 << 14)
        nodes[node_id] = MixNode(core, transport)
    return nodes


async def wait_for(condition, timeout_s: float = 3.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            return
        await asyncio.sleep(0.01)


def test_cover_packets_are_full_size_mix_packets_with_tags_inside() -> None:
    keys = mix_keys(1)
    directory = directory_of(keys, 1, gateways=("gw-1",))
    packets = MixCoverPackets(directory, "alice", lambda: 0, random.Random(1))
    loop, drop = packets(Kind.LOOP), packets(Kind.DROP)
    assert len(loop.packet) == len(drop.packet) == PACKET_BYTES
    assert loop.loop_id is not None and loop.route == ("mix-1-0", "mix-2-0", "mix-3-0")
    assert LOOP_TAG not in loop.packet and DROP_TAG not in drop.packet
    with pytest.raises(ValueError):
        packets(Kind.REAL)
    assert loop_id_of(LOOP_TAG + loop.loop_id) == loop.loop_id and is_drop_cover(DROP_TAG + b"x")


def test_a_mix_loop_visits_the_other_layers_and_ends_at_the_mix() -> None:
    keys = mix_keys(2)
    directory = directory_of(keys, 2)
    loop = MixCoverPackets(directory, "mix-2-1", lambda: 0, random.Random(2)).loop()
    assert [hop.split("-")[1] for hop in loop.route] == ["3", "1", "2"]
    assert loop.route[-1] == "mix-2-1"


async def test_a_client_emitter_over_simtransport_delivers_real_packets_and_gets_its_loops_back() -> None:
    network = SimNetwork(LinkProfile(latency_s=0.002, jitter_s=0.001), seed=1)
    keys = mix_keys(2)
    nodes = await start_mixes(network, keys)
    directory = directory_of(keys, 2, gateways=("sink",))
    client, svc, sink = network.transport("alice"), network.transport("svc"), network.transport("sink")
    for transport in (client, svc, sink):
        await transport.listen()
    got, discarded = [], []
    svc.set_handler(lambda peer, datagram: got.append(decode_delivery(datagram)[1]))
    sink.set_handler(lambda peer, datagram: discarded.append(is_drop_cover(decode_delivery(datagram)[1])))
    config = CoverConfig(RatePolicy(base_pps=40.0), loop_pps=20.0, drop_pps=10.0)
    emitter = CoverEmitter(
        client, MixCoverPackets(directory, "alice", lambda: 0, random.Random(3)), config,
        rng=random.Random(4), loop_timeout_s=1.0,
    )
    client.set_handler(lambda peer, datagram: emitter.on_delivery(decode_delivery(datagram)[1]))
    rng = random.Random(5)
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(node.run()) for node in nodes.values()]
        run = tg.create_task(emitter.run())
        await asyncio.sleep(0.01)
        sent = []
        for n in range(30):
            message = f"real {n}".encode()
            await emitter.send(*create_packet(select_route(directory, 0, rng=rng), "svc", message, 0))
            sent.append(message)
        await wait_for(lambda: len(got) == len(sent))
        await asyncio.sleep(1.5)
        run.cancel()
        for task in tasks:
            task.cancel()
    assert sorted(got) == sorted(sent)
    assert emitter.loops.returned > 10 and emitter.loops.lost == 0
    assert discarded and all(discarded)  # fill and drop cover reached the sink, which saw only cover
    assert all(not count for node in nodes.values() for count in node.drop_counts().values())
    assert emitter.sender.refused == emitter.sender.failed == emitter.sender.build_failures == 0
    with pytest.raises(EmitterStoppedError):
        await emitter.send("mix-1-0", b"late")
    await network.close()


async def test_a_full_queue_makes_the_writer_wait_and_stopping_returns_the_unsent() -> None:
    network = SimNetwork(LinkProfile(latency_s=0.001), seed=2)
    keys = mix_keys(1)
    directory = directory_of(keys, 1)
    client = network.transport("alice")
    await client.listen()
    config = CoverConfig(RatePolicy(base_pps=0.5), loop_pps=0.01, drop_pps=0.01, queue_limit=2)
    emitter = CoverEmitter(client, MixCoverPackets(directory, "alice", lambda: 0), config, rng=random.Random(6))
    run = asyncio.create_task(emitter.run())
    await asyncio.sleep(0)
    await emitter.send("mix-1-0", b"1")
    await emitter.send("mix-1-0", b"2")
    writer = asyncio.create_task(emitter.send("mix-1-0", b"3"))
    await asyncio.sleep(0.05)
    assert not writer.done()  # waiting for room, not dropped
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    with pytest.raises(EmitterStoppedError):
        await writer
    assert len(emitter.unsent()) == 2
    await network.close()


async def test_mix_nodes_emit_loop_cover_through_the_other_layers_and_see_it_return() -> None:
    network = SimNetwork(LinkProfile(latency_s=0.002, jitter_s=0.001), seed=3)
    keys = mix_keys(2)
    nodes = await start_mixes(network, keys)
    directory = directory_of(keys, 2)
    emitters = []
    for node_id, node in nodes.items():
        factory = MixCoverPackets(directory, node_id, lambda: 0, random.Random(node_id))
        emitter = MixLoopEmitter(node, factory, rate_pps=20.0, rng=random.Random(node_id + "x"), loop_timeout_s=1.0)
        emitter.attach()
        emitters.append(emitter)
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(node.run()) for node in nodes.values()]
        tasks += [tg.create_task(emitter.run()) for emitter in emitters]
        await asyncio.sleep(1.5)
        for task in tasks:
            task.cancel()
    for emitter in emitters:
        assert emitter.loops.returned > 5
        assert emitter.loops.lost == 0
    assert all(not count for node in nodes.values() for count in node.drop_counts().values())
    assert sum(node.core.forwarded for node in nodes.values()) >= 2 * sum(e.loops.returned for e in emitters)
    await network.close()


async def test_the_emitter_publishes_compliance_and_drift_under_the_catalogue_names() -> None:
    network = SimNetwork(LinkProfile(latency_s=0.001), seed=4)
    keys = mix_keys(1)
    client = network.transport("alice")
    await client.listen()
    emitter = CoverEmitter(client, MixCoverPackets(directory_of(keys, 1), "alice", lambda: 0), rng=random.Random(7))
    registry = MetricRegistry()
    registry.add_source("cover", emitter.metric_values)
    run = asyncio.create_task(emitter.run())
    await asyncio.sleep(0.05)
    registry.publish()
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert registry.value("cover_traffic_compliance") == 1.0  # no window has closed yet
    assert registry.value("cover_drift_percent") is not None
    assert registry.publish_errors == 0
    await network.close()
