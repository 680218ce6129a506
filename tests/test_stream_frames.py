"""The stream frame codec (nyx.stream.frames): wire layouts, varints, Ack ranges, sizes, refusals."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nyx.stream.frames import (
    FRAME_ERROR_REASONS,
    MAX_CLOSE_REASON_BYTES,
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
    encode_frame,
    encode_frames,
    encode_varint,
    frame_size,
    is_ack_eliciting,
    max_stream_data_len,
    parse_frames,
    stream_frame_overhead,
    varint_size,
)

# ------------------------------------------------------------------------------------- strategies

varints = st.one_of(
    st.integers(0, 63), st.integers(64, 16383), st.integers(16384, (1 << 30) - 1), st.integers(1 << 30, MAX_VARINT)
)


@st.composite
def ack_ranges(draw: st.DrawFn) -> tuple[tuple[int, int], ...]:
    high = draw(varints)
    ranges = []
    for _ in range(draw(st.integers(1, 6))):
        low = high - draw(st.integers(0, min(high, 1000)))
        ranges.append((low, high))
        if low < 2 or not draw(st.booleans()):
            break
        high = low - 2 - draw(st.integers(0, min(low - 2, 1000)))
    return tuple(ranges)


@st.composite
def stream_frames(draw: st.DrawFn) -> Stream:
    data = draw(st.binary(max_size=700))
    offset = draw(st.one_of(st.just(0), st.integers(0, MAX_VARINT - len(data))))
    return Stream(draw(varints), offset, data, draw(st.booleans()))


frames = st.one_of(
    st.builds(Padding, st.integers(1, 700)),
    st.just(Ping()),
    st.builds(Ack, ack_ranges(), varints),
    st.builds(ResetStream, varints, varints, varints),
    st.builds(StopSending, varints, varints),
    stream_frames(),
    st.builds(MaxData, varints),
    st.builds(MaxStreamData, varints, varints),
    st.builds(MaxStreams, varints),
    st.builds(Close, varints, st.text(max_size=60)),
    st.builds(Surbs, st.lists(st.binary(max_size=600), max_size=3).map(tuple)),
    st.builds(SurbRequest, varints),
    varints.flatmap(lambda e: st.integers(0, e).map(lambda r: FecReport(e, r))),
)


def _as_parsed(frame_list: list[Frame]) -> list[Frame]:
    """What parsing the encoding gives back: adjacent Paddings merge (a run of zeros is one
    Padding) and a Close reason is cut to 200 bytes; everything else is unchanged."""
    merged: list[Frame] = []
    for frame in frame_list:
        if isinstance(frame, Close):
            frame = Close(frame.error_code, parse_frames(encode_frame(frame))[0].reason)  # type: ignore[union-attr]
        if isinstance(frame, Padding) and merged and isinstance(merged[-1], Padding):
            merged[-1] = Padding(merged[-1].length + frame.length)
        else:
            merged.append(frame)
    return merged


EXAMPLES = [
    Padding(1),
    Padding(37),
    Ping(),
    Ack(((7, 7),), 0),
    Ack(((100, 110), (90, 95), (50, 80)), 1234),
    Ack(((0, MAX_VARINT),), MAX_VARINT),
    ResetStream(4, 1, 65_536),
    StopSending(8, 0x42),
    Stream(0, 0, b"", False),
    Stream(0, 0, b"", True),
    Stream(4, 0, b"hello", False),
    Stream(4, 1_000_000, b"x" * 560, True),
    MaxData(1 << 20),
    MaxStreamData(12, 1 << 40),
    MaxStreams(100),
    Close(0, ""),
    Close(7, "idle timeout: no traffic for 30 s"),
    Surbs(()),
    Surbs((bytes(range(256)) * 2 + bytes(40),)),
    Surbs((b"a", b"", b"bc")),
    SurbRequest(16),
    FecReport(80, 72),
]

# ------------------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("frame", EXAMPLES, ids=repr)
def test_every_frame_type_round_trips_through_encode_and_parse(frame: Frame) -> None:
    assert parse_frames(encode_frame(frame)) == [frame]


@pytest.mark.parametrize("frame", EXAMPLES, ids=repr)
def test_frame_size_is_the_encoded_length_of_every_example(frame: Frame) -> None:
    assert frame_size(frame) == len(encode_frame(frame))


@given(frames)
def test_any_valid_frame_round_trips(frame: Frame) -> None:
    assert parse_frames(encode_frame(frame)) == _as_parsed([frame])


@given(frames)
def test_frame_size_equals_the_encoded_length(frame: Frame) -> None:
    assert frame_size(frame) == len(encode_frame(frame))


@given(st.lists(frames, min_size=1, max_size=8))
def test_random_frame_lists_round_trip(frame_list: list[Frame]) -> None:
    assert parse_frames(encode_frames(frame_list)) == _as_parsed(frame_list)


@given(st.lists(frames, min_size=1, max_size=4), st.integers(0, 100))
def test_padded_frame_lists_are_exactly_pad_to_bytes_and_round_trip(frame_list: list[Frame], extra: int) -> None:
    pad_to = sum(map(frame_size, frame_list)) + extra
    payload = encode_frames(frame_list, pad_to=pad_to)
    assert len(payload) == pad_to
    expected = frame_list + [Padding(extra)] if extra else frame_list
    assert parse_frames(payload) == _as_parsed(expected)


def test_a_typical_packet_fits_a_record() -> None:
    packet = [Ack(((100, 110), (90, 95), (50, 80)), 1234), Stream(4, 10_000, bytes(560), False)]
    assert len(encode_frames(packet)) <= 610


# ----------------------------------------------------------------------------------------- varints

VARINT_EDGES = [
    (0, 1),
    (63, 1),
    (64, 2),
    (16383, 2),
    (16384, 4),
    ((1 << 30) - 1, 4),
    (1 << 30, 8),
    (MAX_VARINT, 8),
]


@pytest.mark.parametrize(("value", "size"), VARINT_EDGES)
def test_varint_edges_encode_to_the_minimal_size(value: int, size: int) -> None:
    assert len(encode_varint(value)) == size == varint_size(value)


@pytest.mark.parametrize(("value", "size"), VARINT_EDGES)
def test_varint_edges_decode_to_their_value_and_the_offset_after_them(value: int, size: int) -> None:
    assert decode_varint(b"\xff" + encode_varint(value) + b"\xff", 1) == (value, 1 + size)


@pytest.mark.parametrize("value", [-1, MAX_VARINT + 1, 1 << 64])
def test_varints_out_of_range_are_refused_with_value_error(value: int) -> None:
    with pytest.raises(ValueError):
        encode_varint(value)
    with pytest.raises(ValueError):
        varint_size(value)


@pytest.mark.parametrize(
    ("wire", "value"),
    [
        ("c2197c5eff14e88c", 151288809941952652),
        ("9d7f3e7d", 494878333),
        ("7bbd", 15293),
        ("25", 37),
        ("4025", 37),
    ],
)
def test_rfc9000_appendix_a1_examples_decode(wire: str, value: int) -> None:
    assert decode_varint(bytes.fromhex(wire), 0) == (value, len(wire) // 2)


def test_rfc9000_examples_encode_minimally() -> None:
    assert encode_varint(151288809941952652).hex() == "c2197c5eff14e88c"
    assert encode_varint(494878333).hex() == "9d7f3e7d"
    assert encode_varint(15293).hex() == "7bbd"
    assert encode_varint(37).hex() == "25"


@pytest.mark.parametrize("wire", ["40", "80ffff", "c0ffffffffffff", ""])
def test_a_cut_varint_is_a_truncated_frame_error(wire: str) -> None:
    with pytest.raises(FrameError) as error:
        decode_varint(bytes.fromhex(wire), 0)
    assert error.value.reason == "truncated"


def test_decode_varint_at_the_end_of_the_buffer_is_truncated() -> None:
    with pytest.raises(FrameError, match="truncated|ends") as error:
        decode_varint(b"\x01\x02", 2)
    assert error.value.reason == "truncated"


def test_decode_varint_reads_a_memoryview() -> None:
    assert decode_varint(memoryview(b"\x00\x7b\xbd"), 1) == (15293, 3)


def test_non_minimal_varints_in_fields_are_accepted() -> None:
    assert parse_frames(b"\x10\x80\x00\x00\x05") == [MaxData(5)]


# --------------------------------------------------------------------------------------------- Ack


def test_ack_ranges_are_written_as_quic_largest_gap_and_length() -> None:
    # largest 60, delay 5, 2 more ranges, first 60-50; (45..40): gap 50-45-2 = 3, len 5; (30..0): 8, 30
    assert encode_frame(Ack(((50, 60), (40, 45), (0, 30)), 5)) == bytes([2, 60, 5, 2, 10, 3, 5, 8, 30])


def test_ack_ranges_with_exactly_one_missing_packet_between_are_accepted() -> None:
    frame = Ack(((5, 6), (2, 3)), 0)
    assert parse_frames(encode_frame(frame)) == [frame]


@pytest.mark.parametrize(
    "ranges",
    [
        (),
        ((5, 4),),
        ((-1, 3),),
        ((0, MAX_VARINT + 1),),
        ((2, 3), (5, 6)),
        ((5, 6), (3, 4)),
        ((5, 9), (3, 6)),
        ((5, 9), (5, 9)),
    ],
    ids=["empty", "low-above-high", "negative", "too-large", "ascending", "adjacent", "overlapping", "repeated"],
)
def test_ack_ranges_that_break_the_rules_are_refused_on_encode(ranges: tuple[tuple[int, int], ...]) -> None:
    with pytest.raises(ValueError):
        encode_frame(Ack(ranges, 0))


def test_ack_whose_first_range_goes_below_packet_zero_is_refused_on_parse() -> None:
    with pytest.raises(FrameError) as error:
        parse_frames(bytes([2, 5, 0, 0, 6]))
    assert error.value.reason == "value"


def test_ack_whose_later_range_goes_below_packet_zero_is_refused_on_parse() -> None:
    # largest 10, first range 10..8, gap 5 puts the next high at 1, length 2 would reach -1.
    with pytest.raises(FrameError) as error:
        parse_frames(bytes([2, 10, 0, 1, 2, 5, 2]))
    assert error.value.reason == "value"


def test_ack_claiming_more_ranges_than_its_bytes_is_truncated_before_any_loop() -> None:
    with pytest.raises(FrameError) as error:
        parse_frames(b"\x02\x0a\x00" + encode_varint(MAX_VARINT) + b"\x00\x01\x01")
    assert error.value.reason == "truncated"


# ------------------------------------------------------------------------------------------ Stream


def test_stream_frame_at_offset_zero_omits_the_offset_field() -> None:
    assert encode_frame(Stream(4, 0, b"ab", False)) == b"\x0a\x04\x02ab"


def test_stream_frame_with_offset_and_fin_sets_off_len_and_fin_bits() -> None:
    assert encode_frame(Stream(4, 100, b"ab", True)) == b"\x0f\x04\x40\x64\x02ab"


@pytest.mark.parametrize("frame_type", range(0x08, 0x10))
def test_all_eight_stream_frame_types_parse(frame_type: int) -> None:
    body = bytes([frame_type, 4])
    if frame_type & 0x04:
        body += b"\x07"
    if frame_type & 0x02:
        body += b"\x03"
    expected = Stream(4, 7 if frame_type & 0x04 else 0, b"xyz", bool(frame_type & 0x01))
    assert parse_frames(body + b"xyz") == [expected]


def test_stream_frame_without_len_takes_the_rest_of_the_payload() -> None:
    assert parse_frames(b"\x01\x08\x04" + bytes(3)) == [Ping(), Stream(4, 0, bytes(3), False)]


def test_last_stream_frame_omits_len_when_the_payload_is_not_padded() -> None:
    frame = Stream(4, 0, b"tail", True)
    payload = encode_frames([Ping(), frame])
    assert payload == b"\x01\x09\x04tail"
    assert len(payload) == 1 + frame_size(frame) - 1
    assert parse_frames(payload) == [Ping(), frame]


def test_last_stream_frame_keeps_len_when_padding_follows() -> None:
    payload = encode_frames([Stream(4, 0, b"tail", False)], pad_to=20)
    assert payload[:7] == b"\x0a\x04\x04tail"
    assert parse_frames(payload) == [Stream(4, 0, b"tail", False), Padding(13)]


def test_stream_frame_not_last_keeps_len() -> None:
    assert encode_frames([Stream(4, 0, b"ab", False), Ping()]) == b"\x0a\x04\x02ab\x01"


def test_stream_frame_claiming_more_bytes_than_the_payload_is_truncated() -> None:
    with pytest.raises(FrameError) as error:
        parse_frames(b"\x0a\x04\x05abc")
    assert error.value.reason == "truncated"


def test_stream_data_ending_past_the_largest_varint_is_refused_on_parse() -> None:
    with pytest.raises(FrameError) as error:
        parse_frames(b"\x0e\x04" + encode_varint(MAX_VARINT) + b"\x01a")
    assert error.value.reason == "value"


def test_stream_data_ending_past_the_largest_varint_is_refused_on_encode() -> None:
    with pytest.raises(ValueError):
        encode_frame(Stream(4, MAX_VARINT, b"a", False))
    with pytest.raises(ValueError):
        frame_size(Stream(4, MAX_VARINT, b"a", False))


def test_parsed_stream_data_is_bytes_even_from_a_memoryview() -> None:
    buffer = bytearray(b"\x0a\x04\x02ab")
    (frame,) = parse_frames(memoryview(buffer))
    buffer[3:5] = b"zz"
    assert type(frame.data) is bytes and frame.data == b"ab"  # type: ignore[union-attr]


def test_stream_frame_overhead_is_exactly_what_encode_frame_adds() -> None:
    edges = [0, 1, 63, 64, 16383, 16384, (1 << 30) - 1, 1 << 30]
    for stream_id, offset, data_len in itertools.product(
        edges + [MAX_VARINT], edges + [MAX_VARINT - 70_000], [0, 1, 63, 64, 560, 16383, 16384, 65_000]
    ):
        encoded = encode_frame(Stream(stream_id, offset, bytes(data_len), False))
        assert stream_frame_overhead(stream_id, offset, data_len) == len(encoded) - data_len, (stream_id, offset)


@given(varints, st.integers(0, MAX_VARINT - 2000), st.integers(0, 2000))
def test_stream_frame_overhead_matches_encode_frame_for_random_frames(stream_id: int, offset: int, data_len: int) -> None:
    encoded = encode_frame(Stream(stream_id, offset, bytes(data_len), True))
    assert stream_frame_overhead(stream_id, offset, data_len) + data_len == len(encoded)


@given(varints, st.integers(0, 1 << 40), st.integers(0, 70_000))
def test_max_stream_data_len_is_the_most_data_that_fits_the_room(stream_id: int, offset: int, room: int) -> None:
    n = max_stream_data_len(stream_id, offset, room)
    if n:
        assert stream_frame_overhead(stream_id, offset, n) + n <= room
    assert stream_frame_overhead(stream_id, offset, n + 1) + n + 1 > room


# ------------------------------------------------------------------------------ Padding and pad_to


def test_a_run_of_zero_bytes_parses_as_one_padding() -> None:
    assert parse_frames(bytes(5) + b"\x01" + bytes(2)) == [Padding(5), Ping(), Padding(2)]


def test_pad_to_the_exact_length_adds_no_padding() -> None:
    assert encode_frames([Ping()], pad_to=1) == b"\x01"


def test_pad_to_shorter_than_the_frames_is_refused() -> None:
    with pytest.raises(ValueError):
        encode_frames([MaxData(1000)], pad_to=2)


def test_pad_to_alone_makes_a_payload_of_padding() -> None:
    assert parse_frames(encode_frames([], pad_to=610)) == [Padding(610)]


def test_an_empty_payload_is_refused_on_encode() -> None:
    with pytest.raises(ValueError):
        encode_frames([])


@pytest.mark.parametrize("length", [0, -1])
def test_padding_shorter_than_one_byte_is_refused(length: int) -> None:
    with pytest.raises(ValueError):
        encode_frame(Padding(length))
    with pytest.raises(ValueError):
        frame_size(Padding(length))


# ------------------------------------------------------------------------------------------- Close


def test_close_reason_is_cut_to_200_bytes_at_a_character_boundary() -> None:
    reason = "a" + "\u20ac" * 100  # 1 + 300 bytes; 200 bytes would split the 67th euro sign
    (frame,) = parse_frames(encode_frame(Close(3, reason)))
    assert frame == Close(3, "a" + "\u20ac" * 66)
    assert len(frame.reason.encode()) == 199 <= MAX_CLOSE_REASON_BYTES  # type: ignore[union-attr]


def test_close_reason_of_exactly_200_bytes_is_kept_whole() -> None:
    assert parse_frames(encode_frame(Close(0, "e" * 200))) == [Close(0, "e" * 200)]


def test_close_reason_that_is_not_utf8_is_refused() -> None:
    with pytest.raises(FrameError) as error:
        parse_frames(b"\x1c\x00\x02\xc3\x28")
    assert error.value.reason == "value"


def test_close_reason_longer_than_200_bytes_is_refused_on_parse() -> None:
    with pytest.raises(FrameError) as error:
        parse_frames(b"\x1c\x00" + encode_varint(201) + b"a" * 201)
    assert error.value.reason == "value"


# ------------------------------------------------------------------------------------------- SURBs


def test_a_real_size_surb_batch_round_trips() -> None:
    frame = Surbs((bytes(552),))
    assert frame_size(frame) == 1 + 1 + 2 + 552
    assert parse_frames(encode_frame(frame)) == [frame]


def test_surbs_claiming_more_entries_than_bytes_is_truncated_before_any_loop() -> None:
    with pytest.raises(FrameError) as error:
        parse_frames(b"\x30" + encode_varint(MAX_VARINT) + b"\x00")
    assert error.value.reason == "truncated"


def test_a_surb_claiming_more_bytes_than_the_payload_is_truncated() -> None:
    with pytest.raises(FrameError) as error:
        parse_frames(b"\x30\x01\x40\x10" + bytes(10))
    assert error.value.reason == "truncated"


# ------------------------------------------------------------------------------ refusals, general


def test_an_empty_payload_is_refused_on_parse() -> None:
    with pytest.raises(FrameError) as error:
        parse_frames(b"")
    assert error.value.reason == "value"


@pytest.mark.parametrize("frame_type", [0x03, 0x06, 0x07, 0x13, 0x1D, 0x2F, 0x33, 0x3F])
def test_an_unknown_frame_type_is_refused(frame_type: int) -> None:
    with pytest.raises(FrameError) as error:
        parse_frames(bytes([frame_type, 0, 0, 0]))
    assert error.value.reason == "unknown_type"


def test_a_known_frame_type_in_a_longer_varint_is_refused_as_non_minimal() -> None:
    with pytest.raises(FrameError) as error:
        parse_frames(b"\x40\x01")
    assert error.value.reason == "varint"


def test_a_two_byte_frame_type_above_63_is_unknown() -> None:
    with pytest.raises(FrameError) as error:
        parse_frames(b"\x40\x40")
    assert error.value.reason == "unknown_type"


def test_frame_error_is_a_value_error_with_a_reason_and_a_message() -> None:
    error = FrameError("truncated", "varint expected at byte 3")
    assert isinstance(error, ValueError)
    assert error.reason in FRAME_ERROR_REASONS and str(error) == "varint expected at byte 3"


@pytest.mark.parametrize(
    "frame",
    [
        ResetStream(-1, 0, 0),
        StopSending(0, MAX_VARINT + 1),
        Stream(MAX_VARINT + 1, 0, b"", False),
        Stream(0, -1, b"", False),
        MaxData(-1),
        MaxStreamData(0, MAX_VARINT + 1),
        MaxStreams(-5),
        Close(-1, ""),
        SurbRequest(MAX_VARINT + 1),
        Ack(((1, 2),), -1),
    ],
    ids=repr,
)
def test_out_of_range_fields_are_refused_on_encode(frame: Frame) -> None:
    with pytest.raises(ValueError):
        encode_frame(frame)


def test_encode_frame_refuses_what_is_not_a_frame() -> None:
    with pytest.raises(TypeError):
        encode_frame(b"\x01")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("frame", "eliciting"),
    [
        (Padding(3), False),
        (Ack(((1, 1),), 0), False),
        (Close(0, ""), False),
        (Ping(), True),
        (Stream(0, 0, b"a", False), True),
        (ResetStream(0, 0, 0), True),
        (StopSending(0, 0), True),
        (MaxData(1), True),
        (MaxStreamData(0, 1), True),
        (MaxStreams(1), True),
        (Surbs(()), True),
        (SurbRequest(1), True),
        (FecReport(10, 9), False),
    ],
    ids=repr,
)
def test_every_frame_but_ack_padding_close_and_fec_report_is_ack_eliciting(frame: Frame, eliciting: bool) -> None:
    assert is_ack_eliciting(frame) is eliciting


def test_a_fec_report_of_more_shards_received_than_expected_is_refused_both_ways() -> None:
    with pytest.raises(ValueError, match="received out of"):
        encode_frame(FecReport(3, 4))
    with pytest.raises(FrameError) as error:
        parse_frames(b"\x32\x03\x04")
    assert error.value.reason == "value"
