"""The directory service over real HTTP on 127.0.0.1: registration, health, documents, attacks.

Every statement is signed with a real node TLS key (`NodeIdentity`) and every document checked by
`DirectoryClient` against the pinned authority key, as nodes and clients do.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from nyx.directory.agent import DirectoryClient, DirectoryUnavailable, NodeAgent
from nyx.directory.authority import AuthoritySettings, public_bytes
from nyx.directory.document import SignedDocument, TrustPolicy, sign_body
from nyx.directory.records import NodeRecord
from nyx.directory.service import DirectoryService, ServiceSettings
from nyx.directory.statements import Statement, sign_statement
from nyx.transport.certs import NodeIdentity

FAST = AuthoritySettings(heartbeat_interval_s=0.2, period_s=5.0, validity_s=30.0, min_interval_s=0.05)


def record_for(identity: NodeIdentity, layer: int = 1, port: int = 4000) -> NodeRecord:
    return NodeRecord(identity.node_id, "mix", layer, "127.0.0.1", port, identity.fingerprint, {7: bytes(range(32))})


def statement(identity: NodeIdentity, kind: str, at_ms: int | None = None, record: NodeRecord | None = None,
              key_pem: bytes | None = None, subject: str | None = None) -> bytes:
    at_ms = int(time.time() * 1000) if at_ms is None else at_ms
    body = Statement(kind, identity.node_id, at_ms, record=record if kind == "register" else None,
                     certificate_der=identity.certificate_der if kind == "register" else None, subject=subject)
    return sign_statement(body, key_pem or identity.private_key_pem)


class Running:
    def __init__(self, service: DirectoryService, http: aiohttp.ClientSession) -> None:
        self.service, self.http = service, http
        self.policy = TrustPolicy(frozenset({service.authority.public_key}), 1)

    async def post(self, kind: str, body: bytes) -> tuple[int, str]:
        async with self.http.post(f"{self.service.url}/v1/{kind}", data=body) as response:
            return response.status, await response.text()

    async def listed(self) -> list[str]:
        async with DirectoryClient([self.service.url], self.policy) as client:
            await client.refresh()
            assert client.holder.current is not None
            return [r.node_id for r in client.holder.current.nodes]


async def eventually(check: Callable[[], object], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    settings = ServiceSettings(authority=FAST, tick_s=0.05, cache_ttl_s=0.0)
    async with DirectoryService(tmp_path / "dir", settings) as service:
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(service.run())
            async with aiohttp.ClientSession() as http:
                yield Running(service, http)
            task.cancel()


async def test_a_registered_node_is_in_the_next_verified_document_and_found_by_lookup(running: Running) -> None:
    mix = NodeIdentity.generate("mix-1")
    assert (await running.post("register", statement(mix, "register", record=record_for(mix))))[0] == 200
    await eventually(lambda: running.listed())
    assert await running.listed() == ["mix-1"]
    async with DirectoryClient([running.service.url], running.policy) as client:
        found = await client.lookup("mix-1")
    assert found == record_for(mix)
    async with running.http.get(f"{running.service.url}/v1/nodes/mix-1") as response:
        body = await response.json()
    assert body["shard"] == running.service.shard_map.shard_for("mix-1")


async def test_a_node_that_stops_heartbeating_leaves_the_next_document(running: Running) -> None:
    quiet, busy = NodeIdentity.generate("mix-quiet"), NodeIdentity.generate("mix-busy")
    for node in (quiet, busy):
        await running.post("register", statement(node, "register", record=record_for(node)))
    await eventually(lambda: _listed_is(running, ["mix-busy", "mix-quiet"]))
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:  # only busy heartbeats; 3 x 0.2 s of silence takes quiet down
        assert (await running.post("heartbeat", statement(busy, "heartbeat")))[0] == 200
        await asyncio.sleep(0.05)
    await eventually(lambda: _listed_is(running, ["mix-busy"]))


async def _listed_is(running: Running, expected: list[str]) -> bool:
    try:
        return await running.listed() == expected
    except DirectoryUnavailable:
        return False


async def test_a_draining_node_leaves_at_once(running: Running) -> None:
    mix = NodeIdentity.generate("mix-1")
    await running.post("register", statement(mix, "register", record=record_for(mix)))
    await eventually(lambda: _listed_is(running, ["mix-1"]))
    assert (await running.post("drain", statement(mix, "drain")))[0] == 200
    await eventually(lambda: _listed_is(running, []), timeout_s=0.5)  # well inside the 0.6 s silence limit


async def test_forged_and_replayed_statements_are_refused(running: Running) -> None:
    victim, attacker = NodeIdentity.generate("mix-1"), NodeIdentity.generate("mix-evil")
    await running.post("register", statement(victim, "register", record=record_for(victim)))
    await running.post("register", statement(attacker, "register", record=record_for(attacker)))
    now_ms = int(time.time() * 1000)
    # A registration naming the victim's id with the attacker's certificate (a second identity).
    stolen = NodeIdentity("mix-1", attacker.certificate_pem, attacker.private_key_pem)
    status, text = await running.post("register", statement(stolen, "register", record=record_for(stolen)))
    assert status == 403 and "another certificate" in text
    # A record whose fingerprint is not the certificate's (diverting the victim's traffic).
    diverted = NodeRecord("mix-2", "mix", 1, "10.6.6.6", 4000, victim.fingerprint, {7: bytes(32)})
    forged = statement(NodeIdentity("mix-2", attacker.certificate_pem, attacker.private_key_pem), "register",
                       record=diverted)
    status, text = await running.post("register", forged)
    assert status == 403 and "fingerprint" in text
    # A drain of the victim signed by the attacker's key.
    status, text = await running.post("drain", statement(victim, "drain", key_pem=attacker.private_key_pem))
    assert status == 403 and "signature" in text
    # A captured heartbeat, replayed; and an old drain replayed after newer statements.
    heartbeat = statement(victim, "heartbeat", at_ms=now_ms + 10)
    assert (await running.post("heartbeat", heartbeat))[0] == 200
    status, text = await running.post("heartbeat", heartbeat)
    assert status == 403 and "replay" in text
    old_drain = statement(victim, "drain", at_ms=now_ms + 5)
    assert (await running.post("drain", old_drain))[0] == 403
    # Stale (a clock far off, or a statement captured long ago), unregistered, junk, wrong endpoint.
    status, text = await running.post("heartbeat", statement(victim, "heartbeat", at_ms=now_ms - 3_600_000))
    assert status == 400 and "clock" in text
    stranger = NodeIdentity.generate("mix-x")
    status, text = await running.post("heartbeat", statement(stranger, "heartbeat"))
    assert status == 400 and "not registered" in text
    assert (await running.post("heartbeat", b"\x00junk"))[0] == 400
    assert (await running.post("drain", statement(victim, "heartbeat", at_ms=now_ms + 20)))[0] == 400
    async with running.http.post(f"{running.service.url}/v1/register", data=b"x" * 200_000) as response:
        assert response.status == 413
    assert sorted(running.service.authority.registrations) == ["mix-1", "mix-evil"]
    assert running.service.authority.registrations["mix-1"].last_issued_at_ms == now_ms + 10
    assert running.service.authority.refused["replay"] == 2
    assert running.service.authority.refused["signature"] == 1


async def test_a_loop_failure_report_needs_a_quorum_of_reporters(running: Running) -> None:
    nodes = [NodeIdentity.generate(f"mix-{i}") for i in range(4)]
    for node in nodes:
        await running.post("register", statement(node, "register", record=record_for(node)))
    target = nodes[0]
    for _ in range(3):  # one reporter, however often, does not evict
        assert (await running.post("report", statement(nodes[1], "report", subject=target.node_id)))[0] == 200
        await asyncio.sleep(0.002)
    assert (await running.post("report", statement(target, "report", subject=target.node_id)))[0] == 200
    await asyncio.sleep(0.2)
    assert "mix-0" in await running.listed()
    assert (await running.post("report", statement(nodes[2], "report", subject=target.node_id)))[0] == 200
    await eventually(lambda: _listed_is(running, ["mix-1", "mix-2", "mix-3"]), timeout_s=1.0)


async def test_documents_carry_validators_and_answer_if_none_match(running: Running) -> None:
    mix = NodeIdentity.generate("mix-1")
    await running.post("register", statement(mix, "register", record=record_for(mix)))
    await eventually(lambda: _listed_is(running, ["mix-1"]))
    async with running.http.get(f"{running.service.url}/v1/document") as response:
        etag, cache = response.headers["ETag"], response.headers["Cache-Control"]
        raw = await response.read()
    assert cache == "no-cache"  # this fixture runs with cache_ttl_s = 0
    async with running.http.get(f"{running.service.url}/v1/document", headers={"If-None-Match": etag}) as response:
        assert response.status == 304
    epoch = SignedDocument.decode(raw)
    assert epoch.signatures[0][0] == running.service.authority.public_key
    async with running.http.get(f"{running.service.url}/v1/nodes/nobody") as response:
        assert response.status == 404


async def test_a_mirror_serving_a_tampered_document_is_refused_and_the_next_url_used(running: Running) -> None:
    mix = NodeIdentity.generate("mix-1")
    await running.post("register", statement(mix, "register", record=record_for(mix)))
    await eventually(lambda: _listed_is(running, ["mix-1"]))
    async with running.http.get(f"{running.service.url}/v1/document") as response:
        raw = bytearray(await response.read())
    raw[20] ^= 0x01  # one byte of the body
    async def tampered(request: web.Request) -> web.Response:
        return web.Response(body=bytes(raw))

    evil = web.Application()
    evil.router.add_get("/v1/document", tampered)
    runner = web.AppRunner(evil)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    mirror = "http://%s:%d" % runner.addresses[0][:2]
    try:
        async with DirectoryClient([mirror], running.policy) as client:
            with pytest.raises(DirectoryUnavailable, match="refused"):
                await client.refresh()
        async with DirectoryClient([mirror, running.service.url], running.policy) as client:
            body = await client.refresh()
            assert body is not None and [r.node_id for r in body.nodes] == ["mix-1"]
            assert client.rejected == 1
    finally:
        await runner.cleanup()


async def test_metrics_export_the_directory_names(running: Running) -> None:
    mix = NodeIdentity.generate("mix-1")
    await running.post("register", statement(mix, "register", record=record_for(mix)))
    async with running.http.get(f"{running.service.url}/v1/nodes/mix-1") as response:
        assert response.status == 200
    running.service.metrics.publish()
    async with running.http.get(f"{running.service.url}/metrics") as response:
        text = await response.text()
    for name in ("directory_lookup_latency", "directory_rebuild_duration", "directory_epoch", "directory_nodes_registered",
                 "directory_lookups_total", "directory_statements_total"):
        assert name in text
    assert running.service.metrics.value("directory_nodes_registered") == 1


async def test_a_restarted_authority_keeps_its_key_its_pins_and_its_epochs(tmp_path: Path) -> None:
    settings = ServiceSettings(authority=FAST, tick_s=0.05)
    mix, impostor = NodeIdentity.generate("mix-1"), NodeIdentity.generate("mix-1")
    async with aiohttp.ClientSession() as http:
        async with DirectoryService(tmp_path, settings) as first:
            await first.issue(time.time())
            async with http.post(f"{first.url}/v1/register", data=statement(mix, "register", record=record_for(mix))):
                pass
            await first.issue(time.time())
            key, epoch = first.authority.public_key, first.authority.last_epoch
        async with DirectoryService(tmp_path, settings) as second:
            assert second.authority.public_key == key
            assert second.authority.served_epoch == epoch  # served until the next one
            await second.issue(time.time())
            assert second.authority.last_epoch == epoch + 1
            async with http.post(f"{second.url}/v1/register",
                                 data=statement(impostor, "register", record=record_for(impostor))) as response:
                assert response.status == 403


async def test_a_threshold_document_is_served_only_once_cosigned(tmp_path: Path) -> None:
    second_key = Ed25519PrivateKey.generate()
    second = public_bytes(second_key.public_key())
    authority = AuthoritySettings(threshold=2, extra_authorities=frozenset({second}), period_s=5.0, validity_s=30.0,
                                  min_interval_s=0.05)
    async with DirectoryService(tmp_path, ServiceSettings(authority=authority)) as service, aiohttp.ClientSession() as http:
        await service.issue(time.time())
        async with http.get(f"{service.url}/v1/document") as response:
            assert response.status == 503
        epoch = service.authority.last_epoch
        async with http.get(f"{service.url}/v1/document/{epoch}") as response:
            document = SignedDocument.decode(await response.read())
        outsider_pub, outsider_sig = sign_body(document.body_bytes, Ed25519PrivateKey.generate())
        async with http.post(f"{service.url}/v1/document/{epoch}/signatures",
                             json={"authority": outsider_pub.hex(), "signature": outsider_sig.hex()}) as response:
            assert response.status == 400
        pub, sig = sign_body(document.body_bytes, second_key)
        async with http.post(f"{service.url}/v1/document/{epoch}/signatures",
                             json={"authority": pub.hex(), "signature": sig.hex()}) as response:
            assert response.status == 200
        policy = TrustPolicy(frozenset({service.authority.public_key, second}), 2)
        async with DirectoryClient([service.url], policy) as client:
            body = await client.refresh()
        assert body is not None and body.epoch == epoch


async def test_a_node_agent_registers_heartbeats_and_follows_documents(running: Running) -> None:
    mix = NodeIdentity.generate("mix-1")
    record = record_for(mix)
    seen: list[list[str]] = []
    async with DirectoryClient([running.service.url], running.policy) as client:
        agent = NodeAgent(client, mix, lambda: record, lambda d: seen.append(sorted(d.nodes)),
                          heartbeat_interval_s=0.05, refresh_s=0.05)
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(agent.run())
            await eventually(lambda: seen and seen[-1] == ["mix-1"])
            await asyncio.sleep(1.0)  # longer than 3 missed heartbeats: the agent keeps it listed
            assert await running.listed() == ["mix-1"]
            record = NodeRecord("mix-1", "mix", 1, "127.0.0.1", 4000, mix.fingerprint, {7: bytes(32), 8: bytes(32)})
            await eventually(lambda: running.service.authority.registrations["mix-1"].record == record)
            task.cancel()
        await agent.drain()
        await eventually(lambda: _listed_is(running, []))
        assert agent.failures == 0


async def test_a_node_agent_heartbeats_as_often_as_the_service_expects(running: Running) -> None:
    mix = NodeIdentity.generate("mix-1")
    async with DirectoryClient([running.service.url], running.policy) as client:
        agent = NodeAgent(client, mix, lambda: record_for(mix), lambda d: None)  # default: every 3.3 s
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(agent.run())
            await eventually(lambda: agent._registered is not None)
            assert agent.heartbeat_interval_s == pytest.approx(FAST.heartbeat_interval_s / 3)
            await asyncio.sleep(1.0)  # over 3 service intervals: still listed
            assert await running.listed() == ["mix-1"]
            task.cancel()
