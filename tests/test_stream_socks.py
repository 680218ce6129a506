"""The SOCKS5 front: RFC 1928 bytes in and out of the sans-I/O core, then real sockets.

Byte strings are written out in hex so a reader can check them against RFC 1928 sections 3-6:
greeting 05 NMETHODS METHODS, method selection 05 METHOD, request 05 CMD 00 ATYP ADDR PORT,
reply 05 REP 00 ATYP ADDR PORT.
"""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from nyx.stream.socks import (
    MAX_EARLY_DATA_BYTES,
    ConnectFailure,
    ConnectRequest,
    Data,
    EndOfData,
    Event,
    Socks5ServerConnection,
    SocksProtocolError,
    SocksReply,
    SocksState,
    SocksUsageError,
    failure_of,
    reply_for,
    serve_socks5,
)

GREETING = bytes.fromhex("050100")
CURL_GREETING = bytes.fromhex("05020001")  # curl offers no-auth and GSSAPI
NO_AUTH_SELECTED = bytes.fromhex("0500")
SUCCESS_UNSPECIFIED = bytes.fromhex("05000001 00000000 0000")
# What `curl --socks5-hostname 127.0.0.1:1080 http://example.test/` sends after its greeting:
CURL_REQUEST = bytes.fromhex("05010003 0c") + b"example.test" + bytes.fromhex("0050")
IPV4_REQUEST = bytes.fromhex("05010001 c0000201 01bb")  # 192.0.2.1:443
IPV6_REQUEST = bytes.fromhex("05010004 20010db8000000000000000000000001 0016")  # [2001:db8::1]:22


def domain_request(name: bytes, port: int = 80) -> bytes:
    return bytes.fromhex("05010003") + bytes([len(name)]) + name + port.to_bytes(2, "big")


def refusal(code: int) -> bytes:
    return bytes((5, code, 0, 1)) + bytes(6)


def greeted() -> Socks5ServerConnection:
    conn = Socks5ServerConnection()
    assert conn.receive_data(GREETING) == []
    assert conn.data_to_send() == NO_AUTH_SELECTED
    return conn


def requested(request: bytes = CURL_REQUEST) -> Socks5ServerConnection:
    conn = greeted()
    assert len(conn.receive_data(request)) == 1
    return conn


# ------------------------------------------------------------------------------------- greeting


def test_greeting_offering_no_auth_selects_method_zero() -> None:
    conn = Socks5ServerConnection()
    assert conn.receive_data(GREETING) == []
    assert conn.data_to_send() == NO_AUTH_SELECTED
    assert conn.state is SocksState.REQUEST


def test_curls_two_method_greeting_selects_no_auth() -> None:
    conn = Socks5ServerConnection()
    conn.receive_data(CURL_GREETING)
    assert conn.data_to_send() == NO_AUTH_SELECTED


@pytest.mark.parametrize("greeting", ["050102", "05020102", "0500"], ids=["userpass", "gssapi+userpass", "none"])
def test_greeting_without_no_auth_is_answered_ff_and_closes(greeting: str) -> None:
    conn = Socks5ServerConnection()
    with pytest.raises(SocksProtocolError, match="only 0x00") as caught:
        conn.receive_data(bytes.fromhex(greeting))
    assert caught.value.reply is None
    assert conn.data_to_send() == bytes.fromhex("05ff")
    assert conn.state is SocksState.CLOSED


@pytest.mark.parametrize(("first", "hint"), [(b"\x04\x01", "SOCKS4"), (b"GET / HTTP/1.1\r\n", "HTTP")])
def test_a_client_of_another_protocol_gets_no_reply_and_a_hint(first: bytes, hint: str) -> None:
    conn = Socks5ServerConnection()
    with pytest.raises(SocksProtocolError, match=hint) as caught:
        conn.receive_data(first)
    assert caught.value.reply is None
    assert conn.data_to_send() == b""


# -------------------------------------------------------------------------------------- request


def test_curls_domain_request_gives_the_name_unresolved_and_success_reply() -> None:
    conn = Socks5ServerConnection()
    conn.receive_data(CURL_GREETING)
    assert conn.data_to_send() == NO_AUTH_SELECTED
    assert conn.receive_data(CURL_REQUEST) == [ConnectRequest("example.test", 80, "domain")]
    assert conn.state is SocksState.AWAITING_REPLY
    assert conn.data_to_send() == b""  # nothing until the caller decides
    assert conn.accept() == []
    assert conn.data_to_send() == SUCCESS_UNSPECIFIED
    assert conn.state is SocksState.CONNECTED


