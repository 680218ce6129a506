"""Shard framing: short payloads survive padding; malformed shards are errors, not garbage."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nyx.crypto import RecordError
from nyx.crypto.session import DIRECTION_I2R, DIRECTION_R2I, RecordSession
from nyx.crypto.session import HEADER as RECORD_HEADER
from nyx.fec import HEADER_BYTES, BlockDecoder, BlockEncoder, FecError, Shard, pad, unpad


@given(st.binary(max_size=100), st.integers(min_value=0, max_value=50))
def test_pad_then_unpad_returns_the_payload(payload: bytes, slack: int) -> None:
    body = pad(payload, len(payload) + 2 + slack)
    assert len(body) == len(payload) + 2 + slack
    assert unpad(body) == payload


def test_payload_too_large_for_the_shard_is_an_error() -> None:
    with pytest.raises(FecError, match="does not fit"):
        pad(b"x" * 9, 10)


@given(st.binary(max_size=64))
def test_unpad_of_any_bytes_is_a_payload_or_a_fec_error(body: bytes) -> None:
    try:
        payload = unpad(body)
    except FecError:
        return
    assert pad(payload, len(body)) == body


@given(st.binary(max_size=40))
def test_parse_of_any_bytes_is_a_shard_or_a_fec_error(wire: bytes) -> None:
    try:
        shard = Shard.parse(wire)
    except FecError:
        return
    assert shard.to_bytes() == wire
    assert 0 <= shard.index < shard.k + shard.m <= 255


def test_length_prefix_beyond_the_body_is_an_error() -> None:
    with pytest.raises(FecError, match="length prefix says 300 bytes"):
        unpad((300).to_bytes(2, "big") + b"\0" * 10)


def test_nonzero_padding_is_an_error() -> None:
    with pytest.raises(FecError, match="padding is not zero"):
        unpad(b"\x00\x01a\x00\x07")


def test_header_with_index_outside_the_block_is_an_error() -> None:
    wire = Shard(block=7, index=13, k=10, m=3, body=b"\0\0").to_bytes()
    with pytest.raises(FecError, match="index 13 is outside block 7"):
        Shard.parse(wire)


def test_header_with_more_than_255_shards_is_an_error() -> None:
    with pytest.raises(FecError, match="k=200, m=56"):
        Shard.parse(Shard(block=1, index=0, k=200, m=56, body=b"\0\0").to_bytes())


def test_every_wire_shard_has_the_configured_size() -> None:
    shards = BlockEncoder(shard_bytes=1280).encode(5, [b"a", b"bb" * 600, b""], m=2)
    assert [len(s) for s in shards] == [1280] * 5


@given(
    st.lists(st.binary(max_size=60), min_size=1, max_size=12),
    st.integers(min_value=0, max_value=6),
    st.randoms(use_true_random=False),
)
def test_block_with_short_payloads_survives_any_m_losses(
    payloads: list[bytes], m: int, rnd: random.Random
) -> None:
    wire = BlockEncoder(shard_bytes=HEADER_BYTES + 62).encode(42, payloads, m)
    lost = set(rnd.sample(range(len(wire)), m))
    survivors = [s for i, s in enumerate(wire) if i not in lost]
    rnd.shuffle(survivors)
    decoder = BlockDecoder()
    results = [decoder.receive(s) for s in survivors]
    done = [r for r in results if r is not None]
    assert len(done) == 1
    assert done[0].block == 42 and done[0].payloads == payloads


def test_recovered_block_names_the_shards_rebuilt_from_parity() -> None:
    wire = BlockEncoder(shard_bytes=64).encode(1, [b"one", b"two", b"three"], m=2)
    decoder = BlockDecoder()
    assert decoder.receive(wire[0]) is None
    assert decoder.receive(wire[3]) is None
    result = decoder.receive(wire[4])
    assert result is not None and result.recovered == (1, 2)
    assert result.payloads == [b"one", b"two", b"three"]


def test_late_and_duplicate_shards_of_a_finished_block_are_ignored() -> None:
    wire = BlockEncoder(shard_bytes=32).encode(9, [b"a", b"b"], m=1)
    decoder = BlockDecoder()
    assert decoder.receive(wire[0]) is None
    assert decoder.receive(wire[0]) is None  # a duplicate does not count twice
    assert decoder.receive(wire[1]) is not None
    assert decoder.receive(wire[2]) is None


def test_shard_with_a_different_body_length_than_its_block_is_an_error() -> None:
    decoder = BlockDecoder()
    decoder.receive(Shard(3, 0, 2, 1, b"\0\x01a\0").to_bytes())
    with pytest.raises(FecError, match="3-byte body but the block's shards have 4"):
        decoder.receive(Shard(3, 1, 2, 1, b"\0\x01b").to_bytes())


def test_shard_that_contradicts_its_block_shape_is_an_error() -> None:
    decoder = BlockDecoder()
    decoder.receive(Shard(3, 0, 2, 1, b"\0\x01a\0").to_bytes())
    with pytest.raises(FecError, match="says k=2, m=2 but earlier shards said k=2, m=1"):
        decoder.receive(Shard(3, 1, 2, 2, b"\0\x01b\0").to_bytes())


def test_open_blocks_are_bounded_and_the_oldest_is_abandoned() -> None:
    encoder = BlockEncoder(shard_bytes=32)
    decoder = BlockDecoder(max_open_blocks=4)
    for block in range(6):
        decoder.receive(encoder.encode(block, [b"x", b"y"], m=1)[0])
    assert decoder.abandoned_blocks == 2


def test_a_late_shard_that_contradicts_a_decoded_block_is_reported_not_ignored() -> None:
    # The attack: flip a bit of k in a block's first shard (3 -> 1). That shard alone completes
    # the block as one payload; the block's real shards must not then vanish without a word.
    wire = BlockEncoder(shard_bytes=32).encode(5, [b"a", b"b", b"c"], m=2)
    first = bytearray(wire[0])
    first[5] ^= 0x02  # k: 3 -> 1
    decoder = BlockDecoder()
    wrong = decoder.receive(bytes(first))
    assert wrong is not None and wrong.payloads == [b"a"]  # an erasure code cannot know better
    with pytest.raises(FecError, match="decoded as k=1, m=2.*authenticated shards"):
        decoder.receive(wire[1])
    assert decoder.contradicting_shards == 1
    assert decoder.receive(bytes(first)) is None  # a duplicate of what was decoded is still fine


def _sealed_pair() -> tuple[RecordSession, RecordSession]:
    sender = RecordSession(bytes(32), bytes(range(32)), send_direction=DIRECTION_I2R, receive_direction=DIRECTION_R2I, now=0.0)
    receiver = RecordSession(bytes(range(32)), bytes(32), send_direction=DIRECTION_R2I, receive_direction=DIRECTION_I2R, now=0.0)
    return sender, receiver


@pytest.mark.parametrize("bit", range(8 * HEADER_BYTES))
def test_a_flipped_header_bit_of_a_sealed_shard_becomes_an_erasure_not_a_wrong_block(bit: int) -> None:
    """The path that guarantees integrity: each wire shard travels as one AEAD record."""
    payloads = [b"one", b"two", b"three"]
    sender, receiver = _sealed_pair()
    records = [sender.seal(wire, 0.0) for wire in BlockEncoder(shard_bytes=32).encode(8, payloads, m=2)]
    tampered = bytearray(records[0])
    tampered[RECORD_HEADER.size + bit // 8] ^= 1 << (bit % 8)  # the shard header under the AEAD
    decoder, result = BlockDecoder(), None
    for record in [bytes(tampered), *records[1:]]:
        try:
            wire = receiver.open(record, 0.0)
        except RecordError:
            continue  # refused by the record layer: the decoder sees a lost shard
        result = result or decoder.receive(wire)
    assert result is not None and result.payloads == payloads and result.recovered == (0,)


def test_a_forged_shard_without_the_session_keys_never_reaches_the_decoder() -> None:
    _, receiver = _sealed_pair()
    forged = Shard(block=0, index=0, k=1, m=0, body=pad(b"evil", 25)).to_bytes()
    for record in (RECORD_HEADER.pack(0, 0) + forged + bytes(16), RECORD_HEADER.pack(0, 1) + forged):
        with pytest.raises(RecordError):
            receiver.open(record, 0.0)
