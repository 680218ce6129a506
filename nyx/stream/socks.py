"""The SOCKS5 front (RFC 1928, CONNECT only, no authentication): how programs that already speak
SOCKS (`curl --socks5-hostname`, browsers, ssh's ProxyCommand) reach a destination through the
mixnet.

`Socks5ServerConnection` is one client connection's protocol, sans-I/O like h11: the shell feeds
it bytes (`receive_data`, `b""` for end of file), gets events back, and writes `data_to_send()`.

    state            the client sends                      the machine answers
    GREETING         05 NMETHODS METHODS                   05 00, or 05 FF and closes
    REQUEST          05 CMD 00 ATYP DST.ADDR DST.PORT      ConnectRequest, or a refusal and closes
    AWAITING_REPLY   (pipelined bytes are held)            the caller decides: accept() / refuse()
    CONNECTED        payload                               Data events, EndOfData at end of file
    CLOSED           (anything is discarded)               the shell flushes and closes

Why these choices:
- Only NO AUTHENTICATION REQUIRED (0x00): the front listens on loopback for programs of the same
  user; a username/password (RFC 1929) would travel in clear over loopback and protect nothing.
- Names are never resolved here. A domain name (ATYP 3) goes to the exit as given and is resolved
  there; a local DNS query would tell the local resolver (and whoever watches it) the destination.
- Errors never carry the destination (no host, no port): they end up in logs, and a log of where
  a user went is what the mixnet exists to prevent.
- Whatever a client sends gives events or `SocksProtocolError` (the client's fault; the machine is
  then CLOSED and `data_to_send()` holds the error reply when RFC 1928 allows one). A caller that
  calls `accept`/`refuse` out of turn gets `SocksUsageError` (its own bug).

`serve_socks5` is a small asyncio shell around it: it reads a request, awaits a `connect`
callback, and relays bytes both ways with backpressure, every connection a task it owns.
"""

from __future__ import annotations

import asyncio
import enum
import errno
import ipaddress
import logging
import re
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Protocol

log = logging.getLogger(__name__)

SOCKS_VERSION: Final = 5
NO_AUTHENTICATION: Final = 0x00
NO_ACCEPTABLE_METHODS: Final = 0xFF
CMD_CONNECT: Final = 0x01
#: Bytes a client may send after its request, before the reply, that the machine holds for it.
MAX_EARLY_DATA_BYTES: Final = 64 * 1024

_COMMAND_NAMES: Final = {0x01: "CONNECT", 0x02: "BIND", 0x03: "UDP ASSOCIATE"}
_ATYP_IPV4, _ATYP_DOMAIN, _ATYP_IPV6 = 0x01, 0x03, 0x04
_LABEL: Final = re.compile(rb"[A-Za-z0-9_-]{1,63}")


class SocksReply(enum.IntEnum):
    """The REP field of a reply (RFC 1928 section 6)."""

    SUCCEEDED = 0x00
    GENERAL_FAILURE = 0x01
    NOT_ALLOWED = 0x02
    NETWORK_UNREACHABLE = 0x03
    HOST_UNREACHABLE = 0x04
    CONNECTION_REFUSED = 0x05
    TTL_EXPIRED = 0x06
    COMMAND_NOT_SUPPORTED = 0x07
    ADDRESS_TYPE_NOT_SUPPORTED = 0x08


class ConnectFailure(enum.Enum):
    """Why the mixnet client could not open a stream; the client maps its exceptions onto these
    (an exception may carry one as `exc.connect_failure`) and `reply_for` turns them into replies."""

    NO_ROUTE = "no_route"  # no usable mix route, or the network is unreachable
    NOT_ALLOWED = "not_allowed"  # the exit's allowlist refused the destination
    CONNECTION_REFUSED = "connection_refused"  # the destination refused the TCP connection
    HOST_UNREACHABLE = "host_unreachable"  # the exit could not reach the destination
    NAME_NOT_RESOLVED = "name_not_resolved"  # DNS failed at the exit
    TIMEOUT = "timeout"  # no answer in time
    RATE_LIMITED = "rate_limited"  # the gateway or exit limited this client
    OTHER = "other"