def test_ipv4_request_gives_dotted_address() -> None:
    conn = greeted()
    assert conn.receive_data(IPV4_REQUEST) == [ConnectRequest("192.0.2.1", 443, "ipv4")]


def test_ipv6_request_gives_compressed_address() -> None:
    conn = greeted()
    assert conn.receive_data(IPV6_REQUEST) == [ConnectRequest("2001:db8::1", 22, "ipv6")]


def test_accept_encodes_the_bound_address() -> None:
    conn = requested()
    conn.accept("192.0.2.7", 1080)
    assert conn.data_to_send() == bytes.fromhex("05000001 c0000207 0438")
    conn = requested()
    conn.accept("::1", 1)
    assert conn.data_to_send() == bytes.fromhex("05000004") + bytes(15) + b"\x01" + bytes.fromhex("0001")


def test_accept_refuses_a_bound_name_as_a_local_error() -> None:
    with pytest.raises(ValueError):
        requested().accept("localhost", 0)


@pytest.mark.parametrize("reason", [r for r in SocksReply if r is not SocksReply.SUCCEEDED], ids=lambda r: r.name)
def test_every_refusal_code_is_sent_and_closes(reason: SocksReply) -> None:
    conn = requested()
    conn.refuse(reason)
    assert conn.data_to_send() == refusal(reason)
    assert conn.state is SocksState.CLOSED


def test_refuse_with_success_is_a_local_error() -> None:
    with pytest.raises(ValueError, match="accept"):
        requested().refuse(SocksReply.SUCCEEDED)


@pytest.mark.parametrize(("command", "name"), [(0x02, "BIND"), (0x03, "UDP ASSOCIATE"), (0x09, "0x09")])
def test_commands_other_than_connect_get_command_not_supported(command: int, name: str) -> None:
    conn = greeted()
    request = bytearray(IPV4_REQUEST)
    request[1] = command
    with pytest.raises(SocksProtocolError, match=name) as caught:
        conn.receive_data(bytes(request))
    assert caught.value.reply is SocksReply.COMMAND_NOT_SUPPORTED
    assert conn.data_to_send() == refusal(0x07)
    assert conn.state is SocksState.CLOSED


def test_unknown_address_type_gets_address_type_not_supported() -> None:
    conn = greeted()
    with pytest.raises(SocksProtocolError) as caught:
        conn.receive_data(bytes.fromhex("05010002"))
    assert caught.value.reply is SocksReply.ADDRESS_TYPE_NOT_SUPPORTED
    assert conn.data_to_send() == refusal(0x08)


@pytest.mark.parametrize("request_bytes", ["04010001", "05010101"], ids=["version", "rsv"])
def test_malformed_request_header_gets_general_failure(request_bytes: str) -> None:
    conn = greeted()
    with pytest.raises(SocksProtocolError) as caught:
        conn.receive_data(bytes.fromhex(request_bytes))
    assert caught.value.reply is SocksReply.GENERAL_FAILURE
    assert conn.data_to_send() == refusal(0x01)


# ---------------------------------------------------------------------------- domain validation


@pytest.mark.parametrize(
    "name",
    [b"example.test", b"example.test.", b"xn--bcher-kva.example", b"_dmarc.example.com", b"a" * 63 + b".b",
     b"localhost", b"10.0.0.1", b"A-b_C.9", (b"a" * 63 + b".") * 3 + b"a" * 63],
)
def test_valid_domain_names_pass_as_given(name: bytes) -> None:
    conn = greeted()
    assert conn.receive_data(domain_request(name, 8080)) == [ConnectRequest(name.decode(), 8080, "domain")]


@pytest.mark.parametrize(
    "name",
    [b"", b".", b"a..b", b".a", b"a.b..", b"ex ample", b"exa/mple", b"host:80", b"[::1]", b"a" * 64,
     "b\u00fccher.example".encode(), b"a\x00b", b"a\nb"],
)
def test_invalid_domain_names_get_general_failure(name: bytes) -> None:
    conn = greeted()
    with pytest.raises(SocksProtocolError, match="domain name") as caught:
        conn.receive_data(domain_request(name))
    assert caught.value.reply is SocksReply.GENERAL_FAILURE
    assert conn.data_to_send() == refusal(0x01)


