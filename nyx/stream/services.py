"""The exit gateway's side of a target request: in-process services, the TCP allowlist, and
`ExitServices.serve`, which answers one stream's request and then carries its data.

    services = ExitServices(allowlist=Allowlist(["example.com:443", "*.example.org:80-89"]))
    await services.serve(reader, writer)        # per stream: request, status, then data

The wire format, the allowlist syntax and the private-address rule are in docs/exit.md.

Why these choices:
- Nothing is reachable unless the operator lists it: an empty allowlist refuses every host, so a
  fresh exit is not an open proxy into the internet (or into the exit's own network).
- Names are matched as requested, then resolved here, and the addresses they resolve to are
  checked again before dialling (see `Allowlist`), so an allowed name cannot be pointed at the
  exit's internal network (DNS rebinding).
- Logs and counters hold outcome categories only (`not_allowed`, `refused`, ...), never a host
  or a port: OS error messages can name the address, so they are not logged either.
- A stream is a peer's input: whatever it sends or does, `serve` answers if it can, closes the
  stream and returns. It never raises for a bad peer.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from nyx.stream.socks import ByteReader, ByteWriter, failure_of
from nyx.stream.target import (
    MAX_REQUEST_BYTES,
    SERVICE_NAME,
    RequestParser,
    Status,
    Target,
    TargetError,
    status_for_failure,
)

__all__ = ["OUTCOMES", "Allowlist", "ExitServices", "Service", "ServiceRegistry", "discard", "echo"]

log = logging.getLogger(__name__)

_CHUNK_BYTES: Final = 64 * 1024

Service = Callable[[ByteReader, ByteWriter], Awaitable[None]]

#: The keys of `ExitServices.counters`, one per outcome of a request.
OUTCOMES: Final = (
    "ok", "not_allowed", "unknown_service", "refused", "unreachable", "name_not_resolved", "timeout", "malformed",
    "other",
)
_OUTCOME_FOR_STATUS: Final = {
    Status.OK: "ok",
    Status.NOT_ALLOWED: "not_allowed",
    Status.UNKNOWN_SERVICE: "unknown_service",
    Status.CONNECTION_REFUSED: "refused",
    Status.HOST_UNREACHABLE: "unreachable",
    Status.NAME_NOT_RESOLVED: "name_not_resolved",
    Status.TIMEOUT: "timeout",
    Status.MALFORMED: "malformed",
    Status.UNSUPPORTED_VERSION: "malformed",
}


# ---------------------------------------------------------------------------------- services


async def echo(reader: ByteReader, writer: ByteWriter) -> None:
    """Sends back everything it reads, then half-closes: a round trip test for the whole path."""
    while chunk := await reader.read(_CHUNK_BYTES):
        writer.write(chunk)
        await writer.drain()
    if writer.can_write_eof():
        writer.write_eof()


async def discard(reader: ByteReader, writer: ByteWriter) -> None:
    """Reads and drops everything (RFC 863): a sink for measuring the client-to-exit direction."""
    while await reader.read(_CHUNK_BYTES):
        pass
    writer.close()


class ServiceRegistry:
    """The services an exit runs in-process, by target name; `echo` and `discard` built in."""

    def __init__(self, *, builtins: bool = True) -> None:
        self._services: dict[str, Service] = {}
        if builtins:
            self.register("echo", echo)
            self.register("discard", discard)

    def register(self, name: str, service: Service) -> None:
        """Add or replace a service. The name must be one a target can carry (ValueError)."""
        if not isinstance(name, str) or not SERVICE_NAME.fullmatch(name):
            raise ValueError(f"service name {name!r} is not 1-32 of a-z 0-9 _ - (starting with a letter or digit)")
        self._services[name] = service

    def get(self, name: str) -> Service | None:
        return self._services.get(name)

    def names(self) -> list[str]:
        return sorted(self._services)


# ---------------------------------------------------------------------------------- allowlist

_IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_NAT64: Final = ipaddress.IPv6Network("64:ff9b::/96")
_PORT_RANGE: Final = re.compile(r"([0-9]{1,5})(?:-([0-9]{1,5}))?")


@dataclass(frozen=True, slots=True)
class _Pattern:
    text: str
    host: str  # "*", "*.suffix" (lower case), a DNS name (lower case, no trailing dot), or ""
    address: _IPAddress | None  # for an IP literal pattern
    low: int
    high: int

    def matches(self, name: str | None, address: _IPAddress | None, port: int) -> bool:
        if not self.low <= port <= self.high:
            return False
        if self.address is not None:
            return address == self.address
        if self.host == "*":
            return True
        if name is None:  # DNS patterns never match an address
            return False
        if self.host.startswith("*."):
            return name.endswith(self.host[1:])
        return name == self.host


class Allowlist:
    """The TCP destinations an exit dials: patterns `host:port`.

        host   example.com    that name exactly (case-insensitive, a trailing dot ignored)
               *.example.com  any name below it, not example.com itself
               *              any host, names and addresses
               192.0.2.1      that IPv4 address; [2001:db8::1] that IPv6 address
        port   443, 8000-8999, or * (any)

    An empty list allows nothing. An invalid pattern raises ValueError naming it (it is the
    operator's configuration, not a user's destination).

    Matching is on the host as requested: a name matches only name patterns (and `*`), an
    address only address patterns (and `*`). Since a name's owner decides what it resolves to,
    the exit also checks the addresses after resolving (`allows_address`): unless
    `allow_private` is set, it refuses loopback, private, link-local, shared (CGNAT), reserved
    and multicast addresses (IPv4 inside IPv6, mapped or NAT64, is checked as IPv4), and dials
    only an address that passed. Otherwise `evil.example.org` under `*.example.org` could be
    pointed at 127.0.0.1 or 10.0.0.5 and reach the exit's own services (DNS rebinding). An IP
    literal pattern is the operator naming that very address, so it is allowed even if private.
    """

    def __init__(self, patterns: Sequence[str] = (), *, allow_private: bool = False) -> None:
        if isinstance(patterns, str):
            raise TypeError("patterns is a sequence of 'host:port' strings, not one string")
        self._patterns = tuple(_parse_pattern(p) for p in patterns)
        self.allow_private = allow_private

    @property
    def patterns(self) -> tuple[str, ...]:
        return tuple(p.text for p in self._patterns)

    def allows(self, host: str, port: int) -> bool:
        """Whether a request for host:port may be dialled (before resolution)."""
        return self._match(host, port) is not None

    def allows_address(self, host: str, port: int, address: _IPAddress) -> bool:
        """Whether `address`, which `host` resolved to, may be dialled for an allowed host:port."""
        if self.allow_private or _is_public(address):
            return True
        matched = self._match(host, port)
        return matched is not None and matched.address is not None

    def _match(self, host: str, port: int) -> _Pattern | None:
        name, address = _classify(host)
        return next((p for p in self._patterns if p.matches(name, address, port)), None)


def _classify(host: str) -> tuple[str | None, _IPAddress | None]:
    """(normalised name, None) for a DNS name, (None, address) for an IP literal."""
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return None, ipaddress.ip_address(bare)
    except ValueError:
        name = host.lower()
        return (name[:-1] if name.endswith(".") else name), None


def _is_public(address: _IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        elif address in _NAT64:
            address = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.is_global and not address.is_multicast


def _parse_pattern(text: str) -> _Pattern:
    if not isinstance(text, str) or ":" not in text:
        raise ValueError(f"allowlist pattern {text!r} is not host:port")
    host, _, port_text = text.rpartition(":")
    if port_text == "*":
        low, high = 1, 0xFFFF
    else:
        ports = _PORT_RANGE.fullmatch(port_text)
        if ports is None:
            raise ValueError(f"allowlist pattern {text!r}: port must be N, LOW-HIGH or *")
        low = int(ports[1])
        high = int(ports[2]) if ports[2] is not None else low
        if not 1 <= low <= high <= 0xFFFF:
            raise ValueError(f"allowlist pattern {text!r}: ports must be 1-65535, low <= high")
    if host == "*":
        return _Pattern(text, "*", None, low, high)
    if host.startswith("[") and host.endswith("]"):
        try:
            address: _IPAddress = ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ValueError(f"allowlist pattern {text!r}: not an IPv6 address in brackets") from None
        return _Pattern(text, "", address, low, high)
    wildcard = host.startswith("*.")
    probe = host[2:] if wildcard else host
    try:
        checked = Target.tcp(probe, 1).name
    except ValueError as exc:
        raise ValueError(f"allowlist pattern {text!r}: {exc}") from None
    if ":" in checked:
        raise ValueError(f"allowlist pattern {text!r}: an IPv6 address needs brackets")
    name, address = _classify(checked)
    if address is not None:
        if wildcard:
            raise ValueError(f"allowlist pattern {text!r}: '*.' goes before a name, not an address")
        return _Pattern(text, "", address, low, high)
    assert name is not None
    return _Pattern(text, f"*.{name}" if wildcard else name, None, low, high)


# ---------------------------------------------------------------------------------- serving


class _Prefixed:
    """A reader that gives `first` (bytes that came with the request) before the stream's own."""

    def __init__(self, first: bytes, reader: ByteReader) -> None:
        self._first = first
        self._reader = reader

    async def read(self, n: int = -1) -> bytes:
        if not self._first:
            return await self._reader.read(n)
        if n < 0:
            first, self._first = self._first, b""
            return first + await self._reader.read(-1)
        first, self._first = self._first[:n], self._first[n:]
        return first

    async def readexactly(self, n: int) -> bytes:
        taken = await self.read(min(n, len(self._first))) if self._first else b""
        try:
            readexactly = getattr(self._reader, "readexactly", None)
            if readexactly is not None:
                return taken + await readexactly(n - len(taken))
            while len(taken) < n:
                chunk = await self._reader.read(n - len(taken))
                if not chunk:
                    raise asyncio.IncompleteReadError(b"", n - len(taken))
                taken += chunk
            return taken
        except asyncio.IncompleteReadError as exc:
            raise asyncio.IncompleteReadError(taken + exc.partial, n) from None


