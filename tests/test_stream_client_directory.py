"""`nyx.Client` on a verified directory document instead of a file: the nodes of a simulated
mixnet register with a real directory service (HTTP on 127.0.0.1), the client takes the signed
document, echoes through it, and adopts the next document while it runs."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from pathlib import Path

import pytest

from nyx.directory.agent import DirectoryClient, DirectoryUnavailable
from nyx.directory.authority import AuthoritySettings
from nyx.directory.document import TrustPolicy
from nyx.directory.records import NodeRecord
from nyx.directory.service import DirectoryService, ServiceSettings
from nyx.directory.statements import Statement, sign_statement
from nyx.stream.client import Client
from nyx.transport.certs import NodeIdentity
from test_stream_end_to_end_sim import SimNet, run_with_net

SETTINGS = ServiceSettings(
    authority=AuthoritySettings(heartbeat_interval_s=30.0, period_s=5.0, validity_s=60.0, min_interval_s=0.05),
    tick_s=0.05,
)


async def register(service: DirectoryService, record: NodeRecord) -> None:
    identity = NodeIdentity.generate(record.node_id)
    record = dataclasses.replace(record, fingerprint=identity.fingerprint)
    body = sign_statement(
        Statement("register", record.node_id, int(time.time() * 1000), record, identity.certificate_der),
        identity.private_key_pem,
    )
    service.authority.accept(body, time.time(), "register")


async def test_a_client_built_from_a_verified_document_echoes_and_follows_new_documents(tmp_path: Path) -> None:
    async def body(net: SimNet) -> None:
        async with DirectoryService(tmp_path, SETTINGS) as service, asyncio.TaskGroup() as tg:
            issuing = tg.create_task(service.run())
            for record in net.directory.nodes.values():
                await register(service, record)
            await service.issue(time.time())
            policy = TrustPolicy(frozenset({service.authority.public_key}), 1)
            async with DirectoryClient([service.url], policy) as directory:
                client_id = f"c{random.getrandbits(60):015x}"
                client = await Client.from_directory_service(
                    directory, gateway="gw-a", exit="gw-b", transport=net.network.transport(client_id),
                    cover=None, client_id=client_id, directory_refresh_s=0.05,
                )
                async with client:
                    assert sorted(client.directory.nodes) == sorted(net.directory.nodes)
                    reader, writer = await asyncio.wait_for(client.open_connection("echo"), 20)
                    writer.write(b"through a signed directory")
                    await writer.drain()
                    assert await asyncio.wait_for(reader.readexactly(26), 20) == b"through a signed directory"
                    writer.close()
                    extra = NodeRecord("mix-1-9", "mix", 1, "sim", 0, None, {0: bytes(range(32))})
                    await register(service, extra)
                    await asyncio.wait_for(_until(lambda: "mix-1-9" in client.directory.nodes), 5)
                    assert client.directory_updates >= 1
            issuing.cancel()

    await asyncio.wait_for(run_with_net(body), 60)


async def _until(check) -> None:  # type: ignore[no-untyped-def]
    while not check():
        await asyncio.sleep(0.02)


async def test_a_client_refuses_a_directory_signed_by_another_authority(tmp_path: Path) -> None:
    async with DirectoryService(tmp_path, SETTINGS) as service:
        await register(service, NodeRecord("gw-a", "gateway", 0, "sim", 0, None, {0: bytes(range(32))}))
        await service.issue(time.time())
        wrong = TrustPolicy(frozenset({bytes(32)}), 1)
        async with DirectoryClient([service.url], wrong) as directory:
            with pytest.raises(DirectoryUnavailable, match="signature"):
                await Client.from_directory_service(directory, cover=None)
