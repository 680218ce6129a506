"""MixNode over SimTransport, the directory format and path selection, and the key store."""

from __future__ import annotations

import asyncio
import os
import random
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from nyx.mix import (
    BatchQueue,
    Deliver,
    Hop,
    KeyRing,
    MixCore,
    PoissonDelay,
    create_packet,
    create_reply,
    create_surb,
    open_reply,
)
from nyx.mix.directory import Directory, DirectoryError, NodeRecord, select_route
from nyx.mix.keystore import KEY_FILE, KeyStoreError, load_keyring
from nyx.mix.node import MixNode, decode_delivery, encode_delivery
from nyx.transport import LinkProfile, SimNetwork

LAYERS = 3


def directory_of(keys: dict[str, X25519PrivateKey], per_layer: int) -> Directory:
    records = []
    for i, (node_id, key) in enumerate(keys.items()):
        records.append(
            NodeRecord(node_id, "mix", i // per_layer + 1, "sim", 0, None, {0: key.public_key().public_bytes_raw()})
        )
    return Directory.of(records)


async def start_mixes(
    network: SimNetwork, keys: dict[str, X25519PrivateKey], mean_delay_s: float, **node_kwargs: object
) -> dict[str, MixNode]:
    nodes = {}
    for node_id, key in keys.items():
        transport = network.transport(node_id)
        await transport.listen()
        delay = PoissonDelay(mean_delay_s, random.Random(node_id))
        core = MixCore(KeyRing.single(key), delay=delay, replay_capacity=4096)
        nodes[node_id] = MixNode(core, transport, **node_kwargs)
    return nodes


async def test_mix_nodes_over_simtransport_deliver_every_packet_through_three_layers() -> None:
    network = SimNetwork(LinkProfile(latency_s=0.002, jitter_s=0.001), seed=1)
    keys = {f"mix-{layer}-{i}": X25519PrivateKey.generate() for layer in range(1, 4) for i in range(2)}
    nodes = await start_mixes(network, keys, mean_delay_s=0.005)
    receiver, sender = network.transport("svc"), network.transport("client")
    await receiver.listen()
    await sender.listen()
    got: list[bytes] = []
    receiver.set_handler(lambda peer, datagram: got.append(decode_delivery(datagram)[1]))
    directory = directory_of(keys, per_layer=2)
    rng = random.Random(4)
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(node.run()) for node in nodes.values()]
        sent = []
        for n in range(60):
            message = f"message {n}".encode()
            first, packet = create_packet(select_route(directory, epoch=0, rng=rng), "svc", message, epoch=0)
            sender.send(first, packet)
            sent.append(message)
        for _ in range(200):
            if len(got) == len(sent):
                break
            await asyncio.sleep(0.01)
        for task in tasks:
            task.cancel()
    assert sorted(got) == sorted(sent)
    assert sum(node.core.forwarded for node in nodes.values()) == 2 * len(sent)
    assert all(not node.drop_counts()[r] for node in nodes.values() for r in node.drop_counts())
    await network.close()


async def test_a_surb_reply_over_simtransport_reaches_its_creator() -> None:
    network = SimNetwork(LinkProfile(latency_s=0.001), seed=2)
    keys = {f"mix-{layer}": X25519PrivateKey.generate() for layer in range(1, 4)}
    nodes = await start_mixes(network, keys, mean_delay_s=0.001)
    alice = network.transport("alice")
    await alice.listen()
    replies: list[tuple[bytes | None, bytes]] = []
    alice.set_handler(lambda peer, datagram: replies.append(decode_delivery(datagram)))
    route = select_route(directory_of(keys, per_layer=1), epoch=0)
    surb, surb_keys = create_surb(route, "alice", epoch=0)
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(node.run()) for node in nodes.values()]
        first, packet = create_reply(surb, b"an answer")
        alice.send(first, packet)  # anyone may send on the SURB; alice is simply a sim peer here
        for _ in range(100):
            if replies:
                break
            await asyncio.sleep(0.01)
        for task in tasks:
            task.cancel()
    surb_id, body = replies[0]
    assert surb_id == surb_keys.surb_id
    assert open_reply(surb_keys, body) == b"an answer"
    await network.close()


async def test_drain_flushes_every_held_packet_and_refuses_new_ones() -> None:
    network = SimNetwork(LinkProfile(latency_s=0.001), seed=3)
    key = X25519PrivateKey.generate()
    nodes = await start_mixes(network, {"mix-1": key}, mean_delay_s=60.0)  # nothing would leave on its own
    node = nodes["mix-1"]
    out, client = network.transport("next"), network.transport("client")
    await out.listen()
    await client.listen()
    got: list[bytes] = []
    out.set_handler(lambda peer, packet: got.append(packet))
    public = key.public_key().public_bytes_raw()
    route = [Hop("mix-1", public), Hop("next", public)]
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(node.run())
        for _ in range(20):
            client.send("mix-1", create_packet(route, "svc", b"held", epoch=0)[1])
        await asyncio.sleep(0.05)
        assert node.held() == 20 and not got
        await node.drain()
        client.send("mix-1", create_packet(route, "svc", b"late", epoch=0)[1])
        await asyncio.sleep(0.05)
        task.cancel()
    assert len(got) == 20 and node.held() == 0
    assert node.drop_counts()["draining"] == 1
    await network.close()


