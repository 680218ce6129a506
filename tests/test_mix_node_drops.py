"""MixNode counts each send failure under its own reason (`mix_packet_drop{reason=...}`), over a
real SimTransport: a full queue, an unknown next hop, an oversize packet, a closed transport."""

from __future__ import annotations

import asyncio
import random

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from nyx.mix import Hop, KeyRing, MixCore, PoissonDelay, create_packet
from nyx.mix.node import NODE_DROP_REASONS, MixNode, send_failure_reason
from nyx.transport import LinkProfile, SimNetwork
from nyx.transport.base import TransportError

KEY = X25519PrivateKey.generate()
PUBLIC = KEY.public_key().public_bytes_raw()


async def mix_on(network: SimNetwork, mean_delay_s: float | None = None) -> tuple[MixNode, asyncio.Task[None]]:
    transport = network.transport("mix-1")
    await transport.listen()
    delay = PoissonDelay(mean_delay_s, random.Random(1)) if mean_delay_s else None
    node = MixNode(MixCore(KeyRing.single(KEY), delay=delay, replay_capacity=64), transport)
    task = asyncio.create_task(node.run())
    await asyncio.sleep(0)
    return node, task


async def send_through(network: SimNetwork, next_hop: str, count: int = 1) -> None:
    """`count` packets from a fresh client through mix-1 to `next_hop`."""
    client = network.transport(f"client-{next_hop}-{random.random()}")
    await client.listen()
    for n in range(count):
        _, packet = create_packet([Hop("mix-1", PUBLIC), Hop(next_hop, PUBLIC)], "svc", b"%d" % n, epoch=0)
        assert client.send("mix-1", packet)


async def until(condition, timeout_s: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.005)


def only(node: MixNode, reason: str, count: int = 1) -> bool:
    drops = {r: n for r, n in node.drop_counts().items() if n}
    return drops == {reason: count}


async def stop(task: asyncio.Task[None], network: SimNetwork) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await network.close()


async def test_a_next_hop_with_no_address_is_counted_as_unknown_peer() -> None:
    network = SimNetwork(LinkProfile(latency_s=0.0))
    node, task = await mix_on(network)
    await send_through(network, "ghost")  # on no network, in no directory
    await until(lambda: node.received == 1)
    await until(lambda: sum(node.drop_counts().values()) == 1)
    assert only(node, "unknown_peer") and node.sent == 0
    await stop(task, network)


async def test_a_full_send_queue_is_counted_as_queue_full() -> None:
    network = SimNetwork(LinkProfile(latency_s=0.0))
    node, task = await mix_on(network)
    sink = network.transport("slow")
    await sink.listen()
    # One packet fills the mix -> slow wire's queue: 1,200 bytes at 8 kbit/s.
    network.model.set_link("mix-1", "slow", LinkProfile(latency_s=0.0, bandwidth_bps=8000, queue_bytes=1200), both_ways=False)
    await send_through(network, "slow", count=2)
    await until(lambda: node.received == 2 and node.sent + sum(node.drop_counts().values()) == 2)
    assert only(node, "queue_full") and node.sent == 1
    await stop(task, network)


async def test_a_packet_larger_than_the_transports_datagram_is_counted_as_oversize() -> None:
    network = SimNetwork(LinkProfile(latency_s=0.0))
    node, task = await mix_on(network)
    sink = network.transport("sink")
    await sink.listen()
    node.transport.max_packet_bytes = 1000  # a transport whose datagrams are smaller than a packet
    await send_through(network, "sink")
    await until(lambda: sum(node.drop_counts().values()) == 1)
    assert only(node, "oversize") and node.sent == 0
    await stop(task, network)


async def test_a_packet_released_after_the_transport_closed_is_counted_as_transport_closed() -> None:
    network = SimNetwork(LinkProfile(latency_s=0.0))
    node, task = await mix_on(network, mean_delay_s=0.2)
    sink = network.transport("sink")
    await sink.listen()
    await send_through(network, "sink")
    await until(lambda: node.held() == 1)
    await node.transport.close()
    await until(lambda: sum(node.drop_counts().values()) == 1)
    assert only(node, "transport_closed") and node.sent == 0
    await stop(task, network)


async def test_the_drain_counts_each_failure_under_its_reason() -> None:
    network = SimNetwork(LinkProfile(latency_s=0.0))
    node, task = await mix_on(network, mean_delay_s=30.0)
    sink = network.transport("sink")
    await sink.listen()
    await send_through(network, "ghost")
    await send_through(network, "sink")
    await until(lambda: node.held() == 2)
    await node.drain()
    assert only(node, "unknown_peer") and node.sent == 1
    await stop(task, network)


def test_every_send_failure_reason_is_published_and_a_new_error_kind_has_a_fallback() -> None:
    class LinkDownError(TransportError):
        """What a future transport might add."""

    assert send_failure_reason(LinkDownError("down")) == "transport_error"
    assert {"queue_full", "unknown_peer", "oversize", "transport_closed", "transport_error"} <= set(NODE_DROP_REASONS)
