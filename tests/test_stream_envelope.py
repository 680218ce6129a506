"""The mixnet envelope and handshake fragments: layouts, limits, reassembly in any order, and the
bounds a flood or a forger cannot push past."""

from __future__ import annotations

import functools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nyx.crypto.kem import PrivateKey
from nyx.crypto.suites import DEFAULT_PREFERENCE, Suite
from nyx.mix.packet import DEFAULT_FORMAT
from nyx.stream.envelope import (
    FEC_SHARD,
    HANDSHAKE,
    HEADER_BYTES,
    MAX_BODY_BYTES,
    MAX_CHUNK_BYTES,
    MAX_FRAGMENTS,
    MAX_HANDSHAKE_BYTES,
    MESSAGE_BYTES,
    RECORD,
    SESSION_ID_BYTES,
    Envelope,
    EnvelopeError,
    Fragment,
    Kind,
    Reassembler,
    fragment_count,
    fragments,
    new_session_id,
    parse_fragment,
    unwrap,
    wrap,
)
from nyx.stream.handshake import CloseCode, Initiator, Responder, messages
from nyx.stream.session import MAX_RECORD_BYTES

NOW = 1_800_000_000.0
SID = bytes(range(1, 8))
OTHER = bytes(range(11, 18))


def receive_all(reassembler: Reassembler, messages: list[bytes], now: float = NOW) -> list[bytes]:
    """Feed whole envelopes; return every message the reassembler delivered."""
    out = []
    for message in messages:
        envelope = unwrap(message)
        assert envelope.kind is Kind.HANDSHAKE
        whole = reassembler.receive(envelope.session_id, parse_fragment(envelope.body), now)
        if whole is not None:
            out.append(whole)
    return out


def fragment_of(message: bytes) -> tuple[bytes, Fragment]:
    envelope = unwrap(message)
    return envelope.session_id, parse_fragment(envelope.body)


# --- the envelope --------------------------------------------------------------------------------


def test_an_envelope_fills_one_sphinx_message_and_a_record_fits_behind_it() -> None:
    assert MESSAGE_BYTES == DEFAULT_FORMAT.message_bytes
    assert HEADER_BYTES == 8 and MAX_BODY_BYTES == MAX_RECORD_BYTES == 638
    assert len(wrap(RECORD, SID, bytes(MAX_RECORD_BYTES))) == MESSAGE_BYTES


@pytest.mark.parametrize("kind", list(Kind))
def test_wrap_then_unwrap_gives_back_kind_session_and_body(kind: Kind) -> None:
    message = wrap(kind, SID, b"body")
    assert message == bytes((kind,)) + SID + b"body"
    assert unwrap(message) == Envelope(kind, SID, b"body")


def test_kind_bytes_are_fixed_on_the_wire() -> None:
    assert (HANDSHAKE, RECORD, FEC_SHARD) == (0x01, 0x02, 0x03)


def test_wrap_refuses_a_body_larger_than_a_sphinx_message_holds() -> None:
    with pytest.raises(ValueError, match="at most 638"):
        wrap(RECORD, SID, bytes(MAX_BODY_BYTES + 1))


@pytest.mark.parametrize("session_id", [b"", bytes(6), bytes(8)])
def test_wrap_refuses_a_session_id_of_the_wrong_length(session_id: bytes) -> None:
    with pytest.raises(ValueError, match="session id is 7 bytes"):
        wrap(RECORD, session_id, b"")


@pytest.mark.parametrize("kind", [0, 5, 0xFF])
def test_wrap_refuses_an_unknown_kind(kind: int) -> None:
    with pytest.raises(ValueError, match="kind"):
        wrap(kind, SID, b"")


@pytest.mark.parametrize("length", range(HEADER_BYTES))
def test_unwrap_refuses_a_message_shorter_than_the_header(length: int) -> None:
    with pytest.raises(EnvelopeError) as error:
        unwrap(b"\x02" * length)
    assert error.value.reason == "truncated" and isinstance(error.value, ValueError)


@pytest.mark.parametrize("kind", [0x00, 0x05, 0x80, 0xFF])
def test_unwrap_refuses_an_unknown_kind(kind: int) -> None:
    with pytest.raises(EnvelopeError) as error:
        unwrap(bytes((kind,)) + SID)
    assert error.value.reason == "kind"


