"""Property tests: whatever a SOCKS client sends, in whatever split, the core gives events or
SocksProtocolError, nothing else, and the split never changes the outcome.

A driver plays the shell: it feeds chunks, accepts every ConnectRequest at once, and stops at the
first SocksProtocolError. What must hold:
- only events of the three kinds, or SocksProtocolError (any other exception fails the test);
- after an error the machine is CLOSED and what it queued is nothing, the method refusal 05 FF,
  or one 10-byte reply whose REP is the error's `reply`;
- the outcome (requests, payload, end of data, bytes sent, error code) is the same in one chunk,
  one byte at a time, or any split;
- a valid greeting and request, built from any host and port, give back that host and port.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from nyx.stream.socks import (
    ConnectRequest,
    Data,
    EndOfData,
    Socks5ServerConnection,
    SocksProtocolError,
    SocksReply,
    SocksState,
)


@dataclass
class Outcome:
    requests: list[ConnectRequest] = field(default_factory=list)
    payload: bytes = b""
    ended: bool = False
    sent: bytes = b""
    error: SocksReply | None | str = "none"  # "none": no error; None: an error without reply


def drive(chunks: list[bytes]) -> Outcome:
    conn = Socks5ServerConnection()
    outcome = Outcome()

    def take(events: list) -> None:
        for event in events:
            assert isinstance(event, (ConnectRequest, Data, EndOfData)), event
            if isinstance(event, ConnectRequest):
                outcome.requests.append(event)
                take(conn.accept())
            elif isinstance(event, Data):
                assert event.data, "a Data event is never empty"
                outcome.payload += event.data
            else:
                outcome.ended = True

    for chunk in chunks:
        try:
            take(conn.receive_data(chunk))
        except SocksProtocolError as exc:
            outcome.error = exc.reply
            queued = conn.data_to_send()
            outcome.sent += queued
            assert conn.state is SocksState.CLOSED
            if exc.reply is None:  # only in the greeting: nothing, or the method refusal
                assert queued in (b"", b"\x05\xff")
            else:  # the reply, maybe after the method selection of a greeting in the same chunk
                assert queued in (refusal(exc.reply), b"\x05\x00" + refusal(exc.reply))
            assert conn.receive_data(b"more") == [] and conn.data_to_send() == b""
            return outcome
        outcome.sent += conn.data_to_send()
        if outcome.ended:
            break  # the shell stops feeding after end of file
    assert len(outcome.requests) <= 1
    return outcome


def refusal(reply: SocksReply) -> bytes:
    return bytes((5, reply, 0, 1)) + bytes(6)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]


def check_any_split(data: bytes, cuts: list[int], eof: bool) -> Outcome:
    end = [b""] if eof else []
    whole = drive([data, *end] if data else end)
    assert drive(split(data, cuts) + end) == whole
    assert drive([data[i : i + 1] for i in range(len(data))] + end) == whole
    return whole


# ------------------------------------------------------------------------------------ strategies

labels = st.from_regex(r"[A-Za-z0-9_-]{1,20}", fullmatch=True)
names = st.lists(labels, min_size=1, max_size=5).map(".".join).filter(lambda n: len(n) <= 255)
ports = st.integers(0, 0xFFFF)


@st.composite
def valid_request(draw: st.DrawFn) -> tuple[bytes, ConnectRequest]:
    kind = draw(st.sampled_from(["ipv4", "ipv6", "domain"]))
    port = draw(ports)
    if kind == "ipv4":
        address = ipaddress.IPv4Address(draw(st.integers(0, 2**32 - 1)))
        body, host = b"\x01" + address.packed, str(address)
    elif kind == "ipv6":
        address = ipaddress.IPv6Address(draw(st.integers(0, 2**128 - 1)))
        body, host = b"\x04" + address.packed, address.compressed
    else:
        host = draw(names) + draw(st.sampled_from(["", "."]))
        body = b"\x03" + bytes([len(host)]) + host.encode()
    return b"\x05\x01\x00" + body + port.to_bytes(2, "big"), ConnectRequest(host, port, kind)


greetings = st.lists(st.integers(0, 255), max_size=6).flatmap(
    lambda methods: st.permutations([0, *methods])
).map(lambda methods: bytes([5, len(methods), *methods]))


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "set"]))
        at = draw(st.integers(0, max(len(out) - 1, 0)))
        if op == "flip" and out:
            out[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and out:
            out[at] = draw(st.sampled_from([0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x7F, 0xFF]))
        elif op == "insert":
            out[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif op == "delete" and out:
            del out[at]
        elif op == "truncate":
            del out[at:]
    return bytes(out)


# --------------------------------------------------------------------------------------- properties


@given(st.binary(max_size=300), st.lists(st.integers(0, 400), max_size=8), st.booleans())
def test_any_bytes_in_any_split_give_events_or_a_protocol_error(data: bytes, cuts: list[int], eof: bool) -> None:
    check_any_split(data, cuts, eof)


@given(st.binary(max_size=200), st.lists(st.integers(0, 300), max_size=8), st.booleans())
def test_any_bytes_after_a_greeting_give_events_or_a_protocol_error(data: bytes, cuts: list[int], eof: bool) -> None:
    check_any_split(b"\x05\x01\x00" + data, cuts, eof)


@given(greetings, valid_request(), st.binary(max_size=50), st.lists(st.integers(0, 400), max_size=8), st.booleans())
def test_a_valid_request_gives_its_host_and_port_back(
    greeting: bytes, request: tuple[bytes, ConnectRequest], payload: bytes, cuts: list[int], eof: bool
) -> None:
    wire, expected = request
    outcome = check_any_split(greeting + wire + payload, cuts, eof)
    assert outcome.error == "none"
    assert outcome.requests == [expected]
    assert outcome.payload == payload
    assert outcome.ended == eof
    assert outcome.sent == b"\x05\x00" + bytes.fromhex("05000001 00000000 0000")


@settings(max_examples=300)
@given(st.data(), greetings, valid_request(), st.binary(max_size=20), st.lists(st.integers(0, 400), max_size=8),
       st.booleans())
def test_mutated_greetings_and_requests_give_events_or_a_protocol_error(
    data: st.DataObject, greeting: bytes, request: tuple[bytes, ConnectRequest], payload: bytes,
    cuts: list[int], eof: bool,
) -> None:
    wire = data.draw(mutated(greeting + request[0] + payload))
    outcome = check_any_split(wire, cuts, eof)
    for got in outcome.requests:  # whatever got through is well formed
        assert 0 <= got.port <= 0xFFFF and got.address_type in ("ipv4", "ipv6", "domain")
        assert 1 <= len(got.host) <= 255 and got.host.isascii()
