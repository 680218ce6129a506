"""The target request and status: bytes in and out of the sans-I/O parser, the status mapping
onto socks.py's ConnectFailure (hence SOCKS replies), and a fuzz test of the parser.

Requests are written as bytes so a reader can check them against docs/exit.md:
01 LEN TARGET, then one status byte back.
"""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nyx.stream.socks import ConnectFailure, SocksReply, failure_of, reply_for
from nyx.stream.target import (
    MAX_REQUEST_BYTES,
    RequestParser,
    Status,
    Target,
    TargetError,
    encode_request,
    failure_for_status,
    request_target,
    status_for_failure,
)

# ----------------------------------------------------------------------------------- the target


@pytest.mark.parametrize(
    ("text", "target"),
    [
        ("echo", Target("service", "echo")),
        ("a", Target("service", "a")),
        ("0_svc-x", Target("service", "0_svc-x")),
        ("s" * 32, Target("service", "s" * 32)),
        ("example.com:443", Target("tcp", "example.com", 443)),
        ("Example.COM.:1", Target("tcp", "Example.COM.", 1)),  # kept as given; the exit matches case-blind
        ("xn--bcher-kva.example:65535", Target("tcp", "xn--bcher-kva.example", 65535)),
        ("localhost:8080", Target("tcp", "localhost", 8080)),
        ("192.0.2.1:80", Target("tcp", "192.0.2.1", 80)),
        ("[2001:db8::1]:22", Target("tcp", "2001:db8::1", 22)),
        ("[::1]:7", Target("tcp", "::1", 7)),
    ],
)
def test_parse_and_str_round_trip(text: str, target: Target) -> None:
    assert Target.parse(text) == target
    assert str(target) == text
    assert Target.parse(str(target)) == target


def test_ipv6_hosts_are_kept_compressed() -> None:
    target = Target.parse("[2001:DB8:0:0::0:1]:443")
    assert target.name == "2001:db8::1"
    assert str(target) == "[2001:db8::1]:443"
    assert Target.tcp("2001:0db8::0001", 1) == target.__class__("tcp", "2001:db8::1", 1)


def test_constructors_name_the_kind() -> None:
    assert Target.service("echo") == Target("service", "echo", None)
    assert Target.tcp("example.com", 80) == Target("tcp", "example.com", 80)


BAD_TARGETS = [
    "", "Echo", "-svc", "_svc", "s" * 33, "svc!", "caf\u00e9", "x" * 256,
    "example.com", "example.com:", "example.com:0", "example.com:65536", "example.com:080", "example.com:+80",
    "example.com:8o", "example.com:1_000", "example.com:\u0664\u0660",
    ":80", "exa mple.com:80", "a..b:80", ".a:80", "a" * 64 + ".com:80", "*.example.com:80",
    "::1:80", "a:b:80", "[::1]", "[::1]x:80", "[::1:80", "[]:80", "[1.2.3.4]:80", "[::1%eth0]:80", "[::g]:80",
    "256.1.1.1:80", "01.2.3.4:80", "127.1:80", "1.2.3.4.:80", "0x7f.0.0.1:80", "a.0x1f:80", "2130706433:80",
]


@pytest.mark.parametrize("text", BAD_TARGETS)
def test_invalid_targets_raise_value_error_without_the_text(text: str) -> None:
    with pytest.raises(ValueError) as caught:
        Target.parse(text)
    message = str(caught.value)
    for part in {text, text.rpartition(":")[0], text.rpartition(":")[2]} - {"", "80"}:
        assert part not in message, message


@pytest.mark.parametrize(
    "fields",
    [("service", "echo", 7), ("service", "ECHO", None), ("udp", "example.com", 53), ("tcp", "example.com", None),
     ("tcp", "example.com", 0), ("tcp", "example.com", True), ("tcp", "[::1]", 80), ("tcp", "a" * 250 + ".b", 65535)],
)
def test_invalid_fields_raise_value_error(fields: tuple) -> None:
    with pytest.raises(ValueError):
        Target(*fields)


