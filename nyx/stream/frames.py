"""Stream frames: the codec for what a record's plaintext (a "packet payload") carries.

Every record travels in one Sphinx message of at most 646 bytes, so a packet payload holds about
610 bytes of frames. The record header's 64-bit sequence number is the packet number, so a payload
is only a sequence of frames, coded like QUIC's (RFC 9000 sections 16 and 19) so that the layout
is familiar and reviewed. Sans-I/O: pure functions over bytes and frozen dataclasses.

Varints (RFC 9000 section 16): the top two bits of the first byte give the length (00: 1 byte,
01: 2, 10: 4, 11: 8), the remaining bits the big-endian value, so values are below 2^62.

    type  frame          body (every field a varint unless noted)
    0x00  Padding        nothing; a run of N zero bytes parses as ONE Padding(N)
    0x01  Ping           nothing (ack-eliciting)
    0x02  Ack            largest, ack_delay_us, range_count, first_range_len, (gap, range_len)*
    0x04  ResetStream    stream_id, error_code, final_size
    0x05  StopSending    stream_id, error_code
    0x08-0x0f Stream     stream_id, [offset if 0x04], [length if 0x02], data; 0x01 = FIN
    0x10  MaxData        limit
    0x11  MaxStreamData  stream_id, limit
    0x12  MaxStreams     limit (bidirectional streams)
    0x1c  Close          error_code, reason_length, reason (UTF-8, at most 200 bytes)
    0x30  Surbs          count, (length, surb bytes)*
    0x31  SurbRequest    count
    0x32  FecReport      shards_expected, shards_received (FEC shards of the peer's blocks, raw loss)

Ack ranges are inclusive (low, high), sorted by high descending, with at least one missing packet
between two ranges; on the wire, as in QUIC, first_range_len = high0 - low0 and each following
range is (gap, range_len) with high = previous low - gap - 2, low = high - range_len.

Errors say whose fault they are: encoders raise `ValueError` for values a local caller got wrong,
`parse_frames` raises `FrameError` (with a `reason` for drop counters) for what a peer sent, and
nothing else. Like QUIC, the parser accepts non-minimal varints in fields (the encoder always
writes minimal ones), so parse(encode(frames)) == frames but not every payload re-encodes to its
own bytes. Frame types must be one minimal byte (QUIC section 12.4): every defined type is < 64.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

FRAME_ERROR_REASONS: Final = ("truncated", "varint", "unknown_type", "value")
MAX_VARINT: Final = (1 << 62) - 1
MAX_CLOSE_REASON_BYTES: Final = 200


class FrameError(ValueError):
    """A payload from the peer could not be parsed; `reason` is one of FRAME_ERROR_REASONS."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


# ---------------------------------------------------------------------------------------- varints

_U16: Final = struct.Struct(">H")
_U32: Final = struct.Struct(">I")
_U64: Final = struct.Struct(">Q")


def varint_size(value: int) -> int:
    """Bytes `encode_varint(value)` takes: lets senders budget a packet without encoding."""
    if value < 0x40:
        if value < 0:
            raise ValueError(f"varint must be >= 0, got {value}")
        return 1
    if value < 0x4000:
        return 2
    if value < 0x4000_0000:
        return 4
    if value <= MAX_VARINT:
        return 8
    raise ValueError(f"varint must be <= 2^62 - 1, got {value}")


def encode_varint(value: int) -> bytes:
    """The minimal RFC 9000 encoding of `value`; ValueError outside 0..MAX_VARINT (a local bug)."""
    if value < 0x40:
        if value < 0:
            raise ValueError(f"varint must be >= 0, got {value}")
        return bytes((value,))
    if value < 0x4000:
        return _U16.pack(value | 0x4000)
    if value < 0x4000_0000:
        return _U32.pack(value | 0x8000_0000)
    if value <= MAX_VARINT:
        return _U64.pack(value | 0xC000_0000_0000_0000)
    raise ValueError(f"varint must be <= 2^62 - 1, got {value}")