_REPLY_FOR_FAILURE: Final = MappingProxyType(
    {
        ConnectFailure.NO_ROUTE: SocksReply.NETWORK_UNREACHABLE,
        ConnectFailure.NOT_ALLOWED: SocksReply.NOT_ALLOWED,
        ConnectFailure.CONNECTION_REFUSED: SocksReply.CONNECTION_REFUSED,
        ConnectFailure.HOST_UNREACHABLE: SocksReply.HOST_UNREACHABLE,
        ConnectFailure.NAME_NOT_RESOLVED: SocksReply.HOST_UNREACHABLE,
        ConnectFailure.TIMEOUT: SocksReply.TTL_EXPIRED,
        # SOCKS has no "slow down" code; a general failure tells the program to give up or retry.
        ConnectFailure.RATE_LIMITED: SocksReply.GENERAL_FAILURE,
        ConnectFailure.OTHER: SocksReply.GENERAL_FAILURE,
    }
)


def failure_of(exc: BaseException) -> ConnectFailure:
    """The category of a failed connect: the one `exc` carries, else one read from OS errors (so a
    plain TCP connect, as in tests and local services, is classified too), else OTHER."""
    carried = getattr(exc, "connect_failure", None)
    if isinstance(carried, ConnectFailure):
        return carried
    if isinstance(exc, ConnectionRefusedError):
        return ConnectFailure.CONNECTION_REFUSED
    if isinstance(exc, TimeoutError):
        return ConnectFailure.TIMEOUT
    if isinstance(exc, socket.gaierror):
        return ConnectFailure.NAME_NOT_RESOLVED
    if isinstance(exc, OSError) and exc.errno == errno.ENETUNREACH:
        return ConnectFailure.NO_ROUTE
    if isinstance(exc, OSError) and exc.errno == errno.EHOSTUNREACH:
        return ConnectFailure.HOST_UNREACHABLE
    return ConnectFailure.OTHER


def reply_for(failure: ConnectFailure | BaseException) -> SocksReply:
    """The reply to send for a failed connect (the table in docs/socks.md)."""
    if isinstance(failure, BaseException):
        failure = failure_of(failure)
    return _REPLY_FOR_FAILURE[failure]


class SocksProtocolError(Exception):
    """The client broke RFC 1928 (or asked for what we do not support). `reply` is the REP code
    queued in `data_to_send()`, or None when no SOCKS5 reply was possible (or a method refusal,
    05 FF, was queued instead)."""

    def __init__(self, message: str, reply: SocksReply | None) -> None:
        super().__init__(message)
        self.reply = reply


class SocksUsageError(RuntimeError):
    """The caller drove the machine out of turn (accept before a request, data after end of file)."""


@dataclass(frozen=True, slots=True)
class ConnectRequest:
    """The client asks for a stream to host:port. `host` is as the client sent it: a dotted IPv4,
    a compressed IPv6, or a domain name NOT resolved here (the exit resolves it)."""

    host: str
    port: int
    address_type: str  # "ipv4" | "domain" | "ipv6"


@dataclass(frozen=True, slots=True)
class Data:
    """Payload from the client for the destination."""

    data: bytes


@dataclass(frozen=True, slots=True)
class EndOfData:
    """The client will send nothing more (it closed or half-closed its side)."""


Event = ConnectRequest | Data | EndOfData


class SocksState(enum.Enum):
    GREETING = "greeting"
    REQUEST = "request"
    AWAITING_REPLY = "awaiting_reply"
    CONNECTED = "connected"
    CLOSED = "closed"


def _domain_problem(raw: bytes) -> str | None:
    """Why `raw` is not a name we pass on, or None. Letters, digits, '-', '_' in labels of 1-63
    bytes joined by dots, one trailing dot allowed; IDNs arrive as punycode (xn--), which fits."""
    if not 1 <= len(raw) <= 255:
        return f"domain name of {len(raw)} bytes (1-255 allowed)"
    name = raw[:-1] if raw.endswith(b".") else raw
    if not name:
        return "domain name is only a dot"
    for index, label in enumerate(name.split(b".")):
        if not label:
            return f"domain name label {index} is empty"
        if len(label) > 63:
            return f"domain name label {index} is over 63 bytes"
        if not _LABEL.fullmatch(label):
            return f"domain name label {index} has a byte outside A-Z a-z 0-9 - _"
    return None