def test_unwrap_refuses_more_than_one_sphinx_message() -> None:
    with pytest.raises(EnvelopeError) as error:
        unwrap(wrap(RECORD, SID, bytes(MAX_BODY_BYTES)) + b"\x00")
    assert error.value.reason == "size"


def test_an_empty_body_is_a_valid_envelope() -> None:
    assert unwrap(wrap(FEC_SHARD, SID, b"")) == Envelope(Kind.FEC_SHARD, SID, b"")


def test_session_ids_are_seven_fresh_random_bytes() -> None:
    ids = {new_session_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(len(i) == SESSION_ID_BYTES for i in ids)


# --- fragments -----------------------------------------------------------------------------------


def test_every_fragment_but_the_last_fills_its_sphinx_message() -> None:
    messages = fragments(SID, 7, bytes(2362))
    assert [len(m) for m in messages] == [646, 646, 646, 2362 - 3 * MAX_CHUNK_BYTES + 12]
    parsed = [fragment_of(m)[1] for m in messages]
    assert [(f.message_id, f.index, f.count) for f in parsed] == [(7, i, 4) for i in range(4)]


def test_the_fragment_header_is_message_id_index_count() -> None:
    (message,) = fragments(SID, 0x1234, b"abc")
    assert message == b"\x01" + SID + b"\x12\x34\x00\x01abc"


def test_an_empty_handshake_message_takes_one_fragment() -> None:
    (message,) = fragments(SID, 0, b"")
    assert parse_fragment(unwrap(message).body) == Fragment(0, 0, 1, b"")


def test_sixteen_fragments_is_the_ceiling() -> None:
    assert MAX_HANDSHAKE_BYTES == MAX_FRAGMENTS * MAX_CHUNK_BYTES == 10_144
    assert len(fragments(SID, 0, bytes(MAX_HANDSHAKE_BYTES))) == 16
    with pytest.raises(ValueError, match="needs 17 fragments"):
        fragments(SID, 0, bytes(MAX_HANDSHAKE_BYTES + 1))


@pytest.mark.parametrize("message_id", [-1, 0x10000])
def test_fragments_refuse_a_message_id_outside_u16(message_id: int) -> None:
    with pytest.raises(ValueError, match="u16"):
        fragments(SID, message_id, b"x")


def test_fragments_refuse_a_bad_session_id_or_message_size() -> None:
    with pytest.raises(ValueError, match="session id"):
        fragments(bytes(6), 0, b"x")
    with pytest.raises(ValueError, match="at most 646"):
        fragments(SID, 0, b"x", message_bytes=647)
    with pytest.raises(ValueError, match="no room"):
        fragments(SID, 0, b"x", message_bytes=12)


def test_a_smaller_message_size_makes_smaller_fragments() -> None:
    messages = fragments(SID, 0, bytes(100), message_bytes=62)
    assert len(messages) == 2 and max(map(len, messages)) == 62


@pytest.mark.parametrize(
    ("body", "reason"),
    [(b"", "truncated"), (b"\x00\x00\x00", "truncated"), (b"\x00\x00\x00\x00", "count"),
     (b"\x00\x00\x00\x11", "count"), (b"\x00\x00\x02\x02", "index"), (b"\x00\x00\xff\x10", "index")],
)
def test_parse_fragment_refuses_malformed_headers(body: bytes, reason: str) -> None:
    with pytest.raises(EnvelopeError) as error:
        parse_fragment(body)
    assert error.value.reason == reason


# --- message counts per suite, from real handshake messages ---------------------------------------


@functools.cache
def static_key(suite: Suite) -> tuple[PrivateKey, bytes]:
    return suite.kem().generate()


def handshake_messages(suite: Suite) -> tuple[bytes, bytes, bytes]:
    """A real Init (offering the default four suites), Accept and Finish of `suite`."""
    private_key, public_key = static_key(suite)
    initiator = Initiator({suite: public_key}, preference=DEFAULT_PREFERENCE)
    init = initiator.start(NOW)
    accept, pending = Responder({suite: private_key}).respond(init, NOW)
    finish, _ = initiator.receive(accept)
    pending.finish(finish)
    return init, accept, finish


@pytest.mark.parametrize(
    ("suite", "sizes", "counts"),
    [
        (Suite.CLASSIC, (90, 71, 33), (1, 1, 1)),
        (Suite.HYBRID, (2362, 1159, 33), (4, 2, 1)),
        (Suite.PQ, (3162, 1607, 33), (5, 3, 1)),
        (Suite.PQ_ALT, (6700, 4472, 33), (11, 8, 1)),
    ],
)
def test_sphinx_messages_per_handshake_message_per_suite(suite: Suite, sizes: tuple, counts: tuple) -> None:
    messages = handshake_messages(suite)
    assert tuple(map(len, messages)) == sizes
    assert tuple(fragment_count(len(m)) for m in messages) == counts
    assert tuple(len(fragments(SID, 0, m)) for m in messages) == counts


def test_any_reject_takes_one_sphinx_message() -> None:
    typical = messages.Reject(CloseCode.UNSUPPORTED_SUITE, (1,), tuple(int(s) for s in Suite)).encode()
    largest = messages.Reject(CloseCode.UNSUPPORTED_SUITE, tuple(range(255)), tuple(range(255))).encode()
    assert (len(typical), len(largest)) == (10, 515)
    assert fragment_count(len(largest)) == 1 and len(fragments(SID, 0, largest)) == 1


@pytest.mark.parametrize("suite", list(Suite))
def test_a_real_handshake_completes_over_shuffled_duplicated_fragments(suite: Suite) -> None:
    rng = random.Random(suite)
    private_key, public_key = static_key(suite)
    initiator, responder = Initiator({suite: public_key}, preference=DEFAULT_PREFERENCE), Responder({suite: private_key})
    at_exit, at_client = Reassembler(), Reassembler()
    session_id = new_session_id()

    def carry(reassembler: Reassembler, message_id: int, message: bytes) -> bytes:
        sent = fragments(session_id, message_id, message)
        sent = sent + rng.sample(sent, k=len(sent) // 2 + 1)  # duplicates
        rng.shuffle(sent)
        (whole,) = receive_all(reassembler, sent)
        return whole

    init = initiator.start(NOW)
    accept, pending = responder.respond(carry(at_exit, 0, init), NOW)
    finish, client_keys = initiator.receive(carry(at_client, 0, accept))
    exit_keys = pending.finish(carry(at_exit, 1, finish))
    assert client_keys.session_id == exit_keys.session_id
    # Records then travel in RECORD envelopes of the same session.
    client, gateway = client_keys.record_session(0.0), exit_keys.record_session(0.0)
    envelope = unwrap(wrap(RECORD, session_id, client.seal(b"GET /", 0.0)))
    assert envelope.session_id == session_id and gateway.open(envelope.body, 0.0) == b"GET /"
    assert at_exit.completed == 2 and at_client.completed == 1 and at_exit.pending == at_client.pending == 0
    assert at_exit.duplicates + at_client.duplicates > 0 and at_exit.buffered_bytes == 0


# --- reassembly: properties ------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(data=st.binary(max_size=5000), message_id=st.integers(0, 0xFFFF), session_id=st.binary(min_size=7, max_size=7))
def test_any_message_up_to_5000_bytes_round_trips(data: bytes, message_id: int, session_id: bytes) -> None:
    messages = fragments(session_id, message_id, data)
    assert all(len(m) <= MESSAGE_BYTES for m in messages)
    assert receive_all(Reassembler(), messages) == [data]


@settings(max_examples=150, deadline=None)
@given(size=st.integers(0, 5000), data=st.data())
def test_any_arrival_order_with_duplicates_delivers_the_message_exactly_once(size: int, data: st.DataObject) -> None:
    message = bytes(random.Random(size).randbytes(size))
    sent = fragments(SID, 3, message)
    extra = data.draw(st.lists(st.sampled_from(sent), max_size=10))
    arrival = data.draw(st.permutations(sent + extra))
    reassembler = Reassembler()
    delivered_at = [i for i, m in enumerate(arrival) if receive_all(reassembler, [m]) == [message]]
    first_complete = max(arrival.index(m) for m in sent)  # when the last distinct fragment arrived
    assert delivered_at == [first_complete]
    assert reassembler.completed == 1 and reassembler.duplicates == len(extra)
    assert reassembler.pending == 0 and reassembler.buffered_bytes == 0


def test_fragments_of_two_sessions_interleaved_never_mix() -> None:
    ours, theirs = bytes(range(256)) * 8, bytes(reversed(range(256))) * 8
    a, b = fragments(SID, 0, ours), fragments(OTHER, 0, theirs)  # same message id, same count
    interleaved = [m for pair in zip(b, a) for m in pair]
    reassembler = Reassembler()
    assert receive_all(reassembler, interleaved) == [theirs, ours]


def test_two_messages_of_one_session_are_kept_apart_by_message_id() -> None:
    first, retry = bytes(2000), b"\xff" * 2000
    interleaved = [m for pair in zip(fragments(SID, 0, first), fragments(SID, 1, retry)) for m in pair]
    assert receive_all(Reassembler(), interleaved) == [first, retry]


# --- reassembly: forgeries and contradictions ---------------------------------------------------


def test_a_forged_count_discards_the_partial_and_a_retransmission_completes_the_real_message() -> None:
    real = fragments(SID, 0, bytes(range(256)) * 8)  # 4 fragments
    reassembler = Reassembler()
    assert receive_all(reassembler, real[:3]) == []
    forged = fragment_of(fragments(SID, 0, bytes(3000))[0])[1]  # 5 fragments
    assert reassembler.receive(SID, forged, NOW) is None
    assert reassembler.contradictions == 1 and reassembler.pending == 0 and reassembler.buffered_bytes == 0
    # The real last fragment alone cannot complete anything now ...
    assert receive_all(reassembler, real[3:]) == []
    # ... the handshake layer's retransmission does, with the real bytes only.
    assert receive_all(reassembler, real) == [bytes(range(256)) * 8]


def test_a_forged_count_arriving_first_cannot_make_the_message_complete_wrongly() -> None:
    message = bytes(range(256)) * 8
    real = fragments(SID, 0, message)
    forged = Fragment(0, 0, 2, b"\xee" * 10)
    reassembler = Reassembler()
    assert reassembler.receive(SID, forged, NOW) is None
    out = receive_all(reassembler, real)  # the first real fragment contradicts and is dropped with it
    assert out == [] and reassembler.contradictions == 1
    assert receive_all(reassembler, real[:1]) == [message]


def test_a_chunk_of_another_length_at_a_held_index_discards_the_partial() -> None:
    real = fragments(SID, 0, bytes(1500))
    reassembler = Reassembler()
    receive_all(reassembler, real[:1])
    sid, fragment = fragment_of(real[0])
    assert reassembler.receive(sid, Fragment(0, 0, fragment.count, fragment.chunk[:-1]), NOW) is None
    assert reassembler.contradictions == 1 and reassembler.pending == 0


def test_a_chunk_with_other_bytes_at_a_held_index_discards_the_partial() -> None:
    real = fragments(SID, 0, bytes(1500))
    reassembler = Reassembler()
    receive_all(reassembler, real[:2])
    sid, fragment = fragment_of(real[1])
    altered = Fragment(0, 1, fragment.count, b"\x01" + fragment.chunk[1:])
    assert reassembler.receive(sid, altered, NOW) is None
    assert reassembler.contradictions == 1 and reassembler.pending == 0 and reassembler.duplicates == 0
    assert receive_all(reassembler, real[2:]) == []  # nothing left to complete


@pytest.mark.parametrize(("index", "count"), [(2, 2), (255, 16), (0, 0)])
def test_an_index_outside_the_count_is_a_contradiction(index: int, count: int) -> None:
    reassembler = Reassembler()
    receive_all(reassembler, fragments(SID, 0, bytes(1500))[:1])
    assert reassembler.receive(SID, Fragment(0, index, count, b"x"), NOW) is None
    assert reassembler.contradictions == 1 and reassembler.pending == 0


def test_a_duplicate_is_counted_and_changes_nothing() -> None:
    real = fragments(SID, 0, bytes(1500))
    reassembler = Reassembler()
    receive_all(reassembler, [real[0], real[0], real[1]])
    assert reassembler.duplicates == 1 and reassembler.pending == 1
    assert receive_all(reassembler, real[2:]) == [bytes(1500)]


def test_a_fragment_of_a_delivered_message_does_not_deliver_it_again() -> None:
    single, multi = fragments(SID, 0, b"finish"), fragments(SID, 1, bytes(1500))
    reassembler = Reassembler()
    assert receive_all(reassembler, single + multi) == [b"finish", bytes(1500)]
    assert receive_all(reassembler, single + multi) == []
    assert reassembler.duplicates == 1 + len(multi) and reassembler.completed == 2 and reassembler.pending == 0


# --- reassembly: bounds -----------------------------------------------------------------------------


def test_a_flood_of_first_fragments_from_many_sessions_stays_within_max_pending_and_memory() -> None:
    reassembler = Reassembler(max_pending=64)
    for n in range(10_000):
        flood = fragments(n.to_bytes(7, "big"), 0, bytes(MAX_HANDSHAKE_BYTES))
        receive_all(reassembler, flood[:15])  # all but the last: the most a partial can hold
        assert reassembler.pending <= 64
        assert reassembler.buffered_bytes <= 64 * 15 * MAX_CHUNK_BYTES
    assert reassembler.evicted == 10_000 - 64
    # A handshake that arrives after the flood still completes.
    assert receive_all(reassembler, fragments(SID, 0, bytes(2362))) == [bytes(2362)]


def test_max_buffered_bytes_evicts_the_oldest_partials() -> None:
    reassembler = Reassembler(max_pending=1000, max_buffered_bytes=16 * 1024)
    for n in range(20):
        receive_all(reassembler, fragments(n.to_bytes(7, "big"), 0, bytes(3000))[:4])
        assert reassembler.buffered_bytes <= 16 * 1024
    assert reassembler.pending == (16 * 1024) // (4 * MAX_CHUNK_BYTES) and reassembler.evicted == 20 - reassembler.pending
    newest = fragments((19).to_bytes(7, "big"), 0, bytes(3000))
    assert receive_all(reassembler, newest[4:]) == [bytes(3000)]  # the newest was kept


def test_a_partial_over_max_message_bytes_is_discarded() -> None:
    reassembler = Reassembler(max_message_bytes=2000)
    messages = fragments(SID, 0, bytes(2362))
    assert receive_all(reassembler, messages) == []
    assert reassembler.oversized == 1 and reassembler.pending == 0 and reassembler.buffered_bytes == 0
    assert receive_all(Reassembler(max_message_bytes=2362), messages) == [bytes(2362)]


def test_a_single_fragment_over_max_message_bytes_is_refused() -> None:
    reassembler = Reassembler(max_message_bytes=100)
    assert receive_all(reassembler, fragments(SID, 0, bytes(101))) == []
    assert reassembler.oversized == 1 and reassembler.completed == 0


def test_partials_older_than_the_timeout_expire() -> None:
    reassembler = Reassembler(timeout_s=30.0)
    old, young = fragments(SID, 0, bytes(1500)), fragments(OTHER, 0, bytes(1500))
    receive_all(reassembler, old[:2], now=100.0)
    receive_all(reassembler, young[:2], now=120.0)
    assert reassembler.deadline() == 130.0
    reassembler.expire(129.9)
    assert reassembler.pending == 2 and reassembler.expired == 0
    reassembler.expire(130.0)
    assert reassembler.pending == 1 and reassembler.expired == 1
    assert reassembler.deadline() == 150.0
    assert receive_all(reassembler, old[2:], now=131.0) == []  # its earlier fragments are gone
    assert receive_all(reassembler, young[2:], now=131.0) == [bytes(1500)]
    reassembler.expire(1000.0)
    assert reassembler.pending == 0 and reassembler.buffered_bytes == 0 and reassembler.deadline() is None


def test_delivered_messages_are_forgotten_after_the_timeout() -> None:
    reassembler = Reassembler(timeout_s=30.0)
    receive_all(reassembler, fragments(SID, 0, b"finish"), now=100.0)
    assert reassembler.deadline() == 130.0
    reassembler.expire(130.0)
    assert reassembler.deadline() is None
    assert receive_all(reassembler, fragments(SID, 0, b"finish"), now=131.0) == [b"finish"]


def test_delivered_messages_are_remembered_at_most_max_pending() -> None:
    reassembler = Reassembler(max_pending=8)
    for n in range(100):
        receive_all(reassembler, fragments(n.to_bytes(7, "big"), 0, b"x"))
    assert reassembler.completed == 100
    assert receive_all(reassembler, fragments((99).to_bytes(7, "big"), 0, b"x")) == []  # still remembered
    assert receive_all(reassembler, fragments((0).to_bytes(7, "big"), 0, b"x")) == [b"x"]  # forgotten


@pytest.mark.parametrize(
    "limits",
    [{"max_pending": 0}, {"max_message_bytes": 0}, {"timeout_s": 0.0}, {"max_message_bytes": 100, "max_buffered_bytes": 99}],
)
def test_reassembler_limits_must_make_sense(limits: dict) -> None:
    with pytest.raises(ValueError):
        Reassembler(**limits)