def _varint(data: bytes | memoryview, pos: int, end: int) -> tuple[int, int]:
    # The parser's hot helper: struct on the buffer, never a per-byte loop.
    if pos >= end:
        raise FrameError("truncated", f"varint expected at byte {pos}, payload ends at {end}")
    first = data[pos]
    if first < 0x40:
        return first, pos + 1
    if first < 0x80:
        if pos + 2 > end:
            raise FrameError("truncated", f"2-byte varint at byte {pos} runs past {end}")
        return _U16.unpack_from(data, pos)[0] & 0x3FFF, pos + 2
    if first < 0xC0:
        if pos + 4 > end:
            raise FrameError("truncated", f"4-byte varint at byte {pos} runs past {end}")
        return _U32.unpack_from(data, pos)[0] & 0x3FFF_FFFF, pos + 4
    if pos + 8 > end:
        raise FrameError("truncated", f"8-byte varint at byte {pos} runs past {end}")
    return _U64.unpack_from(data, pos)[0] & MAX_VARINT, pos + 8


def decode_varint(data: bytes | memoryview, offset: int) -> tuple[int, int]:
    """(value, offset after it) of the varint at `offset`; FrameError("truncated") if cut short.

    Non-minimal encodings are accepted (RFC 9000 allows them); every 2-bit prefix is a valid
    length, so the only failure is running out of bytes.
    """
    if offset < 0:
        raise ValueError(f"offset must be >= 0, got {offset}")
    return _varint(data, offset, len(data))


# ----------------------------------------------------------------------------------------- frames


@dataclass(frozen=True, slots=True)
class Padding:
    """`length` zero bytes: fills a record to its fixed size so lengths do not leak content."""

    length: int


@dataclass(frozen=True, slots=True)
class Ping:
    """Asks for an Ack (keeps a path measured when there is nothing else to send)."""


@dataclass(frozen=True, slots=True)
class Ack:
    """Packets received: inclusive (low, high) ranges, highest first, at least one gap apart."""

    ranges: tuple[tuple[int, int], ...]
    ack_delay_us: int


@dataclass(frozen=True, slots=True)
class ResetStream:
    """The sender abandons a stream; `final_size` settles flow-control accounting."""

    stream_id: int
    error_code: int
    final_size: int


@dataclass(frozen=True, slots=True)
class StopSending:
    """The receiver no longer wants a stream's data; the peer answers with ResetStream."""

    stream_id: int
    error_code: int


@dataclass(frozen=True, slots=True)
class Stream:
    """Bytes of one stream at `offset`; `fin` marks the stream's last byte."""

    stream_id: int
    offset: int
    data: bytes
    fin: bool


@dataclass(frozen=True, slots=True)
class MaxData:
    """Session-wide flow-control limit, in bytes of stream data."""

    limit: int


@dataclass(frozen=True, slots=True)
class MaxStreamData:
    """One stream's flow-control limit, in bytes from its start."""

    stream_id: int
    limit: int


@dataclass(frozen=True, slots=True)
class MaxStreams:
    """How many bidirectional streams the peer may open in total."""

    limit: int


@dataclass(frozen=True, slots=True)
class Close:
    """The session ends; `reason` is for humans and logs, truncated to 200 UTF-8 bytes."""

    error_code: int
    reason: str


@dataclass(frozen=True, slots=True)
class Surbs:
    """Single-use reply blocks sent ahead, so the exit can answer an anonymous client."""

    surbs: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class SurbRequest:
    """The exit's pool runs low: "send me about this many more SURBs"."""

    count: int


@dataclass(frozen=True, slots=True)
class FecReport:
    """The receiver's raw shard loss since its last report: of `shards_expected` FEC shards of
    the peer's blocks, `shards_received` arrived. The sender's redundancy controller needs the
    loss *before* FEC repaired it, which only the receiver sees."""

    shards_expected: int
    shards_received: int


