"""The node runtime over `SimTransport`: the same node program, no sockets (as benchmarks run it)."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from nyx.mix import Hop, KeyRing, MixCore, PoissonDelay, create_packet
from nyx.mix.node import MixNode
from nyx.node import EXIT_OK, NodeRuntime, parse_config
from nyx.node.runtime import EXIT_INTERRUPTED, Service
from nyx.transport import LinkProfile, SimNetwork, Transport


def mix_service(key: X25519PrivateKey, mean_delay_s: float, started: asyncio.Event) -> Service:
    """A mix service shaped like `nyx.mix.__main__.make_service`: a `MixCore` behind a `MixNode`
    on the runtime's transport, its drain hook registered, serving until cancelled."""

    async def service(runtime: NodeRuntime) -> None:
        core = MixCore(KeyRing.single(key), delay=PoissonDelay(mean_delay_s, random.Random(1)), replay_capacity=4096)
        node = MixNode(core, runtime.transport)
        runtime.on_drain(node.drain)
        runtime.registry.add_source("mix-held", lambda: {"mix_held": float(node.held())})
        started.set()
        await node.run()

    return service


async def test_a_mix_runtime_over_simtransport_forwards_and_drains_every_held_packet(tmp_path: Path) -> None:
    network = SimNetwork(LinkProfile(latency_s=0.001), seed=5)
    config = parse_config({"node_id": "mix-1", "role": "mix", "data_dir": str(tmp_path), "metrics": {"port": -1}})
    transport = network.transport("mix-1")
    runtime = NodeRuntime(config, transport)
    assert runtime.transport is transport and isinstance(runtime.transport, Transport)
    assert not (tmp_path / "node.key").exists()  # no TLS identity for a simulated node

    client, next_hop = network.transport("client"), network.transport("next")
    await client.listen()
    await next_hop.listen()
    got: list[bytes] = []
    next_hop.set_handler(lambda peer, packet: got.append(packet))
    key = X25519PrivateKey.generate()
    public = key.public_key().public_bytes_raw()
    route = [Hop("mix-1", public), Hop("next", public)]
    started = asyncio.Event()

    async with asyncio.TaskGroup() as tg:
        # a mean delay of a minute: nothing leaves before the drain flushes it
        run = tg.create_task(runtime.run(mix_service(key, 60.0, started), handle_signals=False))
        await asyncio.wait_for(started.wait(), 5)
        assert runtime.address is not None and runtime.address.host == "sim"
        for n in range(25):
            client.send("mix-1", create_packet(route, "svc", b"held %d" % n, epoch=0)[1])
        await asyncio.sleep(0.05)
        assert not got and transport.stats("client").received == 25
        runtime.stop(drain=True)
        assert await asyncio.wait_for(run, 10) == EXIT_OK

    await asyncio.sleep(0.05)  # the sim wire's 1 ms latency
    assert len(got) == 25
    assert runtime.draining and runtime.health() == (False, "draining")
    await network.close()


async def test_runtime_takes_a_transport_factory_and_stops_without_draining(tmp_path: Path) -> None:
    network = SimNetwork(LinkProfile(latency_s=0.001), seed=6)
    config = parse_config({"node_id": "n-1", "data_dir": str(tmp_path), "metrics": {"port": -1}})
    runtime = NodeRuntime(config, lambda cfg: network.transport(cfg.node_id))
    assert runtime.transport.node_id == "n-1"

    async def idle(rt: NodeRuntime) -> None:
        await asyncio.Event().wait()

    async with asyncio.TaskGroup() as tg:
        run = tg.create_task(runtime.run(idle, handle_signals=False))
        while runtime.address is None:
            await asyncio.sleep(0.001)
        runtime.stop(drain=False)
        assert await asyncio.wait_for(run, 5) == EXIT_INTERRUPTED
    assert not runtime.draining
    await network.close()


async def test_the_default_transport_has_nothing_to_drain() -> None:
    network = SimNetwork(LinkProfile(latency_s=0.001), seed=7)
    transport = network.transport("x")
    await transport.listen()
    assert await transport.drain(0.0) is True  # the interface's default: nothing held back
    await transport.close()
    await network.close()