def test_errors_do_not_carry_the_destination() -> None:
    conn = greeted()
    with pytest.raises(SocksProtocolError) as caught:
        conn.receive_data(domain_request(b"secret-site..example"))
    assert "secret" not in str(caught.value)


# -------------------------------------------------------------------------- splits and pipelining


def feed(conn: Socks5ServerConnection, chunks: list[bytes]) -> tuple[list[Event], bytes]:
    events: list[Event] = []
    sent = b""
    for chunk in chunks:
        events += conn.receive_data(chunk)
        sent += conn.data_to_send()
    return events, sent


@pytest.mark.parametrize("request_bytes", [CURL_REQUEST, IPV4_REQUEST, IPV6_REQUEST], ids=["domain", "ipv4", "ipv6"])
def test_one_byte_at_a_time_gives_the_same_as_one_chunk(request_bytes: bytes) -> None:
    wire = CURL_GREETING + request_bytes + b"GET"
    whole_events, whole_sent = feed(Socks5ServerConnection(), [wire])
    conn = Socks5ServerConnection()
    events, sent = feed(conn, [wire[i : i + 1] for i in range(len(wire))])
    assert events == whole_events and len(events) == 1
    assert sent == whole_sent == NO_AUTH_SELECTED
    assert conn.accept() == [Data(b"GET")]


def test_payload_pipelined_with_the_request_is_returned_by_accept() -> None:
    conn = Socks5ServerConnection()
    events = conn.receive_data(GREETING + CURL_REQUEST + b"GET / HTTP/1.0\r\n")
    assert events == [ConnectRequest("example.test", 80, "domain")]
    assert conn.receive_data(b"\r\n") == []  # still held: the stream is not open yet
    assert conn.accept() == [Data(b"GET / HTTP/1.0\r\n\r\n")]
    assert conn.receive_data(b"more") == [Data(b"more")]


def test_refuse_drops_pipelined_payload_and_later_bytes() -> None:
    conn = Socks5ServerConnection()
    conn.receive_data(GREETING + CURL_REQUEST + b"GET")
    conn.data_to_send()
    conn.refuse(SocksReply.NOT_ALLOWED)
    assert conn.receive_data(b"more") == []
    assert conn.data_to_send() == refusal(0x02)


def test_too_much_early_data_is_a_protocol_error() -> None:
    conn = requested()
    conn.receive_data(b"x" * MAX_EARLY_DATA_BYTES)
    with pytest.raises(SocksProtocolError) as caught:
        conn.receive_data(b"x")
    assert caught.value.reply is SocksReply.GENERAL_FAILURE
    assert conn.data_to_send() == refusal(0x01)


# ---------------------------------------------------------------------------------- end of file


def test_end_of_file_after_connect_is_end_of_data() -> None:
    conn = requested()
    conn.accept()
    assert conn.receive_data(b"") == [EndOfData()]
    with pytest.raises(SocksUsageError, match="end of file"):
        conn.receive_data(b"late")


def test_end_of_file_before_the_reply_is_reported_by_accept() -> None:
    conn = requested(CURL_REQUEST + b"GET")
    assert conn.receive_data(b"") == []
    assert conn.accept() == [Data(b"GET"), EndOfData()]


def test_end_of_file_between_messages_closes_quietly() -> None:
    conn = Socks5ServerConnection()
    assert conn.receive_data(b"") == []
    assert conn.state is SocksState.CLOSED
    conn = greeted()
    assert conn.receive_data(b"") == []
    assert conn.state is SocksState.CLOSED


def test_end_of_file_in_a_truncated_greeting_is_an_error_without_reply() -> None:
    conn = Socks5ServerConnection()
    conn.receive_data(b"\x05\x02\x00")
    with pytest.raises(SocksProtocolError, match="greeting") as caught:
        conn.receive_data(b"")
    assert caught.value.reply is None
    assert conn.data_to_send() == b""


def test_end_of_file_in_a_truncated_request_gets_general_failure() -> None:
    conn = greeted()
    conn.receive_data(CURL_REQUEST[:-1])
    with pytest.raises(SocksProtocolError, match="request") as caught:
        conn.receive_data(b"")
    assert caught.value.reply is SocksReply.GENERAL_FAILURE
    assert conn.data_to_send() == refusal(0x01)


# ------------------------------------------------------------------------------------ misuse


def test_accept_or_refuse_before_a_request_is_a_usage_error() -> None:
    for conn in (Socks5ServerConnection(), greeted()):
        with pytest.raises(SocksUsageError, match="only valid after a ConnectRequest"):
            conn.accept()
        with pytest.raises(SocksUsageError):
            conn.refuse(SocksReply.GENERAL_FAILURE)


