"""The exit's side of a target request: the allowlist, the service registry, and
`ExitServices.serve` over real TCP connections on 127.0.0.1 standing in for mixnet streams.

Each "exit" is an asyncio server whose handler is `services.serve(reader, writer)`; the test
connects to it as the client and calls `request_target`. Destinations are local servers too, so
nothing leaves the machine (the `.invalid` name is refused by any resolver, RFC 6761).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from nyx.stream.socks import SocksReply, reply_for
from nyx.stream.services import OUTCOMES, Allowlist, ExitServices, ServiceRegistry
from nyx.stream.target import Status, Target, TargetError, encode_request, request_target

# ----------------------------------------------------------------------------------- allowlist

MATCHES = [
    # (patterns, host, port, allowed)
    ([], "example.com", 443, False),
    (["example.com:443"], "example.com", 443, True),
    (["example.com:443"], "EXAMPLE.Com", 443, True),
    (["example.com:443"], "example.com.", 443, True),
    (["Example.COM.:443"], "example.com", 443, True),
    (["example.com:443"], "example.com", 80, False),
    (["example.com:443"], "www.example.com", 443, False),
    (["example.com:443"], "example.com.evil.test", 443, False),
    (["*.example.com:443"], "www.example.com", 443, True),
    (["*.example.com:443"], "a.b.WWW.example.com.", 443, True),
    (["*.example.com:443"], "example.com", 443, False),  # not the apex
    (["*.example.com:443"], "badexample.com", 443, False),
    (["*.example.com:443"], "example.com.evil.test", 443, False),
    (["*:443"], "anything.test", 443, True),
    (["*:443"], "192.0.2.1", 443, True),
    (["*:443"], "2001:db8::1", 443, True),
    (["*:443"], "anything.test", 444, False),
    (["example.com:*"], "example.com", 1, True),
    (["example.com:*"], "example.com", 65535, True),
    (["example.com:8000-8999"], "example.com", 8000, True),
    (["example.com:8000-8999"], "example.com", 8999, True),
    (["example.com:8000-8999"], "example.com", 7999, False),
    (["example.com:8000-8999"], "example.com", 9000, False),
    (["*:*"], "x.test", 22, True),
    (["192.0.2.1:80"], "192.0.2.1", 80, True),
    (["192.0.2.1:80"], "192.0.2.2", 80, False),
    (["192.0.2.1:80"], "::ffff:192.0.2.1", 80, False),  # an address matches as itself only
    (["[2001:db8::1]:22"], "2001:db8::1", 22, True),
    (["[2001:db8::1]:22"], "2001:DB8:0:0::1", 22, True),
    (["[2001:db8::1]:22"], "[2001:db8::1]", 22, True),
    (["[2001:db8::1]:22"], "2001:db8::2", 22, False),
    (["[2001:0DB8::0001]:22"], "2001:db8::1", 22, True),
    (["example.com:443"], "192.0.2.1", 443, False),  # names match names, addresses addresses
    (["*.example.com:*"], "192.0.2.1", 443, False),
    (["192.0.2.1:*"], "one.example.com", 443, False),
    (["a.test:1", "b.test:2-3", "*.c.test:*"], "b.test", 3, True),
    (["a.test:1", "b.test:2-3", "*.c.test:*"], "x.c.test", 9, True),
    (["a.test:1", "b.test:2-3", "*.c.test:*"], "a.test", 2, False),
]


@pytest.mark.parametrize(("patterns", "host", "port", "allowed"), MATCHES)
def test_allowlist_matching(patterns: list[str], host: str, port: int, allowed: bool) -> None:
    assert Allowlist(patterns).allows(host, port) is allowed


INVALID_PATTERNS = [
    "example.com", "example.com:", ":443", "*:", "example.com:0", "example.com:65536", "example.com:9-8",
    "example.com:1-", "example.com:-5", "example.com:http", "example.com:1-2-3", "example.com:**",
    "exa mple.com:80", "a..b:80", "*.*.example.com:80", "*example.com:80", "www.*.example.com:80",
    "*.192.0.2.1:80", "::1:80", "[::1:80", "[192.0.2.1]:80", "[not-v6]:80", "256.0.0.1:80", "127.1:80",
    "caf\u00e9.test:80",
]


@pytest.mark.parametrize("pattern", INVALID_PATTERNS)
def test_invalid_patterns_are_value_errors_naming_them(pattern: str) -> None:
    with pytest.raises(ValueError) as caught:
        Allowlist(["ok.test:1", pattern])
    assert repr(pattern) in str(caught.value)


def test_one_string_instead_of_a_list_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        Allowlist("example.com:443")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.216.34", True), ("2606:2800:220:1:248:1893:25c8:1946", True), ("::ffff:93.184.216.34", True),
        ("127.0.0.1", False), ("127.8.9.10", False), ("::1", False), ("10.1.2.3", False), ("172.16.0.1", False),
        ("192.168.1.1", False), ("169.254.169.254", False), ("fe80::1", False), ("fc00::1", False),
        ("100.64.0.1", False), ("0.0.0.0", False), ("::", False), ("224.0.0.1", False), ("ff02::1", False),
        ("::ffff:127.0.0.1", False), ("::ffff:10.0.0.1", False), ("64:ff9b::a00:1", False),
        ("64:ff9b::5db8:d822", True),
    ],
)
def test_resolved_addresses_are_checked_for_private_ranges(address: str, public: bool) -> None:
    allowlist = Allowlist(["*.example.com:443", "*:80"])
    ip = ipaddress.ip_address(address)
    assert allowlist.allows_address("www.example.com", 443, ip) is public
    assert allowlist.allows_address(address, 80, ip) is public  # `*` is no licence for private addresses
    assert Allowlist(["*.example.com:443"], allow_private=True).allows_address("www.example.com", 443, ip)


def test_an_ip_literal_pattern_allows_its_private_address() -> None:
    allowlist = Allowlist(["10.0.0.5:5432", "[::1]:8080"])
    assert allowlist.allows_address("10.0.0.5", 5432, ipaddress.ip_address("10.0.0.5"))
    assert allowlist.allows_address("::1", 8080, ipaddress.ip_address("::1"))
    assert not allowlist.allows_address("10.0.0.5", 5433, ipaddress.ip_address("10.0.0.5"))


# ---------------------------------------------------------------------------------- registry


def test_registry_has_echo_and_discard_and_validates_names() -> None:
    registry = ServiceRegistry()
    assert registry.names() == ["discard", "echo"]
    assert registry.get("nope") is None
    assert ServiceRegistry(builtins=False).names() == []

    async def service(reader, writer) -> None:
        pass

    registry.register("my_svc-2", service)
    assert registry.get("my_svc-2") is service
    for bad in ["", "Echo", "-x", "x" * 33, "a.b", "a:1"]:
        with pytest.raises(ValueError):
            registry.register(bad, service)


# ------------------------------------------------------------------------------ the exit, live

StartExit = Callable[[ExitServices], Awaitable[int]]


@pytest.fixture
async def start_exit() -> AsyncIterator[StartExit]:
    """Starts "exits" (servers whose handler is `serve`); at the end, every handler must have
    finished and none may have raised."""
    servers: list[asyncio.Server] = []
    handlers: set[asyncio.Task] = set()
    escaped: list[BaseException] = []

    async def start(services: ExitServices) -> int:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            handlers.add(asyncio.current_task())  # type: ignore[arg-type]
            try:
                await services.serve(reader, writer)
            except BaseException as exc:
                escaped.append(exc)
                raise

        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        servers.append(server)
        return server.sockets[0].getsockname()[1]

    yield start
    await asyncio.wait_for(asyncio.gather(*handlers, return_exceptions=True), 5)
    for server in servers:
        server.close()
    assert escaped == []


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[int, list[bytes]]]:
    """A local HTTP-ish destination: reads a request head, answers 256 KiB of fixed pseudo-random
    bytes after a header naming the path, and closes. Records every request head it gets."""
    heads: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            heads.append(head)
            writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(BODY) + BODY)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            heads.append(b"")
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1], heads
    server.close()


BODY = random.Random(1).randbytes(256 * 1024)
RESPONSE = b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(BODY) + BODY
GET = b"GET /path HTTP/1.0\r\nHost: example.test\r\n\r\n"


async def open_stream(port: int, target: Target) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await asyncio.wait_for(request_target(reader, writer, target), 10)
    except BaseException:
        writer.close()
        raise
    return reader, writer


async def refused_with(port: int, target: Target) -> TargetError:
    with pytest.raises(TargetError) as caught:
        await open_stream(port, target)
    return caught.value


async def send_and_receive(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes
) -> bytes:
    """Writes `data` then end of file while reading until end of file (both at once, so neither
    side's buffer has to hold it all)."""

    async def send() -> None:
        for at in range(0, len(data), 65536):
            writer.write(data[at : at + 65536])
            await writer.drain()
        writer.write_eof()

    sender = asyncio.create_task(send())
    received = await asyncio.wait_for(reader.read(), 10)
    await sender
    writer.close()
    return received


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def counted(**expected: int) -> dict[str, int]:
    return {outcome: expected.get(outcome, 0) for outcome in OUTCOMES}


async def test_echo_returns_one_mebibyte_byte_exact(start_exit: StartExit) -> None:
    services = ExitServices()
    port = await start_exit(services)
    data = random.Random(2).randbytes(1 << 20)
    reader, writer = await open_stream(port, Target.service("echo"))
    assert await send_and_receive(reader, writer, data) == data
    assert services.counters == counted(ok=1)


async def test_bytes_sent_with_the_request_reach_the_service_first(start_exit: StartExit) -> None:
    port = await start_exit(ExitServices())
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(encode_request(Target.service("echo")) + b"early ")  # without waiting for the status
    received = await send_and_receive(reader, writer, b"later")
    assert received == bytes([Status.OK]) + b"early later"


async def test_a_service_can_read_exactly_across_the_early_bytes(start_exit: StartExit) -> None:
    async def greet(reader, writer) -> None:
        name = await reader.readexactly(5)
        writer.write(b"hello " + name)
        await writer.drain()
        writer.write_eof()

    registry = ServiceRegistry()
    registry.register("greet", greet)
    port = await start_exit(ExitServices(registry))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(encode_request(Target.service("greet")) + b"wor")
    await asyncio.sleep(0.01)  # the rest arrives later, on its own
    assert await send_and_receive(reader, writer, b"ld") == b"\x00hello world"


async def test_a_short_stream_gives_the_service_the_early_bytes_as_partial(start_exit: StartExit) -> None:
    async def greet(reader, writer) -> None:
        try:
            await reader.readexactly(5)
        except asyncio.IncompleteReadError as exc:
            writer.write(b"partial " + exc.partial)
            await writer.drain()

    registry = ServiceRegistry()
    registry.register("greet", greet)
    port = await start_exit(ExitServices(registry))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(encode_request(Target.service("greet")) + b"wo")
    assert await send_and_receive(reader, writer, b"r") == b"\x00partial wor"


async def test_discard_reads_everything_and_closes(start_exit: StartExit) -> None:
    services = ExitServices()
    port = await start_exit(services)
    reader, writer = await open_stream(port, Target.service("discard"))
    assert await send_and_receive(reader, writer, bytes(300_000)) == b""
    assert services.counters == counted(ok=1)


async def test_unknown_service_is_refused(start_exit: StartExit) -> None:
    services = ExitServices()
    port = await start_exit(services)
    error = await refused_with(port, Target.service("nosuch"))
    assert error.status is Status.UNKNOWN_SERVICE
    assert reply_for(error) is SocksReply.NOT_ALLOWED
    assert services.counters == counted(unknown_service=1)


async def test_a_failing_service_ends_only_its_stream(start_exit: StartExit) -> None:
    async def broken(reader, writer) -> None:
        raise RuntimeError("a bug in a service")

    registry = ServiceRegistry()
    registry.register("broken", broken)
    services = ExitServices(registry)
    port = await start_exit(services)
    reader, writer = await open_stream(port, Target.service("broken"))
    assert await asyncio.wait_for(reader.read(), 10) == b""
    writer.close()
    reader, writer = await open_stream(port, Target.service("echo"))  # the exit still serves
    assert await send_and_receive(reader, writer, b"ping") == b"ping"


async def test_allowed_tcp_destination_is_relayed_byte_exact(start_exit: StartExit, upstream) -> None:
    up_port, heads = upstream
    services = ExitServices(allowlist=Allowlist([f"127.0.0.1:{up_port}"]))
    port = await start_exit(services)
    reader, writer = await open_stream(port, Target.tcp("127.0.0.1", up_port))
    writer.write(GET)
    assert await asyncio.wait_for(reader.read(), 10) == RESPONSE
    writer.close()
    assert heads == [GET]
    assert services.counters == counted(ok=1)


async def test_a_pipelined_request_reaches_the_destination(start_exit: StartExit, upstream) -> None:
    up_port, heads = upstream
    port = await start_exit(ExitServices(allowlist=Allowlist([f"127.0.0.1:{up_port}"])))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(encode_request(Target.tcp("127.0.0.1", up_port)) + GET)  # one write: request, then data
    assert await asyncio.wait_for(reader.read(), 10) == bytes([Status.OK]) + RESPONSE
    writer.close()
    assert heads == [GET]


async def test_relay_carries_a_mebibyte_both_ways_with_half_closes(start_exit: StartExit) -> None:
    async def tcp_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
        writer.close()

    echo_server = await asyncio.start_server(tcp_echo, "127.0.0.1", 0)
    echo_port = echo_server.sockets[0].getsockname()[1]
    port = await start_exit(ExitServices(allowlist=Allowlist([f"127.0.0.1:{echo_port}"])))
    data = random.Random(3).randbytes(1 << 20)
    reader, writer = await open_stream(port, Target.tcp("127.0.0.1", echo_port))
    assert await send_and_receive(reader, writer, data) == data
    echo_server.close()


async def test_a_closed_port_is_connection_refused(start_exit: StartExit) -> None:
    closed = free_port()
    services = ExitServices(allowlist=Allowlist([f"127.0.0.1:{closed}"]))
    port = await start_exit(services)
    error = await refused_with(port, Target.tcp("127.0.0.1", closed))
    assert error.status is Status.CONNECTION_REFUSED
    assert reply_for(error) is SocksReply.CONNECTION_REFUSED
    assert services.counters == counted(refused=1)


async def test_off_the_allowlist_is_refused_without_a_lookup_or_a_connection(
    start_exit: StartExit, upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    up_port, heads = upstream
    lookups: list[object] = []
    loop = asyncio.get_running_loop()

    async def no_lookup(*args: object, **kwargs: object) -> list:
        lookups.append(args)
        raise AssertionError("the exit resolved a name it does not allow")

    monkeypatch.setattr(loop, "getaddrinfo", no_lookup)
    services = ExitServices(allowlist=Allowlist([f"127.0.0.1:{up_port + 1}", "allowed.test:80"]))
    port = await start_exit(services)
    for target in [Target.tcp("127.0.0.1", up_port), Target.tcp("other.test", up_port), Target.tcp("allowed.test", 81)]:
        error = await refused_with(port, target)
        assert error.status is Status.NOT_ALLOWED
        assert reply_for(error) is SocksReply.NOT_ALLOWED
    assert lookups == [] and heads == []
    assert services.counters == counted(not_allowed=3)


async def test_empty_allowlist_refuses_everything(start_exit: StartExit, upstream) -> None:
    up_port, heads = upstream
    port = await start_exit(ExitServices())
    for target in [Target.tcp("127.0.0.1", up_port), Target.tcp("localhost", up_port)]:
        assert (await refused_with(port, target)).status is Status.NOT_ALLOWED
    assert heads == []


async def test_a_name_resolving_to_loopback_is_refused_unless_private_is_allowed(
    start_exit: StartExit, upstream
) -> None:
    up_port, heads = upstream
    by_name = ExitServices(allowlist=Allowlist([f"localhost:{up_port}"]))
    error = await refused_with(await start_exit(by_name), Target.tcp("localhost", up_port))
    assert error.status is Status.NOT_ALLOWED
    assert heads == []

    everything = ExitServices(allowlist=Allowlist(["*:*"]))  # `*` does not lift the private rule
    assert (await refused_with(await start_exit(everything), Target.tcp("127.0.0.1", up_port))).status is (
        Status.NOT_ALLOWED
    )

    private_ok = ExitServices(allowlist=Allowlist([f"localhost:{up_port}"], allow_private=True))
    reader, writer = await open_stream(await start_exit(private_ok), Target.tcp("localhost", up_port))
    writer.write(GET)
    assert await asyncio.wait_for(reader.read(), 10) == RESPONSE
    writer.close()
    assert heads == [GET]


async def test_a_name_that_does_not_resolve(start_exit: StartExit) -> None:
    services = ExitServices(allowlist=Allowlist(["*.invalid:*"]), connect_timeout_s=8)
    port = await start_exit(services)
    error = await refused_with(port, Target.tcp("no-such-host.invalid", 80))
    assert error.status is Status.NAME_NOT_RESOLVED
    assert reply_for(error) is SocksReply.HOST_UNREACHABLE
    assert services.counters == counted(name_not_resolved=1)


@pytest.mark.parametrize(
    ("wire", "status"),
    [
        (b"\x01\x00", Status.MALFORMED),
        (b"\x01\x05ECHO!", Status.MALFORMED),
        (b"\x01\x0aexample:0x", Status.MALFORMED),
        (b"\x05\x01\x00", Status.UNSUPPORTED_VERSION),  # a SOCKS client pointed at an exit
        (b"GET / HTTP/1.1\r\n\r\n", Status.UNSUPPORTED_VERSION),
        (b"\x01\x05ec", Status.MALFORMED),  # then end of file inside the request
        (b"", Status.MALFORMED),  # end of file before any byte
    ],
)
async def test_malformed_requests_get_a_status_and_the_stream_ends(
    start_exit: StartExit, wire: bytes, status: Status
) -> None:
    services = ExitServices()
    port = await start_exit(services)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(wire)
    writer.write_eof()
    assert await asyncio.wait_for(reader.read(), 10) == bytes([status])
    writer.close()
    assert services.counters == counted(malformed=1)


async def test_a_client_that_sends_nothing_is_timed_out(start_exit: StartExit) -> None:
    services = ExitServices(request_timeout_s=0.2)
    port = await start_exit(services)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"\x01")  # a request begun, never finished, the stream left open
    assert await asyncio.wait_for(reader.read(), 10) == bytes([Status.TIMEOUT])
    writer.close()
    assert services.counters == counted(timeout=1)


async def test_a_client_that_vanishes_does_not_break_serve(start_exit: StartExit) -> None:
    services = ExitServices()
    port = await start_exit(services)
    for wire in [b"", b"\x01\x04ec", encode_request(Target.service("echo")) + b"x" * 100_000]:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(wire)
        writer.transport.abort()  # a reset, not a clean close
    reader, writer = await open_stream(port, Target.service("echo"))
    assert await send_and_receive(reader, writer, b"still here") == b"still here"
    # the fixture checks that no serve() raised


async def test_logs_name_outcomes_never_destinations(
    start_exit: StartExit, upstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="nyx.stream")
    up_port, _ = upstream
    closed = free_port()
    services = ExitServices(allowlist=Allowlist([f"127.0.0.1:{closed}", "localhost:*", "*.invalid:*"]))
    port = await start_exit(services)
    for target in [Target.tcp("127.0.0.1", closed), Target.tcp("localhost", up_port),
                   Target.tcp("secret-host.invalid", 4242), Target.tcp("secret.example", 4242)]:
        await refused_with(port, target)
    assert "refused" in caplog.text and "not_allowed" in caplog.text
    for secret in ["127.0.0.1", "localhost", "secret", str(closed), str(up_port), "4242"]:
        assert secret not in caplog.text