async def test_batch_mode_releases_a_full_batch_at_once() -> None:
    network = SimNetwork(LinkProfile(latency_s=0.001), seed=4)
    key = X25519PrivateKey.generate()
    transport = network.transport("mix-1")
    await transport.listen()
    batch: BatchQueue = BatchQueue(10, 30.0, random.Random(1))
    node = MixNode(MixCore(KeyRing.single(key), replay_capacity=64), transport, batch=batch)
    out, client = network.transport("next"), network.transport("client")
    await out.listen()
    await client.listen()
    got: list[bytes] = []
    out.set_handler(lambda peer, packet: got.append(packet))
    public = key.public_key().public_bytes_raw()
    route = [Hop("mix-1", public), Hop("next", public)]
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(node.run())
        for i in range(9):
            client.send("mix-1", create_packet(route, "svc", b"", epoch=0)[1])
        await asyncio.sleep(0.05)
        assert not got and node.held() == 9
        client.send("mix-1", create_packet(route, "svc", b"", epoch=0)[1])
        await asyncio.sleep(0.05)
        task.cancel()
    assert len(got) == 10
    await network.close()


def test_delivery_datagrams_round_trip() -> None:
    assert decode_delivery(encode_delivery(Deliver("svc", b"hello"))) == (None, b"hello")
    assert decode_delivery(encode_delivery(Deliver("a", b"body", bytes(range(16))))) == (bytes(range(16)), b"body")
    with pytest.raises(ValueError, match="not a mix delivery"):
        decode_delivery(b"\x07junk")


def test_the_directory_file_round_trips_and_names_bad_fields(tmp_path: Path) -> None:
    keys = {f"mix-{i}": X25519PrivateKey.generate() for i in range(6)}
    directory = directory_of(keys, per_layer=2)
    directory.save(tmp_path / "dir.json")
    assert Directory.load(tmp_path / "dir.json") == directory
    document = directory.to_json()
    document["nodes"][1]["sphinx_keys"] = {"0": "abcd"}
    with pytest.raises(DirectoryError, match=r"nodes\[1\].sphinx_keys\[0\]"):
        Directory.from_json(document)
    with pytest.raises(DirectoryError, match="version"):
        Directory.from_json({"nodes": []})


def test_path_selection_takes_one_mix_per_layer_by_weight() -> None:
    keys = {f"mix-{i}": X25519PrivateKey.generate() for i in range(6)}
    directory = directory_of(keys, per_layer=2)
    heavy = directory.nodes["mix-0"]
    directory.nodes["mix-0"] = NodeRecord(heavy.node_id, "mix", 1, "sim", 0, None, heavy.sphinx_keys, weight=9.0)
    rng = random.Random(5)
    firsts = [select_route(directory, epoch=0, rng=rng)[0].node_id for _ in range(1000)]
    assert 850 < firsts.count("mix-0") < 950
    route = select_route(directory, epoch=0, rng=rng, avoid=["mix-0"])
    assert [hop.node_id for hop in route][0] == "mix-1"
    assert [directory.nodes[h.node_id].layer for h in route] == [1, 2, 3]
    with pytest.raises(DirectoryError, match="layer 1"):
        select_route(directory, epoch=0, avoid=["mix-0", "mix-1"])
    with pytest.raises(DirectoryError, match="no usable mix"):
        select_route(directory, epoch=7)


def test_the_key_store_keeps_keys_across_restarts_owner_only(tmp_path: Path) -> None:
    ring = load_keyring(tmp_path, epoch_s=100.0, overlap_s=10.0, now=250.0)
    assert sorted(ring.keys) == [2, 3]
    path = tmp_path / KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = load_keyring(tmp_path, epoch_s=100.0, overlap_s=10.0, now=260.0)
    assert {e: k.public_key for e, k in again.keys.items()} == {e: k.public_key for e, k in ring.keys.items()}
    os.chmod(path, 0o644)
    with pytest.raises(KeyStoreError, match="mode 0644"):
        load_keyring(tmp_path, epoch_s=100.0, overlap_s=10.0, now=260.0)
    os.chmod(path, 0o600)
    with pytest.raises(KeyStoreError, match="epoch"):
        load_keyring(tmp_path, epoch_s=50.0, overlap_s=10.0, now=260.0)


async def test_rotation_tells_the_owner_and_frees_retired_epochs() -> None:
    network = SimNetwork(seed=5)
    clock = [50.0]
    ring = KeyRing(epoch_s=100.0, overlap_s=10.0)
    core = MixCore(ring, replay_capacity=16)
    core.rotate(clock[0])
    told: list[list[int]] = []
    node = MixNode(core, network.transport("mix-1"), clock=lambda: clock[0], on_rotate=told.append)
    assert node.rotate() == [] and told == []  # nothing changed
    clock[0] = 105.0
    node.rotate()  # epoch 2's key is generated ahead; epoch 0's is still inside its overlap
    assert sorted(ring.keys) == [0, 1, 2] and told == [[]]
    clock[0] = 111.0
    assert node.rotate() == [0] and told[-1] == [0]
    assert sorted(ring.keys) == [1, 2]
    await network.close()
