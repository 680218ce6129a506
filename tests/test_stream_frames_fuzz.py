"""Property tests: any bytes into the frame parser give frames or FrameError, nothing else.

What holds for a payload P that parses (P may come from a peer, with non-minimal varints, an
explicit zero offset, a Stream frame with LEN at the end):
- parse(encode_frames(parse(P))) == parse(P): re-encoding keeps the frames;
- len(encode_frames(parse(P))) <= len(P): our encoding is minimal, so it never grows;
- encode_frames(parse(P)) == P when P came from encode_frames: our own encodings are canonical.
P itself need not come back byte for byte (RFC 9000 allows non-minimal varints).
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from nyx.stream.frames import (
    FRAME_ERROR_REASONS,
    MAX_VARINT,
    Ack,
    Close,
    Frame,
    FrameError,
    MaxData,
    MaxStreamData,
    MaxStreams,
    Padding,
    Ping,
    ResetStream,
    StopSending,
    Stream,
    FecReport,
    SurbRequest,
    Surbs,
    decode_varint,
    encode_frames,
    encode_varint,
    frame_size,
    parse_frames,
)

KNOWN_TYPES = [0x00, 0x01, 0x02, 0x04, 0x05, *range(0x08, 0x10), 0x10, 0x11, 0x12, 0x1C, 0x30, 0x31]
SIZES = {1: (0x00, 0x3F), 2: (0x4000, 0x3FFF), 4: (0x8000_0000, 0x3FFF_FFFF), 8: (0xC000_0000_0000_0000, MAX_VARINT)}

small = st.integers(0, 1000)
varints = st.one_of(small, st.integers(0, MAX_VARINT))


def _any_size_varint(value: int, size: int) -> bytes:
    """`value` in a `size`-byte varint, minimal or not (size must hold it)."""
    prefix, _ = SIZES[size]
    return (prefix | value).to_bytes(size, "big")


@st.composite
def ack(draw: st.DrawFn) -> Ack:
    high = draw(varints)
    ranges = []
    while True:
        low = high - draw(st.integers(0, min(high, 50)))
        ranges.append((low, high))
        if low < 2 or len(ranges) > 4 or not draw(st.booleans()):
            return Ack(tuple(ranges), draw(varints))
        high = low - 2 - draw(st.integers(0, min(low - 2, 50)))


@st.composite
def stream(draw: st.DrawFn) -> Stream:
    data = draw(st.binary(max_size=80))
    return Stream(draw(varints), draw(st.one_of(st.just(0), small)), data, draw(st.booleans()))


frames = st.one_of(
    st.builds(Padding, st.integers(1, 40)),
    st.just(Ping()),
    ack(),
    st.builds(ResetStream, varints, varints, varints),
    st.builds(StopSending, varints, varints),
    stream(),
    st.builds(MaxData, varints),
    st.builds(MaxStreamData, varints, varints),
    st.builds(MaxStreams, varints),
    st.builds(Close, varints, st.text(max_size=20)),
    st.builds(Surbs, st.lists(st.binary(max_size=30), max_size=3).map(tuple)),
    st.builds(SurbRequest, varints),
    varints.flatmap(lambda e: st.integers(0, e).map(lambda r: FecReport(e, r))),
)
frame_lists = st.lists(frames, min_size=1, max_size=6)


def _parse(payload: bytes | memoryview) -> list[Frame] | None:
    """The frames, or None after checking that the only failure is a FrameError with a reason."""
    try:
        parsed = parse_frames(payload)
    except FrameError as error:
        assert error.reason in FRAME_ERROR_REASONS
        return None
    assert parsed and isinstance(parsed, list)
    return parsed


def _mutated(data: st.DataObject, base: bytes) -> bytes:
    """A valid payload with bytes flipped, cut or extended: reaches the parser's deep paths."""
    blob = bytearray(base)
    for _ in range(data.draw(st.integers(0, 4))):
        if blob:
            blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        del blob[data.draw(st.integers(0, len(blob))) :]
    blob += data.draw(st.binary(max_size=8))
    return bytes(blob)