Frame = (
    Padding | Ping | Ack | ResetStream | StopSending | Stream | MaxData | MaxStreamData | MaxStreams | Close | Surbs
    | SurbRequest | FecReport
)

_PING: Final = Ping()


def is_ack_eliciting(frame: Frame) -> bool:
    """Whether receiving `frame` obliges an Ack: everything except Ack, Padding, Close and
    FecReport (a lost report is simply superseded by the next)."""
    return not isinstance(frame, (Ack, Padding, Close, FecReport))


# --------------------------------------------------------------------------------------- encoding

_v = encode_varint


def _check_ack_ranges(ranges: tuple[tuple[int, int], ...]) -> None:
    if not ranges:
        raise ValueError("an Ack needs at least one range")
    previous_low = None
    for low, high in ranges:
        if not 0 <= low <= high <= MAX_VARINT:
            raise ValueError(f"Ack range ({low}, {high}) must have 0 <= low <= high <= 2^62 - 1")
        if previous_low is not None and high >= previous_low - 1:
            raise ValueError(f"Ack range ({low}, {high}) must end at least 2 below the previous low {previous_low}")
        previous_low = low


def _close_reason(reason: str) -> bytes:
    # Cut at 200 bytes, then drop a partial trailing character (the only invalid UTF-8 left).
    encoded = reason.encode("utf-8")
    if len(encoded) <= MAX_CLOSE_REASON_BYTES:
        return encoded
    return encoded[:MAX_CLOSE_REASON_BYTES].decode("utf-8", "ignore").encode("utf-8")


def _encode_stream(frame: Stream, with_length: bool) -> bytes:
    offset, data = frame.offset, frame.data
    if offset + len(data) > MAX_VARINT:
        raise ValueError(f"Stream offset {offset} + {len(data)} bytes exceeds 2^62 - 1")
    frame_type = 0x08 | (0x04 if offset else 0) | (0x02 if with_length else 0) | (0x01 if frame.fin else 0)
    parts = [bytes((frame_type,)), _v(frame.stream_id)]
    if offset:
        parts.append(_v(offset))
    if with_length:
        parts.append(_v(len(data)))
    parts.append(data)
    return b"".join(parts)


def _encode_ack(frame: Ack) -> bytes:
    ranges = frame.ranges
    _check_ack_ranges(ranges)
    low, high = ranges[0]
    parts = [b"\x02", _v(high), _v(frame.ack_delay_us), _v(len(ranges) - 1), _v(high - low)]
    for next_low, next_high in ranges[1:]:
        parts.append(_v(low - next_high - 2))
        parts.append(_v(next_high - next_low))
        low = next_low
    return b"".join(parts)


def _encode_padding(frame: Padding) -> bytes:
    if frame.length < 1:
        raise ValueError(f"Padding length must be >= 1, got {frame.length}")
    return bytes(frame.length)


def _encode_close(frame: Close) -> bytes:
    reason = _close_reason(frame.reason)
    return b"\x1c" + _v(frame.error_code) + _v(len(reason)) + reason


def _encode_surbs(frame: Surbs) -> bytes:
    parts = [b"\x30", _v(len(frame.surbs))]
    for surb in frame.surbs:
        parts.append(_v(len(surb)))
        parts.append(surb)
    return b"".join(parts)


def _encode_fec_report(frame: FecReport) -> bytes:
    if frame.shards_received > frame.shards_expected:
        raise ValueError(f"FEC report of {frame.shards_received} received out of {frame.shards_expected} expected")
    return b"\x32" + _v(frame.shards_expected) + _v(frame.shards_received)


