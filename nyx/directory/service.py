"""The directory service over HTTP (aiohttp): the asyncio shell around `Authority` and `Store`.

    GET  /v1/document                 the newest document with enough signatures (binary, see
                                      document.py), ETag and Cache-Control: any mirror may cache it
    GET  /v1/document/{epoch}         a recent document by epoch (co-signers, mirrors)
    GET  /v1/document/newest          the newest issued document, signed enough or not (co-signers)
    POST /v1/document/{epoch}/signatures   {"authority": hex, "signature": hex}: a co-signature
    GET  /v1/nodes/{node_id}          one record, read from the shard that holds the id
    POST /v1/register | /v1/heartbeat | /v1/drain | /v1/report   a node's signed statement
    GET  /v1/health                   JSON: epoch, nodes listed/registered, document age
    GET  /metrics                     Prometheus text

Caching: documents never change once issued, so `/v1/document/{epoch}` is cacheable for its whole
validity; `/v1/document` and lookups carry `max-age=cache_ttl_s` and an ETag, and answer
`If-None-Match` with 304. A mirror needs no trust: clients verify signatures themselves.
`cache_ttl_s = 0` turns the lookup cache off (every lookup reads the store: SCL-046).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from nyx.directory.authority import Authority, AuthoritySettings
from nyx.directory.document import SignedDocument
from nyx.directory.keys import load_or_create_authority_key
from nyx.directory.probe import PROBER_ID, probe_round
from nyx.directory.records import DirectoryError
from nyx.directory.sharding import ShardMap
from nyx.directory.statements import MAX_STATEMENT_BYTES, StatementError
from nyx.directory.store import DB_FILE, Store
from nyx.telemetry.registry import CONTENT_TYPE, MetricRegistry
from nyx.transport.certs import NodeIdentity

log = logging.getLogger(__name__)

DOCUMENT_TYPE = "application/vnd.nyx.directory-document"
DEFAULT_SHARDS = {"shard-0": None, "shard-1": None, "shard-2": None, "shard-3": None}


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    host: str = "127.0.0.1"
    port: int = 0
    cache_ttl_s: float = 10.0  # max-age of /v1/document and lookups; 0 = no cache anywhere
    shards: tuple[tuple[str, str | None], ...] = tuple(DEFAULT_SHARDS.items())
    authority: AuthoritySettings = AuthoritySettings()
    tick_s: float = 0.5  # how often health expiry is checked for a due document
    probe_interval_s: float = 0.0  # probe every registered node's QUIC address this often; 0 = never
    probe_timeout_s: float = 3.0


class DirectoryService:
    """One authority's directory on host:port. `async with DirectoryService(...)` starts it; the
    issuing loop runs in `run()` (owned by the caller's TaskGroup)."""

    def __init__(self, data_dir: Path, settings: ServiceSettings | None = None, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings or ServiceSettings()
        self.data_dir = data_dir
        self.clock = clock
        self.shard_map = ShardMap(dict(self.settings.shards))
        self.store: Store | None = None
        self.authority: Authority | None = None
        self._runner: web.AppRunner | None = None
        self.host, self.port = self.settings.host, self.settings.port
        self._cache: dict[str, tuple[float, bytes, str]] = {}  # node id -> (expires, body, etag)
        self._changed = asyncio.Event()
        self.metrics = MetricRegistry({"role": "directory"})
        self.metrics.add_source("directory", self._metric_values)
        self.lookups = 0
        self.lookup_misses = 0
        self._lookup_time_s = 0.0
        self._lookup_count = 0
        self.statements = 0
        self.document_requests = 0
        self.not_modified = 0
        self.rebuild_s = 0.0
        self.probes = 0
        self.probes_failed = 0

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = load_or_create_authority_key(self.data_dir)
        started = time.perf_counter()
        self.store = Store(self.data_dir / DB_FILE)
        registrations = await self.store.call(self.store.load_registrations)
        last = await self.store.call(self.store.last_document)
        self.authority = Authority(key, self.settings.authority, registrations, last[0] if last else 0)
        if last is not None:
            self.authority.adopt(last[0], SignedDocument.decode(last[1]))
        # A start is a rebuild from the store (registrations, pins, last epoch): its duration is
        # the catalogue's directory_rebuild_duration for a running service (SCL-011 times the
        # full rebuild with health checks over 4 shards in `python -m nyx.bench`).
        self.rebuild_s = time.perf_counter() - started
        app = web.Application(client_max_size=MAX_STATEMENT_BYTES)
        app.add_routes([
            web.get("/v1/document", self._get_document),
            web.get("/v1/document/newest", self._get_document_newest),
            web.get("/v1/document/{epoch}", self._get_document_epoch),
            web.post("/v1/document/{epoch}/signatures", self._post_signature),
            web.get("/v1/nodes/{node_id}", self._get_node),
            web.post("/v1/register", self._post_statement),
            web.post("/v1/heartbeat", self._post_statement),
            web.post("/v1/drain", self._post_statement),
            web.post("/v1/report", self._post_statement),
            web.get("/v1/health", self._get_health),
            web.get("/metrics", self._get_metrics),
        ])
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.host, self.settings.port, reuse_address=True)
        await site.start()
        self.host, self.port = self._runner.addresses[0][:2]
        log.info("directory on http://%s:%d, authority %s", self.host, self.port, self.authority.public_key.hex())

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.store is not None:
            self.store.close()
            self.store = None

    async def __aenter__(self) -> DirectoryService:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def run(self) -> None:
        """Until cancelled: issue a document whenever one is due, and publish metrics."""
        assert self.authority is not None
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.metrics.run(1.0))
            if self.settings.probe_interval_s > 0:
                tg.create_task(self._probe_loop())
            while True:
                now = self.clock()
                if self.authority.due(now):
                    await self.issue(now)
                self._changed.clear()
                try:
                    await asyncio.wait_for(self._changed.wait(), self.settings.tick_s)
                except TimeoutError:
                    pass

    async def _probe_loop(self) -> None:
        """Until cancelled: probe every registered node once per interval (probe.py); three failed
        probes in a row take a node down (HealthTracker), one success brings it back."""
        assert self.authority is not None
        identity = NodeIdentity.generate(PROBER_ID)
        while True:
            await asyncio.sleep(self.settings.probe_interval_s)
            records = [r.record for r in self.authority.registrations.values()]
            results = await probe_round(records, identity, self.settings.probe_timeout_s)
            now = self.clock()
            for node_id, ok in results.items():
                self.authority.probe(node_id, ok, now)
            self.probes += len(results)
            self.probes_failed += sum(1 for ok in results.values() if not ok)
            if results:
                self._changed.set()

    async def issue(self, now: float) -> None:
        assert self.authority is not None and self.store is not None
        document = self.authority.issue(now)
        await self.store.call(self.store.save_document, self.authority.last_epoch, document.encode())
        log.info("document %d issued: %d nodes", self.authority.last_epoch, len(self.authority.listed(now)))

    # --- handlers --------------------------------------------------------------------------

    def _cache_headers(self, etag: str, max_age_s: float) -> dict[str, str]:
        age = int(max_age_s)
        return {"ETag": etag, "Cache-Control": f"public, max-age={age}" if age > 0 else "no-cache"}

    def _document_response(self, request: web.Request, raw: bytes, epoch: int, max_age_s: float) -> web.Response:
        self.document_requests += 1
        etag = f'"{epoch}-{hashlib.sha256(raw).hexdigest()[:16]}"'
        headers = self._cache_headers(etag, max_age_s)
        if etag in request.headers.get("If-None-Match", ""):
            self.not_modified += 1
            return web.Response(status=304, headers=headers)
        return web.Response(body=raw, content_type=DOCUMENT_TYPE, headers=headers)

    async def _get_document(self, request: web.Request) -> web.Response:
        assert self.authority is not None
        document = self.authority.served()
        if document is None:
            raise web.HTTPServiceUnavailable(text="no document yet: no node has registered, or too few signatures\n")
        return self._document_response(request, document.encode(), self.authority.served_epoch, self.settings.cache_ttl_s)

    async def _get_document_newest(self, request: web.Request) -> web.Response:
        assert self.authority is not None
        document = self.authority.document(self.authority.last_epoch)
        if document is None:
            raise web.HTTPServiceUnavailable(text="no document issued yet\n")
        return self._document_response(request, document.encode(), self.authority.last_epoch, 0)

    async def _get_document_epoch(self, request: web.Request) -> web.Response:
        assert self.authority is not None
        epoch = _int(request.match_info["epoch"], "epoch")
        document = self.authority.document(epoch)
        if document is None:
            raise web.HTTPNotFound(text=f"no document {epoch} here (the last few are kept)\n")
        return self._document_response(request, document.encode(), epoch, self.settings.authority.validity_s)

    async def _post_signature(self, request: web.Request) -> web.Response:
        assert self.authority is not None and self.store is not None
        epoch = _int(request.match_info["epoch"], "epoch")
        try:
            body = await request.json()
            authority, signature = bytes.fromhex(body["authority"]), bytes.fromhex(body["signature"])
        except (ValueError, KeyError, TypeError) as exc:
            raise web.HTTPBadRequest(text='expected JSON {"authority": hex, "signature": hex}\n') from exc
        try:
            document = self.authority.add_signature(epoch, authority, signature, self.clock())
        except DirectoryError as exc:
            raise web.HTTPBadRequest(text=f"{exc}\n") from exc
        await self.store.call(self.store.save_document, epoch, document.encode())
        return web.json_response({"epoch": epoch, "signatures": len(document.signatures)})

    async def _get_node(self, request: web.Request) -> web.Response:
        assert self.store is not None
        started = time.perf_counter()
        node_id = request.match_info["node_id"]
        self.lookups += 1
        ttl = self.settings.cache_ttl_s
        cached = self._cache.get(node_id) if ttl > 0 else None
        if cached is not None and cached[0] > self.clock():
            body, etag = cached[1], cached[2]
        else:
            self.lookup_misses += 1
            shard = self.shard_map.shard_for(node_id)
            record = await self.store.call(self.store.lookup, shard, node_id)
            if record is None:
                self._observe_lookup(started)
                raise web.HTTPNotFound(text=f"no node {node_id!r}\n")
            body = json.dumps({"shard": shard, "record": json.loads(record)}, sort_keys=True).encode()
            etag = f'"{hashlib.sha256(body).hexdigest()[:16]}"'
            if ttl > 0:
                if len(self._cache) >= 100_000:
                    self._cache.clear()  # bounded: an id flood costs a refill, not memory
                self._cache[node_id] = (self.clock() + ttl, body, etag)
        self._observe_lookup(started)
        headers = self._cache_headers(etag, ttl)
        if etag in request.headers.get("If-None-Match", ""):
            return web.Response(status=304, headers=headers)
        return web.Response(body=body, content_type="application/json", headers=headers)

    def _observe_lookup(self, started: float) -> None:
        self._lookup_time_s += time.perf_counter() - started
        self._lookup_count += 1

    async def _post_statement(self, request: web.Request) -> web.Response:
        assert self.authority is not None and self.store is not None
        kind = request.path.rsplit("/", 1)[-1]
        body = await request.read()
        self.statements += 1
        try:
            statement = self.authority.accept(body, self.clock(), kind)
        except StatementError as exc:
            status = web.HTTPForbidden if exc.reason in ("signature", "certificate", "replay") else web.HTTPBadRequest
            raise status(text=f"{exc}\n") from exc
        registration = self.authority.registrations[statement.node_id]
        if statement.kind == "register":
            await self.store.call(self.store.save_registration, self.shard_map.shard_for(statement.node_id), registration)
            self._cache.pop(statement.node_id, None)
        else:
            await self.store.call(self.store.touch, statement.node_id, registration.last_issued_at_ms)
        self._changed.set()
        return web.json_response({"accepted": statement.kind, "epoch": self.authority.last_epoch,
                                  "heartbeat_s": self.settings.authority.heartbeat_interval_s})

    async def _get_health(self, request: web.Request) -> web.Response:
        assert self.authority is not None
        now = self.clock()
        return web.json_response({
            "status": "ok" if self.authority.served() is not None else "no document",
            "epoch": self.authority.served_epoch,
            "authority": self.authority.public_key.hex(),
            "registered": len(self.authority.registrations),
            "listed": len(self.authority.listed(now)),
        })

    async def _get_metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE})

    def _metric_values(self) -> dict[str, float]:
        assert self.authority is not None
        mean = self._lookup_time_s / self._lookup_count if self._lookup_count else 0.0
        self._lookup_time_s, self._lookup_count = 0.0, 0
        return {
            "directory_lookup_latency": mean,
            "directory_rebuild_duration": self.rebuild_s,
            "directory_epoch": self.authority.served_epoch,
            "directory_nodes_registered": len(self.authority.registrations),
            "directory_nodes_listed": self.authority.served_nodes,
            "directory_lookups_total": self.lookups,
            "directory_statements_total": self.statements,
            "directory_statements_refused_total": sum(self.authority.refused.values()),
        }


def _int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise web.HTTPBadRequest(text=f"{what}: expected an integer\n") from None