def _encode_reply(reply: SocksReply, host: str, port: int) -> bytes:
    address = ipaddress.ip_address(host)  # ValueError for a name: the bound address is an IP
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"bound port {port} outside 0-65535")
    atyp = _ATYP_IPV4 if address.version == 4 else _ATYP_IPV6
    return bytes((SOCKS_VERSION, reply, 0x00, atyp)) + address.packed + port.to_bytes(2, "big")


class Socks5ServerConnection:
    """One client connection's SOCKS5 handshake, then a pass-through for its payload.

    The shell: `events = conn.receive_data(chunk)` for every chunk read (`b""` at end of file),
    write `conn.data_to_send()` after every call, and on a `ConnectRequest` open the stream and
    call `accept()` (which returns the bytes the client pipelined as events) or `refuse(reply)`.
    After accept, the destination's bytes go straight to the client; the machine has no part in
    that direction.
    """

    def __init__(self) -> None:
        self._state = SocksState.GREETING
        self._buffer = bytearray()
        self._outgoing = bytearray()
        self._client_eof = False

    @property
    def state(self) -> SocksState:
        return self._state

    def data_to_send(self) -> bytes:
        """The bytes to write to the client now (emptied by the call)."""
        out = bytes(self._outgoing)
        self._outgoing.clear()
        return out

    def receive_data(self, data: bytes) -> list[Event]:
        """Feed bytes from the client, split anywhere; `b""` means end of file."""
        if self._state is SocksState.CLOSED:
            return []  # the shell is closing; what the client still sends has no one to go to
        if self._client_eof:
            raise SocksUsageError("receive_data after end of file (b'') was fed")
        if not data:
            return self._receive_eof()
        if self._state is SocksState.CONNECTED:
            return [Data(bytes(data))]
        self._buffer += data
        events: list[Event] = []
        if self._state is SocksState.GREETING:
            self._parse_greeting()
        if self._state is SocksState.REQUEST:
            request = self._parse_request()
            if request is not None:
                events.append(request)
        if self._state is SocksState.AWAITING_REPLY and len(self._buffer) > MAX_EARLY_DATA_BYTES:
            self._fail(SocksReply.GENERAL_FAILURE, f"client sent over {MAX_EARLY_DATA_BYTES} bytes before the reply")
        return events

    def accept(self, bound_host: str = "0.0.0.0", bound_port: int = 0) -> list[Event]:
        """Reply SUCCEEDED. Returns what the client sent after its request (a client may pipeline
        its first payload, and may even have closed its side): forward these before reading more.
        The bound address means little through a mixnet; the default says "unspecified"."""
        self._expect_decision("accept")
        self._outgoing += _encode_reply(SocksReply.SUCCEEDED, bound_host, bound_port)
        self._state = SocksState.CONNECTED
        events: list[Event] = [Data(bytes(self._buffer))] if self._buffer else []
        self._buffer.clear()
        if self._client_eof:
            events.append(EndOfData())
        return events

    def refuse(self, reason: SocksReply) -> None:
        """Reply with a failure code (see `reply_for`) and close; pipelined bytes are dropped."""
        self._expect_decision("refuse")
        if reason is SocksReply.SUCCEEDED:
            raise ValueError("refuse() needs a failure code; use accept() for SUCCEEDED")
        self._outgoing += _encode_reply(SocksReply(reason), "0.0.0.0", 0)
        self._close()

    # ------------------------------------------------------------------------------ internals

    def _expect_decision(self, what: str) -> None:
        if self._state is not SocksState.AWAITING_REPLY:
            raise SocksUsageError(f"{what}() is only valid after a ConnectRequest (state: {self._state.value})")

    def _close(self) -> None:
        self._state = SocksState.CLOSED
        self._buffer.clear()

    def _fail(self, reply: SocksReply | None, message: str) -> None:
        if reply is not None:
            self._outgoing += _encode_reply(reply, "0.0.0.0", 0)
        self._close()
        raise SocksProtocolError(message, reply)

    def _receive_eof(self) -> list[Event]:
        self._client_eof = True
        if self._state is SocksState.CONNECTED:
            return [EndOfData()]
        if self._state is SocksState.AWAITING_REPLY:
            return []  # the request is whole; the caller still decides, accept() reports the end
        if self._buffer:
            reply = SocksReply.GENERAL_FAILURE if self._state is SocksState.REQUEST else None
            self._fail(reply, f"client closed in the middle of its {self._state.value} ({len(self._buffer)} bytes)")
        self._close()  # closed between messages: nothing to say
        return []

    def _parse_greeting(self) -> None:
        buf = self._buffer
        if buf[0] != SOCKS_VERSION:
            hint = " (a SOCKS4 client?)" if buf[0] == 4 else " (an HTTP client?)" if 0x41 <= buf[0] <= 0x5A else ""
            self._fail(None, f"greeting version {buf[0]}, expected 5{hint}")
        if len(buf) < 2 or len(buf) < 2 + buf[1]:
            return
        methods = bytes(buf[2 : 2 + buf[1]])
        del buf[: 2 + len(methods)]
        if NO_AUTHENTICATION not in methods:
            self._outgoing += bytes((SOCKS_VERSION, NO_ACCEPTABLE_METHODS))
            offered = ", ".join(f"0x{m:02x}" for m in methods) or "none"
            self._fail(None, f"client offers no method we accept (offered: {offered}; only 0x00, no authentication)")
        self._outgoing += bytes((SOCKS_VERSION, NO_AUTHENTICATION))
        self._state = SocksState.REQUEST

    def _parse_request(self) -> ConnectRequest | None:
        buf = self._buffer
        if not buf:
            return None
        if buf[0] != SOCKS_VERSION:
            self._fail(SocksReply.GENERAL_FAILURE, f"request version {buf[0]}, expected 5")
        if len(buf) >= 2 and buf[1] != CMD_CONNECT:
            name = _COMMAND_NAMES.get(buf[1], f"command 0x{buf[1]:02x}")
            self._fail(SocksReply.COMMAND_NOT_SUPPORTED, f"{name} is not supported (only CONNECT)")
        if len(buf) >= 3 and buf[2] != 0:
            self._fail(SocksReply.GENERAL_FAILURE, f"request RSV is 0x{buf[2]:02x}, must be 0")
        if len(buf) < 4:
            return None
        atyp = buf[3]
        if atyp == _ATYP_IPV4:
            address_size = 4
        elif atyp == _ATYP_IPV6:
            address_size = 16
        elif atyp == _ATYP_DOMAIN:
            if len(buf) < 5:
                return None
            address_size = 1 + buf[4]
        else:
            self._fail(SocksReply.ADDRESS_TYPE_NOT_SUPPORTED, f"address type 0x{atyp:02x} is not supported")
        end = 4 + address_size + 2
        if len(buf) < end:
            return None
        raw, port = bytes(buf[4 : end - 2]), int.from_bytes(buf[end - 2 : end], "big")
        del buf[:end]
        if atyp == _ATYP_IPV4:
            request = ConnectRequest(str(ipaddress.IPv4Address(raw)), port, "ipv4")
        elif atyp == _ATYP_IPV6:
            request = ConnectRequest(ipaddress.IPv6Address(raw).compressed, port, "ipv6")
        else:
            problem = _domain_problem(raw[1:])
            if problem is not None:
                # The type is supported, so 0x08 would mislead, and 0x04 would suggest a lookup.
                self._fail(SocksReply.GENERAL_FAILURE, problem)
            request = ConnectRequest(raw[1:].decode("ascii"), port, "domain")
        self._state = SocksState.AWAITING_REPLY
        return request


