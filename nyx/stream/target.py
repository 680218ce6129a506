"""The target request: what a stream through the mixnet is for, named in its first bytes.

A mixnet stream carries no destination, so the client's first bytes on each stream name one and
the exit gateway answers with one status byte before any data:

    client -> exit   01 LEN TARGET     version 1, LEN 1-255, TARGET that many ASCII bytes
    exit -> client   STATUS            0 OK, then data both ways; anything else, then the exit closes

TARGET is a service the exit runs in-process, by name (`echo`, `[a-z0-9][a-z0-9_-]{0,31}`), or
`host:port` reached by TCP from the exit if its allowlist says so: a DNS name (socks.py's label
rules), a dotted IPv4, or `[IPv6]`, and a port 1-65535. docs/exit.md has the details.

Why these choices:
- Text, not SOCKS-style typed addresses: the target is typed by people (`nyx connect echo`) and
  matched against an operator's allowlist written as text; one syntax serves all three.
- Names are never resolved by the client: the exit resolves them (docs/socks.md says why).
- Errors never carry the target (a log of where users went is what the mixnet exists to
  prevent): they say "port out of range", not which port.
- Hosts that a resolver might read as a number in disguise (`127.1`, `0x7f.0.0.1`, `1.2.3.4.`)
  are refused: a name whose last label is numeric must be an exact dotted IPv4, so the name the
  allowlist matches is the address that gets dialled.

`RequestParser` is sans-I/O (feed bytes split anywhere); `request_target` is the client's small
async half over any `ByteReader`/`ByteWriter`.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Literal

from nyx.stream.socks import ByteReader, ByteWriter, ConnectFailure
from nyx.stream.socks import _domain_problem as domain_problem  # the same rule at both ends

__all__ = [
    "MAX_REQUEST_BYTES",
    "REQUEST_VERSION",
    "SERVICE_NAME",
    "RequestParser",
    "Status",
    "Target",
    "TargetError",
    "encode_request",
    "failure_for_status",
    "request_target",
    "status_for_failure",
]

REQUEST_VERSION: Final = 1
MAX_TARGET_BYTES: Final = 255
#: The longest request: version, length, and 255 bytes of target.
MAX_REQUEST_BYTES: Final = 2 + MAX_TARGET_BYTES

SERVICE_NAME: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
_PORT: Final = re.compile(r"[1-9][0-9]{0,4}")
_DOTTED_QUAD: Final = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}")
_NUMERIC_LABEL: Final = re.compile(r"[0-9]+|0[xX][0-9a-fA-F]*")


class Status(enum.IntEnum):
    """The exit's answer, one byte. Values this version does not know read as OTHER."""

    OK = 0
    NOT_ALLOWED = 1
    CONNECTION_REFUSED = 2
    HOST_UNREACHABLE = 3
    NAME_NOT_RESOLVED = 4
    TIMEOUT = 5
    UNKNOWN_SERVICE = 6
    RATE_LIMITED = 7
    MALFORMED = 8
    UNSUPPORTED_VERSION = 9
    OTHER = 255

    @classmethod
    def from_byte(cls, value: int) -> Status:
        """The status for a received byte; a newer exit's unknown codes are OTHER, not an error."""
        try:
            return cls(value)
        except ValueError:
            return cls.OTHER


_FAILURE_FOR_STATUS: Final = MappingProxyType(
    {
        Status.NOT_ALLOWED: ConnectFailure.NOT_ALLOWED,
        Status.CONNECTION_REFUSED: ConnectFailure.CONNECTION_REFUSED,
        Status.HOST_UNREACHABLE: ConnectFailure.HOST_UNREACHABLE,
        Status.NAME_NOT_RESOLVED: ConnectFailure.NAME_NOT_RESOLVED,
        Status.TIMEOUT: ConnectFailure.TIMEOUT,
        # To a SOCKS program a missing service is a destination the exit will not serve.
        Status.UNKNOWN_SERVICE: ConnectFailure.NOT_ALLOWED,
        Status.RATE_LIMITED: ConnectFailure.RATE_LIMITED,
        Status.MALFORMED: ConnectFailure.OTHER,
        Status.UNSUPPORTED_VERSION: ConnectFailure.OTHER,
        Status.OTHER: ConnectFailure.OTHER,
    }
)