@st.composite
def frame_shaped_bytes(draw: st.DrawFn) -> bytes:
    """Known type bytes followed by varints of any size (non-minimal too) and a few raw bytes."""
    out = bytearray()
    for _ in range(draw(st.integers(1, 6))):
        out.append(draw(st.sampled_from(KNOWN_TYPES)))
        for _ in range(draw(st.integers(0, 5))):
            size = draw(st.sampled_from(sorted(SIZES)))
            out += _any_size_varint(draw(st.integers(0, SIZES[size][1])), size)
        out += draw(st.binary(max_size=6))
    return bytes(out)


# ---------------------------------------------------------------------------------- parse_frames


@given(st.binary(max_size=700))
def test_any_bytes_parse_to_frames_or_a_frame_error(blob: bytes) -> None:
    _parse(blob)


@given(st.binary(max_size=200))
def test_any_memoryview_parses_like_its_bytes(blob: bytes) -> None:
    assert _parse(memoryview(blob)) == _parse(blob)


@given(frame_shaped_bytes())
def test_frame_shaped_bytes_with_any_varint_sizes_parse_or_fail_cleanly(blob: bytes) -> None:
    parsed = _parse(blob)
    if parsed is not None:
        assert parse_frames(encode_frames(parsed)) == parsed


@given(st.data(), frame_lists)
def test_mutated_valid_payloads_parse_or_fail_cleanly(data: st.DataObject, frame_list: list[Frame]) -> None:
    _parse(_mutated(data, encode_frames(frame_list)))


@given(st.data(), frame_lists)
def test_a_mutated_payload_that_parses_re_encodes_to_the_same_frames(data: st.DataObject, frame_list: list[Frame]) -> None:
    parsed = _parse(_mutated(data, encode_frames(frame_list)))
    if parsed is not None:
        assert parse_frames(encode_frames(parsed)) == parsed


@given(st.one_of(frame_shaped_bytes(), st.binary(max_size=300)))
def test_re_encoding_parsed_frames_never_makes_the_payload_longer(blob: bytes) -> None:
    parsed = _parse(blob)
    if parsed is not None:
        assert len(encode_frames(parsed)) <= len(blob)


@given(frame_lists, st.one_of(st.none(), st.integers(0, 40)))
def test_our_own_encodings_are_canonical(frame_list: list[Frame], extra: int | None) -> None:
    # With padding a last Stream frame keeps its LEN; at least one byte of Padding follows it.
    pad_to = None if extra is None else sum(map(frame_size, frame_list)) + 1 + extra
    payload = encode_frames(frame_list, pad_to=pad_to)
    assert encode_frames(parse_frames(payload)) == payload


# ----------------------------------------------------------------------------------------- varints


@given(st.binary(max_size=20), st.integers(0, 24))
def test_decode_varint_on_any_bytes_at_any_offset_gives_a_value_or_truncated(blob: bytes, offset: int) -> None:
    try:
        value, after = decode_varint(blob, offset)
    except FrameError as error:
        assert error.reason == "truncated"
        assert offset >= len(blob) or offset + (1 << (blob[offset] >> 6)) > len(blob)
        return
    assert 0 <= value <= MAX_VARINT
    assert after - offset in (1, 2, 4, 8) and after <= len(blob)


@given(st.integers(0, MAX_VARINT))
def test_every_varint_value_round_trips(value: int) -> None:
    encoded = encode_varint(value)
    assert decode_varint(encoded, 0) == (value, len(encoded))


@given(st.integers(0, MAX_VARINT), st.sampled_from(sorted(SIZES)))
def test_non_minimal_varints_decode_to_the_same_value(value: int, size: int) -> None:
    if value <= SIZES[size][1]:
        assert decode_varint(_any_size_varint(value, size), 0) == (value, size)
