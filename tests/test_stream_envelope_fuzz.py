"""Property tests: any bytes into `unwrap` and `parse_fragment` give a value or EnvelopeError,
nothing else; what parses re-encodes to the same bytes; and whatever a peer sends, a Reassembler
never raises, never exceeds its bounds and never delivers bytes that no fragment carried."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from nyx.stream.envelope import (
    ENVELOPE_ERROR_REASONS,
    HANDSHAKE,
    MESSAGE_BYTES,
    EnvelopeError,
    Envelope,
    Fragment,
    Reassembler,
    fragments,
    parse_fragment,
    unwrap,
    wrap,
)

SESSION_IDS = [bytes([n]) * 7 for n in range(3)]


def unwrap_or_error(message: bytes) -> Envelope | None:
    try:
        return unwrap(message)
    except EnvelopeError as error:
        assert error.reason in ENVELOPE_ERROR_REASONS
        return None


def parse_or_error(body: bytes) -> Fragment | None:
    try:
        return parse_fragment(body)
    except EnvelopeError as error:
        assert error.reason in ENVELOPE_ERROR_REASONS
        return None


def encode_fragment(fragment: Fragment) -> bytes:
    return struct.pack(">HBB", fragment.message_id, fragment.index, fragment.count) + fragment.chunk


@settings(max_examples=2000)
@given(st.binary(max_size=MESSAGE_BYTES + 8))
def test_any_bytes_unwrap_to_an_envelope_or_an_envelope_error(message: bytes) -> None:
    envelope = unwrap_or_error(message)
    if envelope is not None:
        assert wrap(envelope.kind, envelope.session_id, envelope.body) == message


@settings(max_examples=2000)
@given(st.binary(max_size=700))
def test_any_bytes_parse_to_a_fragment_or_an_envelope_error(body: bytes) -> None:
    fragment = parse_or_error(body)
    if fragment is not None:
        assert 0 <= fragment.index < fragment.count <= 16
        assert encode_fragment(fragment) == body


@settings(max_examples=500)
@given(st.integers(0, 0xFF), st.integers(0, 0xFF), st.binary(max_size=40))
def test_any_fragment_header_parses_or_is_refused(index: int, count: int, chunk: bytes) -> None:
    fragment = parse_or_error(struct.pack(">HBB", 9, index, count) + chunk)
    assert (fragment is not None) == (index < count <= 16)


def _mutate(message: bytes, data: st.DataObject) -> bytes:
    action = data.draw(st.sampled_from(["flip", "truncate", "extend", "splice"]))
    if action == "flip" and message:
        position = data.draw(st.integers(0, len(message) - 1))
        return message[:position] + bytes([message[position] ^ data.draw(st.integers(1, 255))]) + message[position + 1 :]
    if action == "truncate":
        return message[: data.draw(st.integers(0, len(message)))]
    if action == "extend":
        return message + data.draw(st.binary(min_size=1, max_size=16))
    position = data.draw(st.integers(0, len(message)))
    return message[:position] + data.draw(st.binary(max_size=8)) + message[position:]


@settings(max_examples=500, deadline=None)
@given(size=st.integers(0, 3000), data=st.data())
def test_mutated_valid_messages_unwrap_and_parse_to_a_value_or_an_error(size: int, data: st.DataObject) -> None:
    for message in fragments(SESSION_IDS[0], 5, bytes(range(256)) * (size // 256) + bytes(size % 256)):
        envelope = unwrap_or_error(_mutate(message, data))
        if envelope is not None and envelope.kind is HANDSHAKE:
            parse_or_error(envelope.body)


messages = st.one_of(
    st.binary(max_size=MESSAGE_BYTES),
    st.builds(
        lambda sid, mid, index, count, chunk: wrap(HANDSHAKE, sid, struct.pack(">HBB", mid, index, count) + chunk),
        st.sampled_from(SESSION_IDS), st.integers(0, 2), st.integers(0, 4), st.integers(0, 4),
        st.binary(max_size=300),
    ),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(messages, st.floats(0, 5)), max_size=60))
def test_a_reassembler_fed_anything_stays_within_its_bounds(arrivals: list[tuple[bytes, float]]) -> None:
    reassembler = Reassembler(max_pending=4, max_message_bytes=700, max_buffered_bytes=1000, timeout_s=3.0)
    now, seen_chunks = 0.0, b""
    for message, step in arrivals:
        now += step
        envelope = unwrap_or_error(message)
        fragment = parse_or_error(envelope.body) if envelope is not None and envelope.kind is HANDSHAKE else None
        if fragment is not None:
            seen_chunks += fragment.chunk
            whole = reassembler.receive(envelope.session_id, fragment, now)  # type: ignore[union-attr]
            if whole is not None:
                assert len(whole) <= 700
                if fragment.count == 1:
                    assert whole == fragment.chunk
        reassembler.expire(now)
        assert reassembler.pending <= 4 and 0 <= reassembler.buffered_bytes <= 1000
        deadline = reassembler.deadline()
        assert deadline is None or deadline > now
    reassembler.expire(now + 3.0)
    assert reassembler.pending == 0 and reassembler.buffered_bytes == 0


@settings(max_examples=300, deadline=None)
@given(data=st.data(), size=st.integers(1, 4000))
def test_forged_fragments_never_complete_the_real_message_wrongly(data: st.DataObject, size: int) -> None:
    """Forgeries for the same session and message id, in any order among the real fragments:
    when no forgery claims the real count, a delivery with the real count is the real message.
    (A forgery with the real count can stand in for a chunk; the handshake's key confirmation
    refuses such a message, and the sender retransmits.)"""
    message = bytes((i * 7) & 0xFF for i in range(size))
    real = fragments(SESSION_IDS[1], 0, message)
    count = len(real)
    forged_fragments = data.draw(st.lists(
        st.builds(Fragment, st.just(0), st.integers(0, 7), st.integers(1, 8).filter(lambda c: c != count),
                  st.binary(max_size=634)),
        max_size=4,
    ))
    forged = [wrap(HANDSHAKE, SESSION_IDS[1], encode_fragment(f)) for f in forged_fragments]
    arrival = data.draw(st.permutations(real + forged))
    reassembler = Reassembler()
    for raw in arrival:
        envelope = unwrap(raw)
        fragment = parse_or_error(envelope.body)
        if fragment is None:
            continue
        whole = reassembler.receive(envelope.session_id, fragment, 0.0)
        if whole is not None and fragment.count == count:
            assert whole == message
    assert reassembler.completed <= 1 and reassembler.pending <= 1
    if not forged:
        assert reassembler.completed == 1
