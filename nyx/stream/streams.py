"""One stream's two halves, sans-I/O: a bounded send buffer and a reassembling receive buffer,
each with its flow-control window.

Send side (`SendStream`): the application's bytes are accepted only up to `buffer_bytes` beyond
what the peer has acknowledged, so memory is bounded and `room()` tells the shell when `write()`
may go on (backpressure: accepted data is never dropped). Bytes leave as STREAM frame chunks
within the peer's MAX_STREAM_DATA limit; a chunk declared lost goes back on a retransmission list
(frames are retransmitted, not records), minus whatever was acknowledged meanwhile. A byte is
freed once every byte before it is acknowledged.

Receive side (`RecvStream`): chunks arrive in any order (mix paths reorder nearly everything);
they are kept until the gap before them fills, within the window the receiver advertised, and
the application reads the contiguous prefix. The advertised limit moves forward as the
application reads, so a reader that stops reading stops its sender: the window is the only
memory a peer can make us spend on a stream.
"""

from __future__ import annotations

from dataclasses import dataclass

from nyx.stream.ranges import RangeSet


class StreamStateError(Exception):
    """A local misuse: writing after finish or reset, reading a stream that does not exist."""


class FlowControlError(ValueError):
    """The peer sent beyond a limit we advertised, or changed a stream's final size."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason  # "flow_control" or "final_size"


@dataclass(frozen=True, slots=True)
class Chunk:
    """A piece of a stream to send: bytes [offset, offset + len(data)), and the FIN with it."""

    offset: int
    data: bytes
    fin: bool
    new_bytes: int = 0  # bytes sent for the first time (they count against the session's MAX_DATA)


class SendStream:
    """What the application wrote and the peer has not acknowledged yet."""

    __slots__ = (
        "stream_id", "buffer_bytes", "peer_limit", "_buffer", "_base", "_write_offset", "_sent_offset",
        "_retransmit", "_acked", "_fin_queued", "_fin_sent", "_fin_acked", "reset_code", "_fin_lost",
    )

    def __init__(self, stream_id: int, buffer_bytes: int, peer_limit: int) -> None:
        self.stream_id = stream_id
        self.buffer_bytes = buffer_bytes
        self.peer_limit = peer_limit  # the peer's MAX_STREAM_DATA
        self._buffer = bytearray()  # bytes [_base, _write_offset)
        self._base = 0
        self._write_offset = 0
        self._sent_offset = 0  # next byte never sent
        self._retransmit = RangeSet()  # sent, declared lost, not acknowledged since
        self._acked = RangeSet()  # acknowledged, above _base
        self._fin_queued = False
        self._fin_sent = False
        self._fin_lost = False
        self._fin_acked = False
        self.reset_code: int | None = None

    # -- the application's side ---------------------------------------------------------------

    def room(self) -> int:
        """Bytes `write` accepts now."""
        if self._fin_queued or self.reset_code is not None:
            return 0
        return max(0, self.buffer_bytes - len(self._buffer))

    def write(self, data: bytes) -> int:
        """Accept up to `room()` bytes of `data`; returns how many (the caller keeps the rest)."""
        if self._fin_queued:
            raise StreamStateError(f"stream {self.stream_id} was finished; no more writes")
        if self.reset_code is not None:
            raise StreamStateError(f"stream {self.stream_id} was reset (code {self.reset_code})")
        taken = data[: self.room()]
        self._buffer += taken
        self._write_offset += len(taken)
        return len(taken)

    def finish(self) -> None:
        """Queue the FIN after everything written so far (half-close)."""
        if self.reset_code is not None:
            raise StreamStateError(f"stream {self.stream_id} was reset (code {self.reset_code})")
        self._fin_queued = True

    def reset(self, code: int) -> int:
        """Abandon the stream; returns the final size the RESET_STREAM frame carries."""
        if self.reset_code is None:
            self.reset_code = code
            self._retransmit = RangeSet()
            self._buffer = bytearray()
            self._base = self._write_offset
        return self._write_offset

    @property
    def final_size(self) -> int | None:
        return self._write_offset if self._fin_queued else None

    @property
    def buffered(self) -> int:
        """Bytes held: written and not yet acknowledged (what a slow peer costs us)."""
        return len(self._buffer)

    @property
    def done(self) -> bool:
        """Everything, FIN included, was acknowledged (or the stream was reset)."""
        return self.reset_code is not None or (self._fin_acked and self._base == self._write_offset)

    # -- the session's side ---------------------------------------------------------------------

    def wants_to_send(self) -> bool:
        if self.reset_code is not None:
            return False
        if self._retransmit:
            return True
        if self._sent_offset < min(self._write_offset, self.peer_limit):
            return True
        return self._fin_pending()

    def blocked_by_peer(self) -> bool:
        """Data waits only for the peer's MAX_STREAM_DATA (worth a blocked signal in the figures)."""
        return self._sent_offset < self._write_offset and self._sent_offset >= self.peer_limit

    def _fin_pending(self) -> bool:
        return (
            self._fin_queued
            and (not self._fin_sent or self._fin_lost)
            and self._sent_offset == self._write_offset
            and not self._fin_acked
        )

    def next_chunk(self, max_bytes: int, session_credit: int) -> Chunk | None:
        """The next piece to send: lost bytes first, then new bytes within both windows.

        `session_credit`: new bytes the session's MAX_DATA still allows (retransmissions do not
        count against it: they were counted when first sent). Returns None when nothing fits.
        """
        if self.reset_code is not None:
            return None
        if self._retransmit and max_bytes > 0:
            start, end = self._retransmit.pop_first(max_bytes)  # type: ignore[misc]
            data = bytes(self._buffer[start - self._base : end - self._base])
            fin = self._fin_sent and end == self._write_offset and self._fin_queued
            if fin:
                self._fin_lost = False  # the FIN rides with the resent bytes
            return Chunk(start, data, fin)
        limit = min(self._write_offset, self.peer_limit, self._sent_offset + max(0, session_credit))
        end = min(limit, self._sent_offset + max_bytes)
        if end > self._sent_offset or self._fin_pending():
            start = self._sent_offset
            data = bytes(self._buffer[start - self._base : end - self._base])
            self._sent_offset = end
            fin = self._fin_queued and end == self._write_offset
            if fin:
                self._fin_sent = True
                self._fin_lost = False
            return Chunk(start, data, fin, new_bytes=end - start)
        return None

    def needs_no_credit(self) -> bool:
        """Whether what waits is resent bytes or a bare FIN (no MAX_DATA credit needed)."""
        return self.reset_code is None and (bool(self._retransmit) or self._fin_pending())

    def next_offset(self) -> int:
        """The offset the next chunk starts at (to size its frame header)."""
        first = self._retransmit.first()
        return first[0] if first is not None else self._sent_offset

    def on_acked(self, offset: int, length: int, fin: bool) -> None:
        """The peer has bytes [offset, offset + length) (and the FIN, if it came with them)."""
        if self.reset_code is not None:
            return
        self._acked.add(offset, offset + length)
        self._retransmit.subtract(offset, offset + length)
        if fin:
            self._fin_acked = True
        new_base = self._acked.prefix_end(self._base)
        if new_base > self._base:
            del self._buffer[: new_base - self._base]
            self._base = new_base
            self._acked.drop_below(new_base)

    def on_lost(self, offset: int, length: int, fin: bool) -> None:
        """A packet carrying [offset, offset + length) was declared lost: resend what is not acked."""
        if self.reset_code is not None:
            return
        for start, end in self._acked.missing(max(offset, self._base), offset + length):
            self._retransmit.add(start, end)
        if fin and not self._fin_acked:
            self._fin_lost = True  # resent with the last bytes, or alone through _fin_pending