def test_a_second_decision_is_a_usage_error() -> None:
    conn = requested()
    conn.accept()
    with pytest.raises(SocksUsageError, match="connected"):
        conn.accept()
    conn = requested()
    conn.refuse(SocksReply.NOT_ALLOWED)
    with pytest.raises(SocksUsageError, match="closed"):
        conn.accept()


# ------------------------------------------------------------------------------ reply mapping


@pytest.mark.parametrize(
    ("failure", "reply"),
    [
        (ConnectFailure.NO_ROUTE, SocksReply.NETWORK_UNREACHABLE),
        (ConnectFailure.NOT_ALLOWED, SocksReply.NOT_ALLOWED),
        (ConnectFailure.CONNECTION_REFUSED, SocksReply.CONNECTION_REFUSED),
        (ConnectFailure.HOST_UNREACHABLE, SocksReply.HOST_UNREACHABLE),
        (ConnectFailure.NAME_NOT_RESOLVED, SocksReply.HOST_UNREACHABLE),
        (ConnectFailure.TIMEOUT, SocksReply.TTL_EXPIRED),
        (ConnectFailure.RATE_LIMITED, SocksReply.GENERAL_FAILURE),
        (ConnectFailure.OTHER, SocksReply.GENERAL_FAILURE),
    ],
)
def test_reply_for_maps_each_failure(failure: ConnectFailure, reply: SocksReply) -> None:
    assert reply_for(failure) is reply


class _ExitRefused(Exception):
    connect_failure = ConnectFailure.NOT_ALLOWED