_ENCODERS: Final[dict[type, Callable[..., bytes]]] = {
    Stream: lambda f: _encode_stream(f, True),
    Ack: _encode_ack,
    Padding: _encode_padding,
    Ping: lambda f: b"\x01",
    ResetStream: lambda f: b"\x04" + _v(f.stream_id) + _v(f.error_code) + _v(f.final_size),
    StopSending: lambda f: b"\x05" + _v(f.stream_id) + _v(f.error_code),
    MaxData: lambda f: b"\x10" + _v(f.limit),
    MaxStreamData: lambda f: b"\x11" + _v(f.stream_id) + _v(f.limit),
    MaxStreams: lambda f: b"\x12" + _v(f.limit),
    Close: _encode_close,
    Surbs: _encode_surbs,
    SurbRequest: lambda f: b"\x31" + _v(f.count),
    FecReport: _encode_fec_report,
}


def encode_frame(frame: Frame) -> bytes:
    """The wire bytes of one frame (Stream frames always carry LEN); ValueError for bad values."""
    encoder = _ENCODERS.get(type(frame))
    if encoder is None:
        raise TypeError(f"not a stream frame: {frame!r}")
    return encoder(frame)


def encode_frames(frames: Iterable[Frame], pad_to: int | None = None) -> bytes:
    """A packet payload: the frames in order, then Padding up to exactly `pad_to` bytes.

    Without `pad_to`, a Stream frame that comes last omits LEN (its data runs to the payload's
    end), saving 1-2 bytes. ValueError if the frames are already longer than `pad_to`, or if the
    payload would be empty (a packet carries at least one frame; the parser refuses none).
    """
    frames = list(frames)
    parts = [encode_frame(frame) for frame in frames[:-1]]
    if frames:
        last = frames[-1]
        if pad_to is None and isinstance(last, Stream):
            parts.append(_encode_stream(last, False))
        else:
            parts.append(encode_frame(last))
    if pad_to is not None:
        size = sum(map(len, parts))
        if size > pad_to:
            raise ValueError(f"frames take {size} bytes, more than pad_to={pad_to}")
        parts.append(bytes(pad_to - size))
    payload = b"".join(parts)
    if not payload:
        raise ValueError("a packet payload needs at least one frame")
    return payload


def stream_frame_overhead(stream_id: int, offset: int, data_len: int) -> int:
    """Bytes a Stream frame (with LEN, as encode_frame writes it) adds around `data_len` bytes."""
    return 1 + varint_size(stream_id) + (varint_size(offset) if offset else 0) + varint_size(data_len)


def max_stream_data_len(stream_id: int, offset: int, room: int) -> int:
    """The most data a Stream frame (with LEN) can carry in `room` bytes; 0 if none fits.

    Solves overhead + n <= room, where the overhead itself grows with n's varint size.
    """
    fixed = 1 + varint_size(stream_id) + (varint_size(offset) if offset else 0)
    best = 0
    for length_size, largest in ((1, 0x3F), (2, 0x3FFF), (4, 0x3FFF_FFFF), (8, MAX_VARINT)):
        best = max(best, min(room - fixed - length_size, largest))
    return min(best, MAX_VARINT - offset)


def _stream_size(frame: Stream) -> int:
    data_len = len(frame.data)
    if frame.offset + data_len > MAX_VARINT:
        raise ValueError(f"Stream offset {frame.offset} + {data_len} bytes exceeds 2^62 - 1")
    return stream_frame_overhead(frame.stream_id, frame.offset, data_len) + data_len


def _padding_size(frame: Padding) -> int:
    if frame.length < 1:
        raise ValueError(f"Padding length must be >= 1, got {frame.length}")
    return frame.length


# Sizes without encoding; the other frames are rare or small enough to encode and measure.
_SIZES: Final[dict[type, Callable[..., int]]] = {
    Stream: _stream_size,
    Padding: _padding_size,
    Ping: lambda f: 1,
    MaxData: lambda f: 1 + varint_size(f.limit),
    MaxStreams: lambda f: 1 + varint_size(f.limit),
    MaxStreamData: lambda f: 1 + varint_size(f.stream_id) + varint_size(f.limit),
    SurbRequest: lambda f: 1 + varint_size(f.count),
    FecReport: lambda f: 1 + varint_size(f.shards_expected) + varint_size(f.shards_received),
}