class ExitServices:
    """One exit's answer to target requests: its services, its allowlist, its timeouts, and
    `counters` (requests by outcome, `OUTCOMES`) for the operator's metrics.

    `serve(reader, writer)` runs one stream: it reads the request (at most 257 bytes, within
    `request_timeout_s`), answers a status byte, and on OK runs the service or relays to the
    TCP destination (resolved and connected within `connect_timeout_s`) until both sides end.
    A request not whole within `request_timeout_s` counts as `timeout` (and is answered TIMEOUT).
    """

    def __init__(
        self,
        registry: ServiceRegistry | None = None,
        allowlist: Allowlist | None = None,
        *,
        connect_timeout_s: float = 10.0,
        request_timeout_s: float = 10.0,
    ) -> None:
        self.registry = registry if registry is not None else ServiceRegistry()
        self.allowlist = allowlist if allowlist is not None else Allowlist()
        self.connect_timeout_s = connect_timeout_s
        self.request_timeout_s = request_timeout_s
        self.counters: dict[str, int] = dict.fromkeys(OUTCOMES, 0)

    async def serve(self, reader: ByteReader, writer: ByteWriter) -> None:
        """Answer and carry one stream; returns when it is over, having closed it."""
        answered = False
        service: Service | None = None
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            try:
                target, early = await self._read_request(reader)
                if target.kind == "service":
                    service = self.registry.get(target.name)
                    if service is None:
                        raise TargetError(Status.UNKNOWN_SERVICE)
                else:
                    upstream = await self._open(target)
            except TargetError as exc:
                answered = True
                log.info("exit: request refused (%s)", _OUTCOME_FOR_STATUS.get(exc.status, "other"))  # not where
                await self._answer(writer, exc.status)
                return
            try:
                answered = True
                await self._answer(writer, Status.OK)
                if upstream is not None:
                    await _relay(early, reader, writer, *upstream)
                elif service is not None:
                    await service(_Prefixed(early, reader) if early else reader, writer)
            finally:
                if upstream is not None:
                    await _close(upstream[1])
        except Exception as exc:  # the peer's stream failed, or a service did: end this stream only
            if not answered:
                self.counters["other"] += 1
            log.debug("exit: stream ended by %s", type(exc).__name__)  # not str(exc): it may hold an address
        finally:
            await _close(writer)

    async def _answer(self, writer: ByteWriter, status: Status) -> None:
        self.counters[_OUTCOME_FOR_STATUS.get(status, "other")] += 1  # before the write, which may fail
        writer.write(bytes((status,)))
        await writer.drain()

    async def _read_request(self, reader: ByteReader) -> tuple[Target, bytes]:
        """The request and the bytes that came after it, reading at most MAX_REQUEST_BYTES."""
        parser = RequestParser()
        taken = 0
        try:
            async with asyncio.timeout(self.request_timeout_s):
                while True:
                    chunk = await reader.read(MAX_REQUEST_BYTES - taken)
                    if not chunk:
                        raise TargetError(Status.MALFORMED, "the stream ended inside the request")
                    taken += len(chunk)
                    target = parser.feed(chunk)
                    if target is not None:
                        return target, parser.rest
        except TimeoutError:
            raise TargetError(Status.TIMEOUT, "no whole request in time") from None

    async def _open(self, target: Target) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Check, resolve, check the addresses, and connect to the first that answers."""
        assert target.port is not None
        if not self.allowlist.allows(target.name, target.port):
            raise TargetError(Status.NOT_ALLOWED)
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                infos = await loop.getaddrinfo(target.name, target.port, type=socket.SOCK_STREAM)
                if not infos:
                    raise TargetError(Status.NAME_NOT_RESOLVED)
                checked = [
                    info for info in infos
                    if self.allowlist.allows_address(target.name, target.port, _address_of(info[4]))
                ]
                if not checked:
                    raise TargetError(Status.NOT_ALLOWED, "the destination resolves to a private address")
                error: BaseException | None = None
                for family, kind, proto, _, sockaddr in checked:
                    try:
                        return await _connect(loop, family, kind, proto, sockaddr)
                    except OSError as exc:
                        error = exc
                assert error is not None
                raise error
        except TargetError:
            raise
        except (OSError, TimeoutError) as exc:
            raise TargetError(status_for_failure(failure_of(exc))) from None


def _address_of(sockaddr: tuple[Any, ...]) -> _IPAddress:
    return ipaddress.ip_address(str(sockaddr[0]).partition("%")[0])


async def _connect(
    loop: asyncio.AbstractEventLoop, family: int, kind: int, proto: int, sockaddr: tuple[Any, ...]
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TCP connection to exactly `sockaddr` (no second lookup between the check and the dial)."""
    sock = socket.socket(family, kind, proto)
    try:
        sock.setblocking(False)
        await loop.sock_connect(sock, sockaddr)
        return await asyncio.open_connection(sock=sock)
    except BaseException:
        sock.close()
        raise


async def _relay(
    early: bytes, reader: ByteReader, writer: ByteWriter, up_reader: ByteReader, up_writer: ByteWriter
) -> None:
    """Bytes both ways until both ends are done, each write awaiting drain (backpressure); an end
    of file is passed on as a half-close. `early` (sent with the request) goes first."""

    async def pump(source: ByteReader, sink: ByteWriter, first: bytes) -> None:
        if first:
            sink.write(first)
            await sink.drain()
        while chunk := await source.read(_CHUNK_BYTES):
            sink.write(chunk)
            await sink.drain()
        if sink.can_write_eof():
            sink.write_eof()

    async with asyncio.TaskGroup() as relay:  # either side failing cancels the other
        relay.create_task(pump(reader, up_writer, early))
        relay.create_task(pump(up_reader, writer, b""))


async def _close(writer: ByteWriter) -> None:
    writer.close()
    try:
        await writer.wait_closed()
    except Exception:
        pass