_STATUS_FOR_FAILURE: Final = MappingProxyType(
    {
        # At the exit, "no route" can only mean the destination's network is unreachable from it.
        ConnectFailure.NO_ROUTE: Status.HOST_UNREACHABLE,
        ConnectFailure.NOT_ALLOWED: Status.NOT_ALLOWED,
        ConnectFailure.CONNECTION_REFUSED: Status.CONNECTION_REFUSED,
        ConnectFailure.HOST_UNREACHABLE: Status.HOST_UNREACHABLE,
        ConnectFailure.NAME_NOT_RESOLVED: Status.NAME_NOT_RESOLVED,
        ConnectFailure.TIMEOUT: Status.TIMEOUT,
        ConnectFailure.RATE_LIMITED: Status.RATE_LIMITED,
        ConnectFailure.OTHER: Status.OTHER,
    }
)

_MESSAGES: Final = MappingProxyType(
    {
        Status.NOT_ALLOWED: "the exit's allowlist refuses the destination",
        Status.CONNECTION_REFUSED: "the destination refused the connection",
        Status.HOST_UNREACHABLE: "the exit could not reach the destination",
        Status.NAME_NOT_RESOLVED: "the exit could not resolve the destination's name",
        Status.TIMEOUT: "the exit timed out",
        Status.UNKNOWN_SERVICE: "the exit runs no service of that name",
        Status.RATE_LIMITED: "the exit is limiting this client",
        Status.MALFORMED: "the exit could not parse the request",
        Status.UNSUPPORTED_VERSION: "the exit does not speak this request version",
        Status.OTHER: "the exit could not open the destination",
    }
)


def failure_for_status(status: Status) -> ConnectFailure:
    """The `ConnectFailure` (hence the SOCKS reply) for a non-OK status."""
    if status is Status.OK:
        raise ValueError("OK is not a failure")
    return _FAILURE_FOR_STATUS[status]


def status_for_failure(failure: ConnectFailure) -> Status:
    """The status an exit sends for a failed connect (NO_ROUTE is HOST_UNREACHABLE there)."""
    return _STATUS_FOR_FAILURE[failure]


class TargetError(ConnectionError):
    """A target was refused or could not be opened, by status. `socks.failure_of` reads its
    `connect_failure`, so a SOCKS front answers with the right reply. The message says what
    failed, never which destination."""

    def __init__(self, status: Status, message: str | None = None) -> None:
        if status is Status.OK:
            raise ValueError("TargetError needs a failure status, not OK")
        super().__init__(message or _MESSAGES[status])
        self.status = status

    @property
    def connect_failure(self) -> ConnectFailure:
        return failure_for_status(self.status)


# ------------------------------------------------------------------------------------- the target


@dataclass(frozen=True, slots=True)
class Target:
    """Where a stream goes: `Target("service", "echo")` or `Target("tcp", host, port)`.

    `name` is the service name or the host: a DNS name as given (the exit resolves it and
    matches it case-insensitively), a dotted IPv4, or an IPv6 address without brackets (kept
    compressed, as socks.py's ConnectRequest gives it). Invalid fields raise ValueError.
    """

    kind: Literal["service", "tcp"]
    name: str
    port: int | None = None

    def __post_init__(self) -> None:
        if self.kind == "service":
            if self.port is not None:
                raise ValueError("a service target has no port")
            if not isinstance(self.name, str) or not SERVICE_NAME.fullmatch(self.name):
                raise ValueError("service name must be 1-32 of a-z 0-9 _ - (starting with a letter or digit)")
            return
        if self.kind != "tcp":
            raise ValueError("target kind must be 'service' or 'tcp'")
        if not isinstance(self.port, int) or isinstance(self.port, bool) or not 1 <= self.port <= 0xFFFF:
            raise ValueError("port must be 1-65535")
        object.__setattr__(self, "name", _checked_host(self.name))
        size = len(str(self))
        if size > MAX_TARGET_BYTES:
            raise ValueError(f"target is {size} bytes (1-{MAX_TARGET_BYTES} allowed)")

    @classmethod
    def service(cls, name: str) -> Target:
        return cls("service", name)

    @classmethod
    def tcp(cls, host: str, port: int) -> Target:
        return cls("tcp", host, port)

    @classmethod
    def parse(cls, text: str) -> Target:
        """`echo`, `example.com:443`, `192.0.2.1:80` or `[2001:db8::1]:22`. ValueError otherwise,
        with a message that does not repeat the text (it may be a destination)."""
        if not isinstance(text, str) or not text.isascii():
            raise ValueError("target must be ASCII text")
        if not 1 <= len(text) <= MAX_TARGET_BYTES:
            raise ValueError(f"target is {len(text)} bytes (1-{MAX_TARGET_BYTES} allowed)")
        if ":" not in text:
            if not SERVICE_NAME.fullmatch(text):
                raise ValueError("target is neither a service name (a-z 0-9 _ -, up to 32) nor host:port")
            return cls("service", text)
        if text.startswith("["):
            close = text.find("]")
            if close < 0 or text[close + 1 : close + 2] != ":":
                raise ValueError("a bracketed IPv6 host must be [address]:port")
            host, port = text[1:close], text[close + 2 :]
            if ":" not in host:
                raise ValueError("brackets are only for IPv6 addresses")
        else:
            host, _, port = text.rpartition(":")
            if ":" in host:
                raise ValueError("an IPv6 host needs brackets: [address]:port")
        if not _PORT.fullmatch(port) or int(port) > 0xFFFF:
            raise ValueError("port must be 1-65535 in decimal")
        return cls("tcp", host, int(port))

    def __str__(self) -> str:
        if self.kind == "service":
            return self.name
        host = f"[{self.name}]" if ":" in self.name else self.name
        return f"{host}:{self.port}"


