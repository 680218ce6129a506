"""The entry gateway over real QUIC on 127.0.0.1, attacked from outside: a flood of client
handshakes from one address is rationed (the over-limit client gets a refusal it can read, as
`GatewayRefusedError`), and a datagram that is not a Sphinx packet is a counted drop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from nyx.crypto.suites import Suite
from nyx.mix.directory import Directory, NodeRecord
from nyx.mix.keys import KeyRing
from nyx.stream.client import Client, GatewayRefusedError
from nyx.stream.client_admission import ClientAdmission
from nyx.stream.entry_wire import RefusalReason
from nyx.stream.gateway import Gateway, build_gateway
from nyx.stream.handshake import Responder
from nyx.stream.services import ExitServices
from nyx.stream.socks import ConnectFailure
from nyx.transport.certs import NodeIdentity
from nyx.transport.quic import QuicTransport

BACKENDS = ["aioquic", "qh3"]


@contextlib.asynccontextmanager
async def lone_gateway(backend: str, rate_per_min: float) -> AsyncIterator[tuple[Gateway, Directory]]:
    """One real gateway on QUIC; the directory also lists three mixes that never answer (the
    refusal happens before any packet would reach them)."""
    transport = QuicTransport("gw-1", NodeIdentity.generate("gw-1"), backend=backend)
    address = await transport.listen()
    sphinx = X25519PrivateKey.generate()
    static, public = Suite.HYBRID.kem().generate()
    mixes = [
        NodeRecord(f"mix-{layer}", "mix", layer, "127.0.0.1", 9, "00" * 32,
                   {0: X25519PrivateKey.generate().public_key().public_bytes_raw()})
        for layer in (1, 2, 3)
    ]
    me = NodeRecord("gw-1", "gateway", 0, address.host, address.port, address.fingerprint,
                    {0: sphinx.public_key().public_bytes_raw()}, stream_keys={"hybrid": public})
    directory = Directory.of([*mixes, me])
    gateway = build_gateway("gw-1", transport, KeyRing.single(sphinx), Responder({Suite.HYBRID: static}),
                            ExitServices().serve, directory.nodes.__contains__,
                            admission=ClientAdmission(rate_per_min))
    task = asyncio.create_task(gateway.run())
    try:
        yield gateway, directory
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await transport.close()


def client_of(directory: Directory, backend: str) -> Client:
    def transport(client_id: str) -> QuicTransport:
        return QuicTransport(client_id, NodeIdentity.generate(client_id), backend=backend)

    return Client(directory, gateway="gw-1", exit="gw-1", transport=transport, cover=None, resend_s=0.3, max_tries=3)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_client_handshakes_beyond_the_rate_get_a_refusal_they_can_read(backend: str) -> None:
    async with lone_gateway(backend, rate_per_min=2) as (gateway, directory):
        outcomes: list[BaseException | None] = []
        for _ in range(4):
            async with client_of(directory, backend) as client:
                try:
                    await asyncio.wait_for(client.open_connection("echo"), 5)
                    outcomes.append(None)
                except Exception as exc:  # the admitted ones time out: the mixes never answer
                    outcomes.append(exc)
        refused = [o for o in outcomes if isinstance(o, GatewayRefusedError)]
        assert len(refused) == 2, outcomes  # a burst of two admitted, then refusals
        assert all(r.refusal.reason is RefusalReason.RATE_LIMITED for r in refused)
        assert all(r.connect_failure is ConnectFailure.RATE_LIMITED for r in refused)
        assert "per minute" in str(refused[0])
        assert gateway.admission.refused == 2 and gateway.admission.admitted == 2
        assert gateway.counts["clients_refused_rate_limited"] == 2
        assert gateway.drops["client_refused"] >= 2


@pytest.mark.parametrize("backend", BACKENDS)
async def test_junk_datagrams_from_a_client_are_counted_drops(backend: str) -> None:
    async with lone_gateway(backend, rate_per_min=30) as (gateway, directory):
        attacker = QuicTransport("attacker-000001", NodeIdentity.generate("attacker-000001"), backend=backend)
        await attacker.listen()
        gw = directory.nodes["gw-1"]
        attacker.add_peer("gw-1", gw.address())
        try:
            await attacker.connect("gw-1")
            for size in (1, 100, 1167):
                attacker.send("gw-1", bytes(size))
            attacker.send("gw-1", bytes(1168))  # the right size, but no key of ours opens it
            for _ in range(100):
                if gateway.drops["not_a_packet"] == 3 and sum(gateway.node.core.drops.values()) == 1:
                    break
                await asyncio.sleep(0.02)
            assert gateway.drops["not_a_packet"] == 3
            assert sum(gateway.node.core.drops.values()) == 1  # the mix core's drop (epoch/mac)
            assert gateway.exit.sessions_opened == 0
        finally:
            await attacker.close()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_client_that_never_names_itself_cannot_skip_the_handshake_limit(backend: str) -> None:
    """The endpoint labels datagrams of a connection that has not said hello `?host:port`
    (docs/transport.md); the gateway drops them unprocessed, else a client could dodge the
    per-address limit by never naming itself. (Our transports always say hello, so the handler
    is driven here as the endpoint would drive it.)"""
    async with lone_gateway(backend, rate_per_min=30) as (gateway, _):
        for _ in range(3):
            gateway._on_packet("?127.0.0.1:50000", bytes(1168))
        assert gateway.drops["before_hello"] == 3
        assert sum(gateway.node.core.drops.values()) == 0 and gateway.node.received == 0  # no Sphinx work
        assert gateway.admission.admitted == 0