# ---------------------------------------------------------------------------------- asyncio shell

_CHUNK_BYTES: Final = 64 * 1024


class ByteReader(Protocol):
    """What `serve_socks5` reads from: an asyncio.StreamReader, or a mixnet stream's reader."""

    async def read(self, n: int = -1) -> bytes: ...


class ByteWriter(Protocol):
    """What `serve_socks5` writes to: an asyncio.StreamWriter, or a mixnet stream's writer."""

    def write(self, data: bytes) -> None: ...
    async def drain(self) -> None: ...
    def can_write_eof(self) -> bool: ...
    def write_eof(self) -> None: ...
    def close(self) -> None: ...
    async def wait_closed(self) -> None: ...


Connect = Callable[[ConnectRequest], Awaitable[tuple[ByteReader, ByteWriter]]]


async def serve_socks5(
    host: str,
    port: int,
    connect: Connect,
    *,
    handshake_timeout_s: float = 10.0,
    on_listening: Callable[[tuple[str, int]], None] | None = None,
) -> None:
    """Serve SOCKS5 on host:port until cancelled. For each request, `await connect(request)` opens
    the stream (its exception becomes the reply through `reply_for`), then bytes flow both ways,
    each write awaiting `drain()` so a slow side slows the other instead of filling memory.

    Every connection is a task of this call's TaskGroup: cancelling `serve_socks5` cancels every
    relay and closes every socket. `on_listening` gets the bound (host, port), useful with port 0.
    A client that has not sent a whole request after `handshake_timeout_s` is dropped.
    """
    async with asyncio.TaskGroup() as connections:

        def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                connections.create_task(_serve_client(reader, writer, connect, handshake_timeout_s))
            except RuntimeError:  # a client that raced our shutdown
                writer.close()

        server = await asyncio.start_server(on_client, host, port)
        try:
            if on_listening is not None:
                on_listening(server.sockets[0].getsockname()[:2])
            await asyncio.Future()  # until cancelled
        finally:
            server.close()


