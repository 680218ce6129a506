"""Multipath and route failover end to end: real mix, gateway and client classes over SimTransport
(`nyx.bench.mixnet`: 6 mixes per layer in two regions), with mixes failed under a running stream.
No byte may be lost; failed routes are replaced."""

from __future__ import annotations

import asyncio
import random

from nyx.bench.mixnet import Mixnet, MixnetShape, mixnet
from nyx.stream.client import Client

SHAPE = MixnetShape(mixes_per_layer=6, regions=("eu", "us"), cross_region_s=0.002, mean_delay_s=0.002)


async def run(body) -> None:  # type: ignore[no-untyped-def]
    async with mixnet(SHAPE, seed=5) as net:
        await body(net)


def new_client(net: Mixnet, routes: int) -> Client:
    return net.client(gateway="gw-01", exit="gw-02", routes=routes, rng=random.Random(7))


async def settle(client: Client, dead: set[str], tries: int = 5) -> None:
    """Echo a little until no route holds a dead mix (one no route has tried yet is found only
    by trying it), then check none does."""
    for _ in range(tries):
        (_, forward, replies), = client.route_schedulers()
        if not any(set(r.mixes) & dead for r in forward.active() + replies.active()):
            return
        await echo_while(client, 20_000, lambda: None)
    (_, forward, replies), = client.route_schedulers()
    assert not any(set(r.mixes) & dead for r in forward.active() + replies.active())


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
    async def body(net: Mixnet) -> None:
        async with new_client(net, 5) as client:
            victims: list[str] = []

            def kill_one() -> None:
                session = next(iter(client._sessions.values()))
                assert session.routes is not None and len(session.routes.active()) == 5
                victims.append(session.routes.active()[0].mixes[1])
                net.fail(victims[0])

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
    async def body(net: Mixnet) -> None:
        async with new_client(net, 5) as client:
            dead = [n for n in net.mix_keys if n.startswith("mix-2-") and net.regions[n] == "eu"]

            def kill_region_layer() -> None:
                for node in dead:
                    net.fail(node)

            await echo_while(client, 80_000, kill_region_layer)
            await settle(client, set(dead))

    await asyncio.wait_for(run(body), 90)


async def test_with_multipath_off_a_failure_costs_a_retransmission_never_data() -> None:
    async def body(net: Mixnet) -> None:
        async with new_client(net, 1) as client:
            used: list[tuple[str, ...]] = []

            def kill_the_route() -> None:
                session = next(iter(client._sessions.values()))
                assert session.routes is not None and len(session.routes.active()) == 1
                used.append(session.routes.active()[0].mixes)
                net.fail(used[0][2])

            await echo_while(client, 60_000, kill_the_route)
            session = next(iter(client._sessions.values()))
            assert session.routes is not None and len(session.routes.active()) == 1
            assert session.routes.active()[0].mixes != used[0]
            assert session.core.session is not None and session.core.session._recovery.lost_total + client.records_resent > 0

    await asyncio.wait_for(run(body), 90)


async def test_a_mix_only_on_reply_routes_killed_the_reply_route_is_replaced_and_no_byte_lost() -> None:
    async def body(net: Mixnet) -> None:
        async with new_client(net, 5) as client:
            victims: list[str] = []

            def kill_a_reply_mix() -> None:
                session = next(iter(client._sessions.values()))
                assert session.routes is not None and session.reply_routes is not None
                forward = {m for r in session.routes.active() for m in r.mixes}
                only_replies = [m for r in session.reply_routes.active() for m in r.mixes if m not in forward]
                assert only_replies, "every reply mix is also on a forward route (change the seed)"
                victims.append(only_replies[0])
                net.fail(victims[0])

            await echo_while(client, 120_000, kill_a_reply_mix)
            await settle(client, set(victims))
            (_, _, replies), = client.route_schedulers()
            assert replies.replaced >= 1

    await asyncio.wait_for(run(body), 90)


async def test_low_latency_routes_stay_in_the_entrys_region_and_leave_it_when_it_fails() -> None:
    async def body(net: Mixnet) -> None:
        client = net.client(gateway="gw-01", exit="gw-02", routes=5, low_latency=True, rng=random.Random(3))
        home = net.regions["gw-01"]
        async with client:

            def fail_home_layer_2() -> None:
                (_, forward, replies), = client.route_schedulers()
                assert {net.regions[m] for r in forward.active() + replies.active() for m in r.mixes} == {home}
                for node in [n for n in net.mix_keys if n.startswith("mix-2-") and net.regions[n] == home]:
                    net.fail(node)

            await echo_while(client, 80_000, fail_home_layer_2)
            await settle(client, net.network.model.failed_nodes)
            assert client.metric_values()["latency_cross_region"] > 0  # the exit is in the other region

    await asyncio.wait_for(run(body), 90)
