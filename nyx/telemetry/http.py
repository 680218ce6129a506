"""A small asyncio HTTP endpoint for `/metrics` (Prometheus text) and `/healthz`.

Deliberately minimal: GET only, one request per connection, bounded request size and time, so a
misbehaving scraper cannot hold resources. It runs on the node's loop; rendering the exposition
is a few hundred microseconds and happens only per scrape.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from nyx.telemetry.registry import CONTENT_TYPE, MetricRegistry

log = logging.getLogger(__name__)

Health = Callable[[], tuple[bool, str]]
MAX_REQUEST_BYTES = 8192
REQUEST_TIMEOUT_S = 5.0


class MetricsServer:
    """Serve `registry` on host:port (port 0 = chosen by the OS); `health` answers /healthz."""

    def __init__(self, registry: MetricRegistry, health: Health | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.registry = registry
        self.health = health or (lambda: (True, "ok"))
        self.host, self.port = host, port
        self._server: asyncio.Server | None = None
        self.requests = 0
        self.bad_requests = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port, limit=MAX_REQUEST_BYTES)
        self.host, self.port = self._server.sockets[0].getsockname()[:2]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> MetricsServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            status, content_type, body = await asyncio.wait_for(self._respond(reader), REQUEST_TIMEOUT_S)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, ConnectionError):
            self.bad_requests += 1
            status, content_type, body = "400 Bad Request", "text/plain", b"bad request\n"
        try:
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n".encode() + body
            )
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def _respond(self, reader: asyncio.StreamReader) -> tuple[str, str, bytes]:
        head = await reader.readuntil(b"\r\n\r\n")
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = request_line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            raise ValueError(f"malformed request line {request_line!r}")
        method, target = parts[0], parts[1].split("?", 1)[0]
        self.requests += 1
        if method != "GET":
            return "405 Method Not Allowed", "text/plain", b"GET only\n"
        if target == "/metrics":
            return "200 OK", CONTENT_TYPE, self.registry.exposition()
        if target == "/healthz":
            ok, detail = self.health()
            return ("200 OK" if ok else "503 Service Unavailable"), "text/plain", detail.encode() + b"\n"
        return "404 Not Found", "text/plain", b"try /metrics or /healthz\n"
