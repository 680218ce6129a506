"""Talking to a directory service: fetch and verify documents, and a node's registration loop.

`DirectoryClient` fetches `/v1/document` from any of several URLs (authorities or untrusted
mirrors: the document is verified here, so the server is trusted for availability only) and keeps
the newest verified document in a `DocumentHolder` (no rollback, no equivocation). A conditional
GET (`If-None-Match`) makes an unchanged document cost one small response.

`NodeAgent` is what `python -m nyx.mix` and the gateway run beside their node: register the node's
record, heartbeat, register again when the record changes (a mix's next-epoch key), drain on
shutdown, and hand each newer verified document to the node.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp

from nyx.directory.document import DocumentBody, DocumentHolder, DocumentRejected, TrustPolicy
from nyx.directory.records import Directory, DirectoryError, NodeRecord
from nyx.directory.statements import Statement, sign_statement
from nyx.transport.certs import NodeIdentity

log = logging.getLogger(__name__)

TIMEOUT_S = 10.0


class DirectoryUnavailable(DirectoryError):
    """No directory URL answered with a document that verifies; the message lists what each said."""


class DirectoryClient:
    """Documents from `urls`, verified against `policy`. Use as an async context manager (it owns
    an aiohttp session)."""

    def __init__(self, urls: Sequence[str], policy: TrustPolicy, clock: Callable[[], float] = time.time) -> None:
        if not urls:
            raise DirectoryError("a directory client needs at least one URL")
        self.urls = [u.rstrip("/") for u in urls]
        self.holder = DocumentHolder(policy)
        self.clock = clock
        self._etags: dict[str, str] = {}
        self._session: aiohttp.ClientSession | None = None
        self.rejected = 0

    async def __aenter__(self) -> DirectoryClient:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_S))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("use DirectoryClient as `async with`")
        return self._session

    async def refresh(self) -> DocumentBody | None:
        """Ask each URL in turn until one gives a document; the newer verified body, or None when
        nothing newer exists. Raises DirectoryUnavailable if no URL answered usefully and no
        document is held yet."""
        problems = []
        for url in self.urls:
            headers = {"If-None-Match": self._etags[url]} if url in self._etags and self.holder.current else {}
            try:
                async with self.session.get(f"{url}/v1/document", headers=headers) as response:
                    if response.status == 304:
                        return None
                    if response.status != 200:
                        problems.append(f"{url}: HTTP {response.status} {(await response.text())[:200].strip()}")
                        continue
                    raw = await response.read()
                    etag = response.headers.get("ETag")
            except (aiohttp.ClientError, TimeoutError) as exc:
                problems.append(f"{url}: {exc or type(exc).__name__}")
                continue
            try:
                body = self.holder.offer(raw, self.clock())
            except DocumentRejected as exc:
                self.rejected += 1
                problems.append(f"{url}: document refused: {exc}")
                log.warning("directory %s served a document we refuse: %s", url, exc)
                continue
            if etag:
                self._etags[url] = etag
            return body
        if self.holder.current is None:
            raise DirectoryUnavailable("no usable directory document: " + "; ".join(problems))
        for problem in problems:
            log.warning("directory refresh: %s", problem)
        return None

    async def lookup(self, node_id: str) -> NodeRecord:
        """One record by id, from the first URL that has it. For operators and tools: route
        selection must use the whole verified document (docs/directory.md), never lookups."""
        problems = []
        for url in self.urls:
            try:
                async with self.session.get(f"{url}/v1/nodes/{node_id}") as response:
                    if response.status != 200:
                        problems.append(f"{url}: HTTP {response.status}")
                        continue
                    body = await response.json()
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                problems.append(f"{url}: {exc or type(exc).__name__}")
                continue
            return NodeRecord.from_json(body.get("record"), "lookup")
        raise DirectoryUnavailable(f"lookup of {node_id!r} failed: " + "; ".join(problems))

    async def post(self, kind: str, body: bytes) -> dict[str, Any]:
        """Post a signed statement to every URL that is an authority; raise if none accepted it.
        Returns the first acceptance (it names the service's heartbeat interval)."""
        problems = []
        accepted: list[dict[str, Any]] = []
        for url in self.urls:
            try:
                async with self.session.post(f"{url}/v1/{kind}", data=body) as response:
                    if response.status == 200:
                        answer = await response.json()
                        accepted.append(answer if isinstance(answer, dict) else {})
                    else:
                        problems.append(f"{url}: HTTP {response.status} {(await response.text())[:300].strip()}")
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                problems.append(f"{url}: {exc or type(exc).__name__}")
        if not accepted:
            raise DirectoryUnavailable(f"{kind} not accepted: " + "; ".join(problems))
        return accepted[0]


class NodeAgent:
    """A node's side of the directory: register, heartbeat, follow documents, drain."""

    def __init__(
        self,
        client: DirectoryClient,
        identity: NodeIdentity,
        record: Callable[[], NodeRecord],
        on_directory: Callable[[Directory], None],
        heartbeat_interval_s: float = 10.0 / 3,
        refresh_s: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.identity = identity
        self.record = record
        self.on_directory = on_directory
        self.heartbeat_interval_s = heartbeat_interval_s
        self.refresh_s = refresh_s
        self.clock = clock
        self._registered: NodeRecord | None = None
        self._last_ms = 0
        self.failures = 0

    def _statement(self, kind: str, record: NodeRecord | None = None, subject: str | None = None) -> bytes:
        # Strictly increasing times: two statements in one millisecond must not look like a replay.
        self._last_ms = max(self._last_ms + 1, int(self.clock() * 1000))
        statement = Statement(
            kind,
            self.identity.node_id,
            self._last_ms,
            record=record,
            certificate_der=self.identity.certificate_der if kind == "register" else None,
            subject=subject,
        )
        return sign_statement(statement, self.identity.private_key_pem)

    async def register(self) -> None:
        record = self.record()
        answer = await self.client.post("register", self._statement("register", record))
        self._registered = record
        service_s = answer.get("heartbeat_s")
        if isinstance(service_s, (int, float)) and service_s > 0 and self.heartbeat_interval_s > service_s / 3:
            # Three heartbeats per service interval: one lost heartbeat never takes the node down.
            log.info("directory expects heartbeats every %.2f s: heartbeating every %.2f s", service_s, service_s / 3)
            self.heartbeat_interval_s = service_s / 3

    async def heartbeat(self) -> None:
        if self.record() != self._registered:
            await self.register()  # the record changed (a new epoch key): publish it
        else:
            await self.client.post("heartbeat", self._statement("heartbeat"))

    async def drain(self) -> None:
        """Leave the next document at once (called when the node starts draining). Cancel `run`
        first: a heartbeat sent a heartbeat interval after the drain brings the node back (that is
        how a restarted node returns, docs/directory.md "Health")."""
        await self.client.post("drain", self._statement("drain"))

    async def report_loop_failure(self, subject: str) -> None:
        await self.client.post("report", self._statement("report", subject=subject))

    async def refresh(self) -> None:
        body = await self.client.refresh()
        if body is not None:
            self.on_directory(body.directory())

    async def run(self) -> None:
        """Until cancelled: keep the registration alive and follow documents. Failures are logged
        and retried (a directory restart must not take nodes down)."""
        next_heartbeat = next_refresh = 0.0
        while True:
            now = time.monotonic()
            try:
                if now >= next_heartbeat:
                    next_heartbeat = now + self.heartbeat_interval_s  # a failure waits one interval
                    await (self.heartbeat() if self._registered is not None else self.register())
                    next_heartbeat = now + self.heartbeat_interval_s  # registering may have shortened it
                if now >= next_refresh:
                    next_refresh = now + self.refresh_s
                    await self.refresh()
            except DirectoryError as exc:
                self.failures += 1
                if "not registered" in str(exc):
                    self._registered = None  # the directory lost us (an operator removed us): register again
                log.warning("directory: %s", exc)
            await asyncio.sleep(max(0.05, min(next_heartbeat, next_refresh) - time.monotonic()))
