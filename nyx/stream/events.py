"""What a `Session` tells its shell: small frozen dataclasses, returned in order by
`Session.events()` (the shape of aioquic's events)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StreamOpened:
    """The peer opened `stream_id`."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class StreamReadable:
    """`stream_id` has new bytes to read, or reached its end (`read` returns b"" at EOF)."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class StreamWritable:
    """`stream_id`'s send buffer has room again after a write was cut short."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class StreamReset:
    """The peer abandoned its side of `stream_id` (RESET_STREAM)."""

    stream_id: int
    error_code: int


@dataclass(frozen=True, slots=True)
class StreamStopped:
    """The peer asked us to stop sending on `stream_id` (STOP_SENDING); our side was reset."""

    stream_id: int
    error_code: int


@dataclass(frozen=True, slots=True)
class SurbsReceived:
    """The peer sent reply blocks (the exit's pool takes them)."""

    surbs: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class SurbsRequested:
    """The peer asks for about `count` more reply blocks."""

    count: int


@dataclass(frozen=True, slots=True)
class FecLossReported:
    """The peer got `shards_received` of `shards_expected` FEC shards of our blocks (raw loss,
    before FEC): the shell feeds it to its `BlockSender`."""

    shards_expected: int
    shards_received: int


@dataclass(frozen=True, slots=True)
class SessionClosed:
    """The session ended: by the peer's CLOSE, ours, a protocol error, or the idle timeout."""

    error_code: int
    reason: str
    by_peer: bool


Event = (
    StreamOpened | StreamReadable | StreamWritable | StreamReset | StreamStopped | SurbsReceived | SurbsRequested
    | FecLossReported | SessionClosed
)


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    """Which of our records the peer acknowledged (pn, time to acknowledgement in seconds; late
    ACKs for records declared lost included: their route delivers, only slowly) and which were
    declared lost, since the last report. Emitted only with
    `SessionConfig.report_deliveries`: the client's multipath scheduler weighs and suspects its
    routes by it (nyx.stream.routes)."""

    acked: tuple[tuple[int, float], ...]
    lost: tuple[int, ...]