def _checked_host(host: object) -> str:
    """The host as a target keeps it (IPv6 compressed), or ValueError without the host in it."""
    if not isinstance(host, str) or not host.isascii():
        raise ValueError("host must be ASCII text")
    if ":" in host:
        if "%" in host:
            raise ValueError("an IPv6 scope (%interface) means nothing at the exit")
        try:
            return ipaddress.IPv6Address(host).compressed
        except ValueError:
            raise ValueError("host is not a valid IPv6 address") from None
    if _DOTTED_QUAD.fullmatch(host):
        try:
            return str(ipaddress.IPv4Address(host))
        except ValueError:
            raise ValueError("host is not a valid IPv4 address (0-255, no leading zeros)") from None
    problem = domain_problem(host.encode("ascii"))
    if problem is not None:
        raise ValueError(problem)
    if _NUMERIC_LABEL.fullmatch(host.rstrip(".").rpartition(".")[2]):
        raise ValueError("host ends in a numeric label but is not a dotted IPv4 address")
    return host


def encode_request(target: Target) -> bytes:
    """The first bytes of a stream for `target`."""
    text = str(target).encode("ascii")
    return bytes((REQUEST_VERSION, len(text))) + text


class RequestParser:
    """Reads a request from the start of a stream, bytes split anywhere.

    `feed(data)` returns the Target once the request is whole, None while it needs more, and
    raises TargetError (UNSUPPORTED_VERSION or MALFORMED, the status to answer) on bad bytes, as
    soon as they arrive. Bytes after the request are the stream's first data: they are kept in
    `rest`, for the exit to pass on. Feeding after the Target is a caller's bug (RuntimeError);
    feeding after an error raises the error again.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._target: Target | None = None
        self._error: TargetError | None = None
        self.rest = b""

    @property
    def target(self) -> Target | None:
        return self._target

    def feed(self, data: bytes) -> Target | None:
        if self._error is not None:
            raise self._error
        if self._target is not None:
            raise RuntimeError("feed after the request was whole; later bytes belong to the stream")
        self._buffer += data
        try:
            return self._parse()
        except TargetError as exc:
            self._error = exc
            self._buffer.clear()
            raise

    def _parse(self) -> Target | None:
        buf = self._buffer
        if not buf:
            return None
        if buf[0] != REQUEST_VERSION:
            raise TargetError(Status.UNSUPPORTED_VERSION, f"request version {buf[0]}, expected {REQUEST_VERSION}")
        if len(buf) < 2:
            return None
        if buf[1] == 0:
            raise TargetError(Status.MALFORMED, "request with an empty target")
        end = 2 + buf[1]
        if len(buf) < end:
            return None
        try:
            text = bytes(buf[2:end]).decode("ascii")
        except UnicodeDecodeError:
            raise TargetError(Status.MALFORMED, "target is not ASCII") from None
        try:
            target = Target.parse(text)
        except ValueError as exc:
            raise TargetError(Status.MALFORMED, f"bad target: {exc}") from None
        self.rest = bytes(buf[end:])
        self._buffer.clear()
        self._target = target
        return target


async def request_target(reader: ByteReader, writer: ByteWriter, target: Target) -> None:
    """The client's half on a fresh stream: send the request, wait for the status. Returns on OK
    (the stream then carries the target's data); raises TargetError otherwise."""
    writer.write(encode_request(target))
    await writer.drain()
    answer = await reader.read(1)
    if not answer:
        raise TargetError(Status.OTHER, "the exit closed the stream before answering")
    status = Status.from_byte(answer[0])
    if status is not Status.OK:
        raise TargetError(status)