def frame_size(frame: Frame) -> int:
    """len(encode_frame(frame)), from varint sizes where that is cheap (encoding otherwise).

    Raises the ValueError encode_frame would for out-of-range values.
    """
    size = _SIZES.get(type(frame))
    return size(frame) if size is not None else len(encode_frame(frame))


# ---------------------------------------------------------------------------------------- parsing

_Parser = Callable[[bytes, int, int, int], tuple[Frame, int]]


def _parse_padding(data: bytes, pos: int, end: int, frame_type: int) -> tuple[Frame, int]:
    stop = end - len(data[pos:end].lstrip(b"\x00"))  # C-speed scan for the end of the zero run
    return Padding(stop - pos + 1), stop


def _parse_ping(data: bytes, pos: int, end: int, frame_type: int) -> tuple[Frame, int]:
    return _PING, pos


def _parse_ack(data: bytes, pos: int, end: int, frame_type: int) -> tuple[Frame, int]:
    high, pos = _varint(data, pos, end)
    delay, pos = _varint(data, pos, end)
    count, pos = _varint(data, pos, end)
    first, pos = _varint(data, pos, end)
    if count > (end - pos) // 2:  # each range takes at least 2 bytes: refuse before looping
        raise FrameError("truncated", f"Ack claims {count} more ranges in {end - pos} bytes")
    low = high - first
    if low < 0:
        raise FrameError("value", f"Ack first range of {first + 1} below largest {high} goes negative")
    ranges = [(low, high)]
    for _ in range(count):
        gap, pos = _varint(data, pos, end)
        length, pos = _varint(data, pos, end)
        high = low - gap - 2
        low = high - length
        if low < 0:
            raise FrameError("value", f"Ack range (gap {gap}, length {length}) goes below packet 0")
        ranges.append((low, high))
    return Ack(tuple(ranges), delay), pos


def _parse_reset_stream(data: bytes, pos: int, end: int, frame_type: int) -> tuple[Frame, int]:
    stream_id, pos = _varint(data, pos, end)
    code, pos = _varint(data, pos, end)
    final_size, pos = _varint(data, pos, end)
    return ResetStream(stream_id, code, final_size), pos


def _parse_stop_sending(data: bytes, pos: int, end: int, frame_type: int) -> tuple[Frame, int]:
    stream_id, pos = _varint(data, pos, end)
    code, pos = _varint(data, pos, end)
    return StopSending(stream_id, code), pos


def _parse_stream(data: bytes, pos: int, end: int, frame_type: int) -> tuple[Frame, int]:
    stream_id, pos = _varint(data, pos, end)
    offset = 0
    if frame_type & 0x04:
        offset, pos = _varint(data, pos, end)
    if frame_type & 0x02:
        length, pos = _varint(data, pos, end)
        if pos + length > end:
            raise FrameError("truncated", f"Stream frame claims {length} bytes, {end - pos} left")
    else:
        length = end - pos
    if offset + length > MAX_VARINT:
        raise FrameError("value", f"Stream data ends at {offset + length}, past 2^62 - 1")
    return Stream(stream_id, offset, data[pos : pos + length], bool(frame_type & 0x01)), pos + length


def _parse_max_data(data: bytes, pos: int, end: int, frame_type: int) -> tuple[Frame, int]:
    limit, pos = _varint(data, pos, end)
    return MaxData(limit), pos


def _parse_max_stream_data(data: bytes, pos: int, end: int, frame_type: int) -> tuple[Frame, int]:
    stream_id, pos = _varint(data, pos, end)
    limit, pos = _varint(data, pos, end)
    return MaxStreamData(stream_id, limit), pos