@pytest.mark.parametrize(
    ("exc", "reply"),
    [
        (_ExitRefused(), SocksReply.NOT_ALLOWED),
        (ConnectionRefusedError(), SocksReply.CONNECTION_REFUSED),
        (TimeoutError(), SocksReply.TTL_EXPIRED),
        (socket.gaierror(socket.EAI_NONAME, "no name"), SocksReply.HOST_UNREACHABLE),
        (OSError(errno.ENETUNREACH, "unreachable"), SocksReply.NETWORK_UNREACHABLE),
        (OSError(errno.EHOSTUNREACH, "unreachable"), SocksReply.HOST_UNREACHABLE),
        (ValueError("bug"), SocksReply.GENERAL_FAILURE),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else None,
)
def test_reply_for_reads_exceptions(exc: BaseException, reply: SocksReply) -> None:
    assert reply_for(exc) is reply
    assert isinstance(failure_of(exc), ConnectFailure)


# ------------------------------------------------------------------------------- real sockets


class _HelloHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"hello from {self.headers['Host']} {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http_port() -> Iterator[int]:
    """A local HTTP server standing in for the destination behind the exit."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _HelloHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


async def _core_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target_port: int,
                       seen: list[ConnectRequest]) -> None:
    """A minimal shell around the core, as the test's "exit": every destination is the local
    HTTP server (so example.test needs no DNS anywhere)."""
    conn = Socks5ServerConnection()
    try:
        request = None
        while request is None and conn.state is not SocksState.CLOSED:
            events = conn.receive_data(await reader.read(4096))
            writer.write(conn.data_to_send())
            request = next((e for e in events if isinstance(e, ConnectRequest)), None)
        if request is None:
            return
        seen.append(request)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target_port)
        for event in conn.accept():
            if isinstance(event, Data):
                up_writer.write(event.data)
        writer.write(conn.data_to_send())

        async def client_to_destination() -> None:
            while events := conn.receive_data(await reader.read(4096)):
                for event in events:
                    if isinstance(event, Data):
                        up_writer.write(event.data)
                        await up_writer.drain()

        pump = asyncio.create_task(client_to_destination())
        while chunk := await up_reader.read(4096):  # HTTP/1.0: the server closes after answering
            writer.write(chunk)
            await writer.drain()
        pump.cancel()
        up_writer.close()
    finally:
        writer.close()


@pytest.fixture
async def socks_port(http_port: int) -> AsyncIterator[tuple[int, list[ConnectRequest]]]:
    seen: list[ConnectRequest] = []
    server = await asyncio.start_server(lambda r, w: _core_server(r, w, http_port, seen), "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1], seen
    server.close()


async def test_hand_built_curl_bytes_reach_the_http_server_through_the_core(socks_port) -> None:
    port, seen = socks_port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(CURL_GREETING)
    assert await reader.readexactly(2) == NO_AUTH_SELECTED
    writer.write(CURL_REQUEST)
    assert await reader.readexactly(10) == SUCCESS_UNSPECIFIED
    writer.write(b"GET /path HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n")
    response = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert response.startswith(b"HTTP/1.0 200")
    assert response.endswith(b"hello from example.test /path")
    assert seen == [ConnectRequest("example.test", 80, "domain")]


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed (the hand-built test covers this)")
async def test_curl_socks5_hostname_reaches_the_http_server(socks_port) -> None:
    port, seen = socks_port
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    curl = await asyncio.create_subprocess_exec(
        "curl", "-q", "-sS", "--max-time", "10", "--socks5-hostname", f"127.0.0.1:{port}",
        "http://example.test/path", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )
    out, err = await curl.communicate()
    assert curl.returncode == 0, err.decode()
    assert out == b"hello from example.test /path"
    assert seen == [ConnectRequest("example.test", 80, "domain")]  # the name reached the "exit" unresolved


# ---------------------------------------------------------------------------------- serve_socks5


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while chunk := await reader.read(4096):
        writer.write(chunk)
        await writer.drain()
    writer.close()


@pytest.fixture
async def serve_with_echo():
    echo = await asyncio.start_server(_echo, "127.0.0.1", 0)
    echo_port = echo.sockets[0].getsockname()[1]
    seen: list[ConnectRequest] = []

    async def connect(request: ConnectRequest):
        seen.append(request)
        if request.host == "refused.test":
            raise ConnectionRefusedError()
        return await asyncio.open_connection("127.0.0.1", echo_port)

    listening: asyncio.Future[tuple[str, int]] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve_socks5("127.0.0.1", 0, connect, on_listening=listening.set_result))
    address = await asyncio.wait_for(listening, 5)
    yield address[1], seen, task
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    echo.close()


async def test_serve_socks5_relays_both_ways_and_half_closes(serve_with_echo) -> None:
    port, seen, _ = serve_with_echo
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(GREETING + domain_request(b"echo.test", 7) + b"early ")  # pipelined payload
    assert await reader.readexactly(12) == NO_AUTH_SELECTED + SUCCESS_UNSPECIFIED
    writer.write(b"x" * 200_000)
    writer.write_eof()  # the echo server closes when it sees our end; we then see its end
    assert await asyncio.wait_for(reader.read(), 10) == b"early " + b"x" * 200_000
    writer.close()
    assert seen == [ConnectRequest("echo.test", 7, "domain")]


async def test_serve_socks5_turns_a_connect_failure_into_its_reply(serve_with_echo) -> None:
    port, _, _ = serve_with_echo
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(GREETING + domain_request(b"refused.test"))
    assert await asyncio.wait_for(reader.read(), 10) == NO_AUTH_SELECTED + refusal(0x05)
    writer.close()


async def test_serve_socks5_answers_a_protocol_error_and_keeps_serving(serve_with_echo) -> None:
    port, _, _ = serve_with_echo
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(GREETING + bytes.fromhex("05020001"))  # BIND
    assert await asyncio.wait_for(reader.read(), 10) == NO_AUTH_SELECTED + refusal(0x07)
    writer.close()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(GREETING + IPV4_REQUEST)
    assert await reader.readexactly(12) == NO_AUTH_SELECTED + SUCCESS_UNSPECIFIED
    writer.close()


async def test_cancelling_serve_socks5_closes_open_relays(serve_with_echo) -> None:
    port, _, task = serve_with_echo
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(GREETING + IPV4_REQUEST + b"ping")
    assert await reader.readexactly(16) == NO_AUTH_SELECTED + SUCCESS_UNSPECIFIED + b"ping"
    task.cancel()
    assert await asyncio.wait_for(reader.read(), 10) == b""  # the relay was cancelled and closed us
    writer.close()


async def test_serve_socks5_drops_a_client_that_sends_no_request_in_time() -> None:
    async def connect(request: ConnectRequest):
        raise AssertionError("no request was sent")

    listening: asyncio.Future[tuple[str, int]] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        serve_socks5("127.0.0.1", 0, connect, handshake_timeout_s=0.2, on_listening=listening.set_result)
    )
    _, port = await asyncio.wait_for(listening, 5)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(GREETING)  # and never a request
    assert await asyncio.wait_for(reader.read(), 5) == NO_AUTH_SELECTED
    writer.close()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
