"""TLS session resumption over real QUIC: a returning client skips the certificate, safely."""

from __future__ import annotations

from dataclasses import replace

import pytest

from nyx.transport.backends import available
from nyx.transport.certs import NodeIdentity
from nyx.transport.quic import PeerAuthenticationError, QuicTransport
from nyx.transport.tickets import ClientTicketCache, ServerTicketStore

BACKENDS = [
    "aioquic",
    pytest.param("qh3", marks=pytest.mark.skipif(not available("qh3"), reason="qh3 not installed")),
]


@pytest.fixture(scope="module")
def identities() -> dict[str, NodeIdentity]:
    return {name: NodeIdentity.generate(name) for name in ("gw", "client", "impostor")}


async def _connect_once(identity: NodeIdentity, cache: ClientTicketCache, backend: str, gateway: QuicTransport) -> None:
    async with QuicTransport("client", identity, backend=backend, client_tickets=cache) as client:
        client.add_peer("gw", gateway.address)
        await client.connect("gw")


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_returning_client_resumes_its_session(backend, identities):
    cache = ClientTicketCache()
    async with QuicTransport("gw", identities["gw"], backend=backend) as gateway:
        await _connect_once(identities["client"], cache, backend, gateway)
        assert gateway.handshakes_resumed == 0
        assert len(cache) == 1  # the gateway issued a ticket over the pinned connection
        await _connect_once(identities["client"], cache, backend, gateway)
        assert gateway.handshakes == 2 and gateway.handshakes_resumed == 1


@pytest.mark.parametrize("backend", BACKENDS)
async def test_resumption_can_be_switched_off(backend, identities):
    cache = ClientTicketCache()
    async with QuicTransport("gw", identities["gw"], backend=backend, resumption=False) as gateway:
        for _ in range(2):
            await _connect_once(identities["client"], cache, backend, gateway)
        assert gateway.handshakes == 2 and gateway.handshakes_resumed == 0 and len(cache) == 0


async def test_an_impostor_cannot_redeem_a_ticket_and_is_refused_by_the_pin(identities):
    cache = ClientTicketCache()
    async with QuicTransport("gw", identities["gw"]) as gateway:
        await _connect_once(identities["client"], cache, "aioquic", gateway)
        pin = gateway.address.fingerprint
    # Another node answers where the client expects "gw": the client offers its ticket, the
    # impostor cannot resume it (it holds no session secret), and the full handshake fails the pin.
    async with QuicTransport("gw", identities["impostor"]) as impostor:
        async with QuicTransport("client", identities["client"], client_tickets=cache) as client:
            client.add_peer("gw", replace(impostor.address, fingerprint=pin))
            with pytest.raises(PeerAuthenticationError):
                await client.connect("gw")
        assert impostor.handshakes_resumed == 0


def test_server_store_is_single_use_and_bounded() -> None:
    class Ticket:
        def __init__(self, label: bytes) -> None:
            self.ticket = label

    store = ServerTicketStore(capacity=2)
    for label in (b"a", b"b", b"c"):
        store.add(Ticket(label))
    assert len(store) == 2 and store.pop(b"a") is None  # the oldest was evicted
    assert store.pop(b"b").ticket == b"b" and store.pop(b"b") is None


def test_client_cache_files_tickets_by_peer_and_pin() -> None:
    cache = ClientTicketCache(capacity=2)
    cache.store("gw", "pin-1", "t1")
    assert cache.take("gw", "pin-2") is None
    assert cache.take("gw", "pin-1") == "t1" and cache.take("gw", "pin-1") is None