class RecvStream:
    """Chunks in any order in, the contiguous prefix out; the window bounds what we hold."""

    __slots__ = (
        "stream_id", "window_bytes", "limit", "_chunks", "_received", "_read_offset", "_highest",
        "final_size", "reset_code", "_last_advertised",
    )

    def __init__(self, stream_id: int, window_bytes: int) -> None:
        self.stream_id = stream_id
        self.window_bytes = window_bytes
        self.limit = window_bytes  # the MAX_STREAM_DATA we advertised
        self._last_advertised = window_bytes
        self._chunks: dict[int, bytes] = {}  # offset -> data, not yet contiguous with the read point
        self._received = RangeSet()
        self._read_offset = 0
        self._highest = 0  # highest offset + length seen: what counts against session flow control
        self.final_size: int | None = None
        self.reset_code: int | None = None

    def on_data(self, offset: int, data: bytes, fin: bool) -> int:
        """Take a STREAM frame's chunk; returns how many new bytes it added to the highest offset
        (the session charges them to its MAX_DATA). FlowControlError if the peer broke a limit."""
        end = offset + len(data)
        if end > self.limit:
            raise FlowControlError(
                "flow_control", f"stream {self.stream_id}: data up to {end} beyond the advertised {self.limit}"
            )
        if self.final_size is not None and (end > self.final_size or (fin and end != self.final_size)):
            raise FlowControlError("final_size", f"stream {self.stream_id}: final size changed from {self.final_size}")
        if fin:
            if end < self._highest:
                raise FlowControlError("final_size", f"stream {self.stream_id}: FIN at {end} below data at {self._highest}")
            self.final_size = end
        grown = max(0, end - self._highest)
        self._highest = max(self._highest, end)
        if self.reset_code is not None:
            return grown
        start = max(offset, self._read_offset)
        for gap_start, gap_end in list(self._received.missing(start, end)):
            self._chunks[gap_start] = data[gap_start - offset : gap_end - offset]
            self._received.add(gap_start, gap_end)
        return grown

    def on_reset(self, code: int, final_size: int) -> int:
        """The peer abandoned the stream; returns the growth in highest offset (for MAX_DATA)."""
        if final_size < self._highest or (self.final_size is not None and final_size != self.final_size):
            raise FlowControlError("final_size", f"stream {self.stream_id}: reset with final size {final_size}")
        if final_size > self.limit:
            raise FlowControlError("flow_control", f"stream {self.stream_id}: reset final size beyond the limit")
        grown = final_size - self._highest
        self._highest = final_size
        self.final_size = final_size
        self.reset_code = code
        self._chunks.clear()
        return grown

    def readable(self) -> int:
        """Contiguous bytes ready for the application."""
        return self._received.prefix_end(self._read_offset) - self._read_offset if self.reset_code is None else 0

    def read(self, max_bytes: int = -1) -> bytes:
        """The next contiguous bytes (at most `max_bytes`; all of them with -1)."""
        if self.reset_code is not None:
            return b""
        ready_end = self._received.prefix_end(self._read_offset)
        if max_bytes >= 0:
            ready_end = min(ready_end, self._read_offset + max_bytes)
        out = bytearray()
        while self._read_offset < ready_end:
            chunk = self._chunks.pop(self._read_offset)
            take = ready_end - self._read_offset
            if len(chunk) > take:
                self._chunks[self._read_offset + take] = chunk[take:]
                chunk = chunk[:take]
            out += chunk
            self._read_offset += len(chunk)
        self._received.drop_below(self._read_offset)
        return bytes(out)

    @property
    def at_eof(self) -> bool:
        """Every byte up to the FIN was read."""
        return self.final_size is not None and self._read_offset >= self.final_size and self.reset_code is None

    @property
    def consumed(self) -> int:
        return self._read_offset

    @property
    def held_bytes(self) -> int:
        """Bytes held for the application: the memory this stream costs us now."""
        return sum(len(c) for c in self._chunks.values())

    def window_update(self) -> int | None:
        """A new MAX_STREAM_DATA to advertise once the reader freed half the window, else None."""
        if self.final_size is not None or self.reset_code is not None:
            return None
        target = self._read_offset + self.window_bytes
        if target - self.limit >= self.window_bytes // 2:
            self.limit = target
            return target
        return None