def test_encode_request_bytes() -> None:
    assert encode_request(Target.service("echo")) == bytes.fromhex("01 04") + b"echo"
    assert encode_request(Target.parse("[::1]:7")) == bytes.fromhex("01 07") + b"[::1]:7"
    longest = Target.tcp(".".join(["a" * 63] * 3) + "." + "b" * 57, 65535)
    assert len(str(longest)) == 255
    assert len(encode_request(longest)) == MAX_REQUEST_BYTES


# ----------------------------------------------------------------------------------- the parser

REQUESTS = [Target.service("echo"), Target.parse("example.com:443"), Target.parse("[2001:db8::1]:22"),
            Target.parse("192.0.2.1:80")]


@pytest.mark.parametrize("target", REQUESTS, ids=str)
def test_parser_reads_an_encoded_request(target: Target) -> None:
    parser = RequestParser()
    assert parser.feed(encode_request(target)) == target
    assert parser.target == target
    assert parser.rest == b""


@pytest.mark.parametrize("target", REQUESTS, ids=str)
def test_parser_reads_one_byte_at_a_time(target: Target) -> None:
    wire = encode_request(target) + b"early"
    parser = RequestParser()
    results = [parser.feed(wire[i : i + 1]) for i in range(len(wire) - 5)]
    assert results[:-1] == [None] * (len(results) - 1)
    assert results[-1] == target
    assert parser.rest == b""  # the request ended exactly at the last byte fed


def test_bytes_after_the_request_are_kept_as_rest() -> None:
    parser = RequestParser()
    assert parser.feed(b"\x01\x04ec") is None
    assert parser.feed(b"ho" + b"GET / HTTP/1.0\r\n\r\n") == Target.service("echo")
    assert parser.rest == b"GET / HTTP/1.0\r\n\r\n"


def test_feeding_after_the_request_is_a_callers_bug() -> None:
    parser = RequestParser()
    parser.feed(encode_request(Target.service("echo")))
    with pytest.raises(RuntimeError):
        parser.feed(b"more")


def test_empty_feeds_need_more() -> None:
    parser = RequestParser()
    assert parser.feed(b"") is None
    assert parser.feed(b"\x01") is None
    assert parser.feed(b"") is None
    assert parser.feed(b"\x01") is None
    assert parser.feed(b"a") == Target.service("a")


@pytest.mark.parametrize(
    ("wire", "status"),
    [
        (b"\x00\x04echo", Status.UNSUPPORTED_VERSION),
        (b"\x02", Status.UNSUPPORTED_VERSION),  # known at the first byte
        (b"\x05\x01\x00", Status.UNSUPPORTED_VERSION),  # a SOCKS greeting sent to the wrong place
        (b"\x01\x00", Status.MALFORMED),  # known at the second byte
        (b"\x01\x04ECHO", Status.MALFORMED),
        (b"\x01\x04ech\xff", Status.MALFORMED),
        (b"\x01\x08host:000", Status.MALFORMED),
        (b"\x01\x07127.1:1", Status.MALFORMED),
    ],
)
def test_bad_requests_raise_target_error_with_the_status_to_answer(wire: bytes, status: Status) -> None:
    parser = RequestParser()
    with pytest.raises(TargetError) as caught:
        parser.feed(wire)
    assert caught.value.status is status
    with pytest.raises(TargetError):  # the parser stays failed
        parser.feed(b"\x01\x04echo")


def test_parser_errors_do_not_carry_the_target() -> None:
    with pytest.raises(TargetError) as caught:
        RequestParser().feed(b"\x01\x14secret.example:99999")
    assert "secret" not in str(caught.value) and "99999" not in str(caught.value)
    assert "port" in str(caught.value)


# ----------------------------------------------------------------------------------- statuses