def _parse_max_streams(data: bytes, pos: int, end: int, frame_type: int) -> tuple[Frame, int]:
    limit, pos = _varint(data, pos, end)
    return MaxStreams(limit), pos


def _parse_close(data: bytes, pos: int, end: int, frame_type: int) -> tuple[Frame, int]:
    code, pos = _varint(data, pos, end)
    length, pos = _varint(data, pos, end)
    if length > MAX_CLOSE_REASON_BYTES:
        raise FrameError("value", f"Close reason of {length} bytes, more than {MAX_CLOSE_REASON_BYTES}")
    if pos + length > end:
        raise FrameError("truncated", f"Close reason claims {length} bytes, {end - pos} left")
    try:
        reason = data[pos : pos + length].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FrameError("value", f"Close reason is not UTF-8: {exc.reason}") from None
    return Close(code, reason), pos + length


def _parse_surbs(data: bytes, pos: int, end: int, frame_type: int) -> tuple[Frame, int]:
    count, pos = _varint(data, pos, end)
    if count > end - pos:  # each SURB takes at least its length byte: refuse before looping
        raise FrameError("truncated", f"Surbs claims {count} SURBs in {end - pos} bytes")
    surbs = []
    for _ in range(count):
        length, pos = _varint(data, pos, end)
        if pos + length > end:
            raise FrameError("truncated", f"SURB claims {length} bytes, {end - pos} left")
        surbs.append(data[pos : pos + length])
        pos += length
    return Surbs(tuple(surbs)), pos


def _parse_surb_request(data: bytes, pos: int, end: int, frame_type: int) -> tuple[Frame, int]:
    count, pos = _varint(data, pos, end)
    return SurbRequest(count), pos


def _parse_fec_report(data: bytes, pos: int, end: int, frame_type: int) -> tuple[Frame, int]:
    expected, pos = _varint(data, pos, end)
    received, pos = _varint(data, pos, end)
    if received > expected:
        raise FrameError("value", f"FEC report of {received} shards received out of {expected} expected")
    return FecReport(expected, received), pos


_PARSERS: Final[dict[int, _Parser]] = {
    0x00: _parse_padding,
    0x01: _parse_ping,
    0x02: _parse_ack,
    0x04: _parse_reset_stream,
    0x05: _parse_stop_sending,
    **{frame_type: _parse_stream for frame_type in range(0x08, 0x10)},
    0x10: _parse_max_data,
    0x11: _parse_max_stream_data,
    0x12: _parse_max_streams,
    0x1C: _parse_close,
    0x30: _parse_surbs,
    0x31: _parse_surb_request,
    0x32: _parse_fec_report,
}


def parse_frames(payload: bytes | bytearray | memoryview) -> list[Frame]:
    """Every frame of a packet payload, in order; FrameError for anything malformed, nothing else.

    A memoryview or bytearray is copied to bytes once (at most ~650 bytes, cheaper than a
    memoryview object per field), so Stream data and SURBs come out as independent bytes.
    """
    data = payload if type(payload) is bytes else bytes(payload)
    end = len(data)
    if not end:
        raise FrameError("value", "empty packet payload: a packet carries at least one frame")
    frames: list[Frame] = []
    pos = 0
    parsers = _PARSERS
    while pos < end:
        frame_type = data[pos]
        parser = parsers.get(frame_type)
        if parser is None:
            if frame_type >= 0x40:
                value, _ = _varint(data, pos, end)
                if value < 0x40 and value in parsers:
                    raise FrameError("varint", f"frame type {value:#x} at byte {pos} is not minimally encoded")
                raise FrameError("unknown_type", f"unknown frame type {value:#x} at byte {pos}")
            raise FrameError("unknown_type", f"unknown frame type {frame_type:#x} at byte {pos}")
        frame, pos = parser(data, pos + 1, end, frame_type)
        frames.append(frame)
    return frames
