"""Health probes over real QUIC on 127.0.0.1: a node that heartbeats but cannot be reached where
its record says leaves the document."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from nyx.directory.authority import AuthoritySettings
from nyx.directory.probe import probe_round
from nyx.directory.records import NodeRecord
from nyx.directory.service import DirectoryService, ServiceSettings
from nyx.directory.statements import Statement, sign_statement
from nyx.transport.certs import NodeIdentity
from nyx.transport.quic import QuicTransport

PROBER = NodeIdentity.generate("directory-probe")


def record_at(identity: NodeIdentity, port: int, fingerprint: str | None = None) -> NodeRecord:
    return NodeRecord(identity.node_id, "mix", 1, "127.0.0.1", port, fingerprint or identity.fingerprint, {1: bytes(32)})


async def test_a_probe_succeeds_only_with_the_pinned_certificate_at_the_advertised_address() -> None:
    honest, other = NodeIdentity.generate("mix-1"), NodeIdentity.generate("mix-2")
    node = QuicTransport("mix-1", honest)
    address = await node.listen()
    try:
        results = await probe_round(
            [record_at(honest, address.port),
             record_at(other, address.port),  # someone else's record pointing at this listener
             NodeRecord("mix-3", "mix", 1, "127.0.0.1", 9, other.fingerprint, {})],  # nothing listens
            PROBER, timeout_s=1.0)
    finally:
        await node.close()
    assert results == {"mix-1": True, "mix-2": False, "mix-3": False}


async def test_a_node_that_heartbeats_but_cannot_be_reached_leaves_the_document(tmp_path: Path) -> None:
    identity = NodeIdentity.generate("mix-1")
    node = QuicTransport("mix-1", identity)
    address = await node.listen()
    settings = ServiceSettings(
        authority=AuthoritySettings(heartbeat_interval_s=60.0, period_s=5.0, validity_s=30.0, min_interval_s=0.05),
        tick_s=0.05, probe_interval_s=0.2, probe_timeout_s=0.5)
    async with DirectoryService(tmp_path, settings) as service, asyncio.TaskGroup() as tg:
        task = tg.create_task(service.run())
        body = sign_statement(Statement("register", "mix-1", int(time.time() * 1000), record_at(identity, address.port),
                                        identity.certificate_der), identity.private_key_pem)
        service.authority.accept(body, time.time(), "register")
        await asyncio.sleep(1.0)
        assert service.probes >= 2 and service.probes_failed == 0
        assert [r.node_id for r in service.authority.listed(time.time())] == ["mix-1"]
        await node.close()  # the process heartbeats on, but nobody can reach it any more
        deadline = time.monotonic() + 10
        while service.authority.listed(time.time()) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert service.authority.listed(time.time()) == []
        assert service.authority.health.status("mix-1", time.time()).state == "down"
        task.cancel()