SOCKS_REPLY_FOR_STATUS = {  # docs/socks.md's table, through ConnectFailure
    Status.NOT_ALLOWED: (ConnectFailure.NOT_ALLOWED, SocksReply.NOT_ALLOWED),
    Status.CONNECTION_REFUSED: (ConnectFailure.CONNECTION_REFUSED, SocksReply.CONNECTION_REFUSED),
    Status.HOST_UNREACHABLE: (ConnectFailure.HOST_UNREACHABLE, SocksReply.HOST_UNREACHABLE),
    Status.NAME_NOT_RESOLVED: (ConnectFailure.NAME_NOT_RESOLVED, SocksReply.HOST_UNREACHABLE),
    Status.TIMEOUT: (ConnectFailure.TIMEOUT, SocksReply.TTL_EXPIRED),
    Status.UNKNOWN_SERVICE: (ConnectFailure.NOT_ALLOWED, SocksReply.NOT_ALLOWED),
    Status.RATE_LIMITED: (ConnectFailure.RATE_LIMITED, SocksReply.GENERAL_FAILURE),
    Status.MALFORMED: (ConnectFailure.OTHER, SocksReply.GENERAL_FAILURE),
    Status.UNSUPPORTED_VERSION: (ConnectFailure.OTHER, SocksReply.GENERAL_FAILURE),
    Status.OTHER: (ConnectFailure.OTHER, SocksReply.GENERAL_FAILURE),
}


def test_status_values_are_the_wire_bytes() -> None:
    assert {s.name: int(s) for s in Status} == {
        "OK": 0, "NOT_ALLOWED": 1, "CONNECTION_REFUSED": 2, "HOST_UNREACHABLE": 3, "NAME_NOT_RESOLVED": 4,
        "TIMEOUT": 5, "UNKNOWN_SERVICE": 6, "RATE_LIMITED": 7, "MALFORMED": 8, "UNSUPPORTED_VERSION": 9, "OTHER": 255,
    }
    assert set(SOCKS_REPLY_FOR_STATUS) == set(Status) - {Status.OK}


@pytest.mark.parametrize("value", range(256))
def test_every_byte_reads_as_a_status(value: int) -> None:
    status = Status.from_byte(value)
    assert status == value if value in {int(s) for s in Status} else status is Status.OTHER


@pytest.mark.parametrize("status", list(SOCKS_REPLY_FOR_STATUS), ids=lambda s: s.name)
def test_target_error_classifies_for_socks(status: Status) -> None:
    failure, reply = SOCKS_REPLY_FOR_STATUS[status]
    exc = TargetError(status)
    assert isinstance(exc, ConnectionError)
    assert exc.status is status
    assert failure_for_status(status) is failure
    assert exc.connect_failure is failure
    assert failure_of(exc) is failure
    assert reply_for(exc) is reply
    assert str(exc)  # a message that says what failed


def test_ok_is_not_a_failure() -> None:
    with pytest.raises(ValueError):
        TargetError(Status.OK)
    with pytest.raises(ValueError):
        failure_for_status(Status.OK)


@pytest.mark.parametrize("failure", list(ConnectFailure), ids=lambda f: f.name)
def test_every_connect_failure_has_a_status_that_maps_back(failure: ConnectFailure) -> None:
    status = status_for_failure(failure)
    assert status is not Status.OK
    expected = ConnectFailure.HOST_UNREACHABLE if failure is ConnectFailure.NO_ROUTE else failure
    assert failure_for_status(status) is expected


# ------------------------------------------------------------------------------ request_target