async def _serve_client(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, connect: Connect, handshake_timeout_s: float
) -> None:
    conn = Socks5ServerConnection()
    try:
        async with asyncio.timeout(handshake_timeout_s):
            request = await _read_request(conn, reader, writer)
        if request is None:
            return
        try:
            destination_reader, destination_writer = await connect(request)
        except Exception as exc:  # the connect callback's failure is the reply, not our crash
            conn.refuse(reply_for(exc))
            writer.write(conn.data_to_send())
            await writer.drain()
            log.info("socks: connect failed (%s)", failure_of(exc).value)  # no destination in logs
            return
        try:
            early = conn.accept()
            writer.write(conn.data_to_send())
            await _relay(conn, early, reader, writer, destination_reader, destination_writer)
        finally:
            await _close(destination_writer)
    except SocksProtocolError as exc:
        writer.write(conn.data_to_send())
        log.info("socks: client protocol error: %s", exc)
    except (OSError, TimeoutError) as exc:
        log.debug("socks: client connection ended: %r", exc)
    except Exception:
        log.exception("socks: connection failed")  # a bug here must not stop the other connections
    finally:
        await _close(writer)


async def _read_request(
    conn: Socks5ServerConnection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> ConnectRequest | None:
    while conn.state is not SocksState.CLOSED:
        events = conn.receive_data(await reader.read(_CHUNK_BYTES))
        writer.write(conn.data_to_send())
        for event in events:
            if isinstance(event, ConnectRequest):
                return event
        await writer.drain()
    return None


async def _relay(
    conn: Socks5ServerConnection,
    early: list[Event],
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    destination_reader: ByteReader,
    destination_writer: ByteWriter,
) -> None:
    async def client_to_destination() -> None:
        events = early
        while True:
            for event in events:
                if isinstance(event, EndOfData):
                    if destination_writer.can_write_eof():
                        destination_writer.write_eof()
                    return
                if isinstance(event, Data):
                    destination_writer.write(event.data)
                    await destination_writer.drain()
            events = conn.receive_data(await reader.read(_CHUNK_BYTES))

    async def destination_to_client() -> None:
        while chunk := await destination_reader.read(_CHUNK_BYTES):
            writer.write(chunk)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()

    try:
        async with asyncio.TaskGroup() as relay:  # either side failing cancels the other
            relay.create_task(client_to_destination())
            relay.create_task(destination_to_client())
    except* OSError as group:
        log.debug("socks: relay ended: %r", group.exceptions[0])


async def _close(writer: ByteWriter) -> None:
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass
