"""Sending back on inbound connections: a gateway reaches its clients, which are in no directory,
over the connections they opened to it (real QUIC on 127.0.0.1, both backends)."""

from __future__ import annotations

import logging
import secrets

import pytest

from nyx.transport import LinkProfile, SimNetwork, TransportClosedError, UnknownPeerError
from nyx.transport.backends import available
from nyx.transport.certs import NodeIdentity
from nyx.transport.link import LinkPhase
from nyx.transport.quic import QuicTransport
from tests.quic_pacing import until

BACKENDS = [
    "aioquic",
    pytest.param("qh3", marks=pytest.mark.skipif(not available("qh3"), reason="qh3 not installed")),
]
GW = "gw"


@pytest.fixture(scope="module")
def identities() -> dict[str, NodeIdentity]:
    return {name: NodeIdentity.generate(name) for name in (GW, "client", "mix")}


async def _client(gateway: QuicTransport, client_id: str, identity: NodeIdentity, backend: str,
                  inbox: list[bytes]) -> QuicTransport:
    """A client: listens on port 0 (it must, to have a socket), connects to the gateway and says
    something, then waits until the gateway holds its label on this very connection."""
    client = QuicTransport(client_id, identity, backend=backend)
    await client.listen()
    client.set_handler(lambda peer, packet: inbox.append(packet) if peer == GW else None)
    client.add_peer(GW, gateway.address)
    await client.connect(GW)
    assert client.send(GW, b"hello gateway")
    assert await until(lambda: gateway.inbound_source(client_id) == ("127.0.0.1", client.port))
    return client


@pytest.mark.parametrize("backend", BACKENDS)
async def test_gateway_sends_back_to_its_client_until_the_client_goes(backend, identities):
    client_id = secrets.token_hex(16)
    heard: list[tuple[str, bytes]] = []
    inbox: list[bytes] = []
    async with QuicTransport(GW, identities[GW], backend=backend) as gateway:
        gateway.set_handler(lambda peer, packet: heard.append((peer, packet)))
        client = await _client(gateway, client_id, identities["client"], backend, inbox)
        assert await until(lambda: (client_id, b"hello gateway") in heard)
        for i in range(50):
            assert gateway.send(client_id, b"reply-%d" % i)
        await gateway.send_wait(client_id, b"last")
        assert await until(lambda: len(inbox) == 51)
        assert inbox == [b"reply-%d" % i for i in range(50)] + [b"last"]
        stats = gateway.stats(client_id)
        assert (stats.sent, stats.received, stats.dropped) == (51, 1, 0)
        assert stats.rtt_s is not None and stats.rtt_s > 0
        assert gateway.link_phase(client_id) is LinkPhase.DOWN  # no outbound link was opened
        assert await gateway.drain(1.0)

        with pytest.raises(UnknownPeerError):
            gateway.send(secrets.token_hex(16), b"never seen")
        with pytest.raises(UnknownPeerError):
            await gateway.wait_writable(secrets.token_hex(16))
        unlabelled = next(peer for peer in gateway.peers() if peer.startswith("?"))  # pre-hello bucket
        with pytest.raises(UnknownPeerError):
            gateway.send(unlabelled, b"not a name anyone claimed")

        await client.close()  # CONNECTION_CLOSE: the gateway forgets the label once it terminates
        assert await until(lambda: gateway.inbound_source(client_id) is None)
        with pytest.raises(UnknownPeerError):
            gateway.send(client_id, b"gone")
    with pytest.raises(TransportClosedError):
        gateway.send(client_id, b"closed")


@pytest.mark.parametrize("backend", BACKENDS)
async def test_reconnecting_client_takes_its_label_from_the_old_connection(backend, identities):
    client_id = secrets.token_hex(16)
    heard: list[tuple[str, bytes]] = []
    old_inbox: list[bytes] = []
    new_inbox: list[bytes] = []
    async with QuicTransport(GW, identities[GW], backend=backend) as gateway:
        gateway.set_handler(lambda peer, packet: heard.append((peer, packet)))
        old = await _client(gateway, client_id, identities["client"], backend, old_inbox)
        try:
            # the old transport is still up (its connection has not timed out): the newest wins
            new = await _client(gateway, client_id, identities["client"], backend, new_inbox)
            try:
                for i in range(10):
                    assert gateway.send(client_id, b"to-%d" % i)
                assert await until(lambda: len(new_inbox) == 10)
                assert old_inbox == []
                old.send(GW, b"from the old connection")  # still received, under the same label
                assert await until(lambda: (client_id, b"from the old connection") in heard)
                assert gateway.stats(client_id).received == 3
            finally:
                await new.close()
            # the label holder ended: the label is free, even though the old connection lives
            assert await until(lambda: gateway.inbound_source(client_id) is None)
            with pytest.raises(UnknownPeerError):
                gateway.send(client_id, b"nobody holds it")
        finally:
            await old.close()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_sends_beyond_the_bound_are_counted_drops(backend, identities):
    client_id = secrets.token_hex(16)
    inbox: list[bytes] = []
    async with QuicTransport(GW, identities[GW], backend=backend, queue_packets=4) as gateway:
        client = await _client(gateway, client_id, identities["client"], backend, inbox)
        try:
            burst = [gateway.send(client_id, b"burst-%d" % i) for i in range(20)]  # one loop turn
            assert burst == [True] * 4 + [False] * 16
            assert gateway.stats(client_id).dropped == 16
            assert not gateway.send_if_room(client_id, b"x")
            assert gateway.stats(client_id).dropped == 16  # send_if_room refuses without counting
            await gateway.wait_writable(client_id)  # the flush handed the burst on
            assert gateway.send_if_room(client_id, b"after the flush")
            for i in range(300):  # backpressure instead of drops
                await gateway.send_wait(client_id, b"waited-%d" % i)
            assert await until(lambda: len(inbox) == 4 + 1 + 300)
            assert inbox[-300:] == [b"waited-%d" % i for i in range(300)]
            assert gateway.stats(client_id).dropped == 16
        finally:
            await client.close()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_inbound_source_and_close_inbound(backend, identities, caplog):
    caplog.set_level(logging.INFO, logger="nyx.transport.quic")
    client_id = secrets.token_hex(16)
    inbox: list[bytes] = []
    async with QuicTransport(GW, identities[GW], backend=backend) as gateway:
        assert gateway.inbound_source(client_id) is None
        assert not gateway.close_inbound(client_id, "nothing to close")
        client = await _client(gateway, client_id, identities["client"], backend, inbox)
        try:
            assert gateway.inbound_source(client_id) == ("127.0.0.1", client.port)
            assert gateway.close_inbound(client_id, "rate limited")
            assert gateway.inbound_source(client_id) is None  # free at once
            assert not gateway.close_inbound(client_id, "again")
            with pytest.raises(UnknownPeerError):
                gateway.send(client_id, b"shed")
            with pytest.raises(UnknownPeerError):
                await gateway.wait_writable(client_id)
            # the client hears the reason, and its next send reconnects and reclaims the label
            assert await until(lambda: client.link_phase(GW) is not LinkPhase.UP)
            assert any("rate limited" in r.getMessage() for r in caplog.records)
            client.send(GW, b"back")
            assert await until(lambda: gateway.inbound_source(client_id) is not None)
            assert gateway.send(client_id, b"welcome back")
            assert await until(lambda: inbox == [b"welcome back"])
        finally:
            await client.close()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_directory_peer_is_sent_to_over_its_outbound_link(backend, identities):
    heard_by_mix: list[bytes] = []
    async with QuicTransport(GW, identities[GW], backend=backend) as gateway, QuicTransport(
        "mix", identities["mix"], backend=backend
    ) as mix:
        gateway.set_handler(lambda peer, packet: None)
        mix.set_handler(lambda peer, packet: heard_by_mix.append(packet) if peer == GW else None)
        mix.add_peer(GW, gateway.address)
        await mix.connect(GW)
        mix.send(GW, b"hi")
        assert await until(lambda: gateway.inbound_source("mix") is not None)
        gateway.add_peer("mix", mix.address)  # in the directory: never over the inbound connection
        for i in range(20):
            assert gateway.send("mix", b"over-the-link-%d" % i)
        assert await until(lambda: len(heard_by_mix) == 20)
        assert gateway.link_phase("mix") is LinkPhase.UP
        assert gateway.endpoint.stats_in["mix"].sent == 0  # the inbound connection carried none
        assert mix.endpoint.stats_in[GW].received == 20  # they came in on the gateway's own link
        assert gateway.stats("mix").sent == 20


async def test_sim_gateway_reaches_a_client_that_contacted_it_as_over_quic():
    net = SimNetwork(LinkProfile(latency_s=0.0), seed=0)
    gateway = net.transport(GW)
    await gateway.listen()
    gateway.set_handler(lambda peer, packet: None)
    client_id = secrets.token_hex(16)
    inbox: list[bytes] = []

    async def attach():
        client = net.transport(client_id)
        await client.listen()
        client.set_handler(lambda peer, packet: inbox.append(packet))
        client.send(GW, b"hello")
        assert await until(lambda: gateway.inbound_source(client_id) == (f"sim/{client_id}", 0))
        return client

    client = await attach()
    assert gateway.send(client_id, b"reply")  # no add_peer: the client contacted the gateway
    assert await until(lambda: inbox == [b"reply"])
    assert gateway.close_inbound(client_id, "rate limited")
    assert not gateway.close_inbound(client_id, "again")
    assert gateway.inbound_source(client_id) is None
    with pytest.raises(UnknownPeerError):
        gateway.send(client_id, b"shed")
    client.send(GW, b"back")  # sending again "reconnects"
    assert await until(lambda: gateway.inbound_source(client_id) is not None)
    assert gateway.send(client_id, b"welcome back")
    await client.close()
    assert gateway.inbound_source(client_id) is None
    with pytest.raises(UnknownPeerError):
        gateway.send(client_id, b"gone")
    await attach()  # a new transport under the same id
    assert gateway.send(client_id, b"to the new one")
    assert await until(lambda: inbox[-1] == b"to the new one")
    await net.close()