class _Pipe:
    """An in-memory stream end: what the client writes, and a scripted answer to read."""

    def __init__(self, answer: bytes) -> None:
        self.reader = asyncio.StreamReader()
        self.reader.feed_data(answer)
        self.reader.feed_eof()
        self.written = bytearray()

    def write(self, data: bytes) -> None:
        self.written += data

    async def drain(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass

    def close(self) -> None:
        pass

    async def wait_closed(self) -> None:
        pass


async def test_request_target_sends_the_request_and_returns_on_ok() -> None:
    pipe = _Pipe(b"\x00data")
    await request_target(pipe.reader, pipe, Target.service("echo"))
    assert bytes(pipe.written) == b"\x01\x04echo"
    assert await pipe.reader.read() == b"data"  # only the status byte was consumed


@pytest.mark.parametrize("value", [1, 2, 3, 4, 5, 6, 7, 8, 9, 255, 42])
async def test_request_target_raises_the_status(value: int) -> None:
    pipe = _Pipe(bytes([value]))
    with pytest.raises(TargetError) as caught:
        await request_target(pipe.reader, pipe, Target.parse("example.com:443"))
    assert caught.value.status is Status.from_byte(value)
    assert "example.com" not in str(caught.value)


async def test_request_target_end_of_file_before_the_status_is_other() -> None:
    pipe = _Pipe(b"")
    with pytest.raises(TargetError, match="closed the stream before answering") as caught:
        await request_target(pipe.reader, pipe, Target.service("echo"))
    assert caught.value.status is Status.OTHER


# ------------------------------------------------------------------------------------- fuzzing


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


def _drive(chunks: list[bytes]) -> tuple[str, object, bytes]:
    """Feed chunks until a Target or an error: ("target", t, rest), ("error", status, b"") or
    ("more", None, b""). Anything else escaping `feed` fails the test."""
    parser = RequestParser()
    for index, chunk in enumerate(chunks):
        try:
            target = parser.feed(chunk)
        except TargetError as exc:
            assert exc.status in (Status.MALFORMED, Status.UNSUPPORTED_VERSION)
            return "error", exc.status, b""
        if target is not None:
            return "target", target, parser.rest + b"".join(chunks[index + 1 :])
    return "more", None, b""


@settings(max_examples=300)
@given(st.binary(max_size=300), st.lists(st.integers(0, 400), max_size=10))
def test_any_bytes_in_any_split_give_a_target_more_or_target_error(data: bytes, cuts: list[int]) -> None:
    whole = _drive([data])
    assert _drive(_split(data, cuts)) == whole
    assert _drive([data[i : i + 1] for i in range(len(data))]) == whole
    kind, target, rest = whole
    if kind == "target":
        assert isinstance(target, Target)
        assert Target.parse(str(target)) == target
        if ":" not in target.name:  # only an IPv6 address may be re-spelt (compressed)
            assert data == encode_request(target) + rest
    if kind == "more":  # a request needs at most MAX_REQUEST_BYTES
        assert len(data) < MAX_REQUEST_BYTES


targets_text = st.one_of(
    st.from_regex(r"[a-z0-9][a-z0-9_-]{0,31}", fullmatch=True),
    st.builds(
        lambda labels, port: f"{'.'.join(labels)}:{port}",
        st.lists(st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,20}", fullmatch=True), min_size=1, max_size=4),
        st.integers(1, 65535),
    ),
    st.builds(lambda a, port: f"{a}:{port}", st.ip_addresses(v=4), st.integers(1, 65535)),
    st.builds(lambda a, port: f"[{a}]:{port}", st.ip_addresses(v=6), st.integers(1, 65535)),
)


@given(targets_text, st.binary(max_size=40), st.lists(st.integers(0, 400), max_size=10))
def test_valid_targets_parse_in_any_split_with_the_rest_intact(text: str, early: bytes, cuts: list[int]) -> None:
    target = Target.parse(text)
    kind, got, rest = _drive(_split(encode_request(target) + early, cuts))
    assert (kind, got, rest) == ("target", target, early)


@given(st.data(), targets_text)
def test_mutated_requests_give_a_target_more_or_target_error(data: st.DataObject, text: str) -> None:
    wire = bytearray(encode_request(Target.parse(text)))
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(wire) - 1))
        wire[at] = data.draw(st.sampled_from([0x00, 0x01, 0x2E, 0x3A, 0x5B, 0x5D, 0x7F, 0xFF, ord("A"), ord("0")]))
    kind, got, _ = _drive([bytes(wire)])
    if kind == "target":
        assert isinstance(got, Target) and 1 <= len(str(got)) <= 255 and str(got).isascii()
