"""`Session`: one end-to-end Nyx session, sans-I/O (records and a clock in; records, events and one
deadline out), shaped like aioquic's `QuicConnection`.

    session = Session(keys, now)                 # keys: the handshake's SessionKeys
    stream = session.open_stream()
    session.write(stream, b"GET / ...")          # -> bytes accepted (bounded buffer)
    while (record := session.next_record(now)) is not None:
        send(record)                             # one record per Sphinx message
    session.receive_record(record, now)          # from the peer
    for event in session.events(): ...           # StreamReadable, StreamOpened, SessionClosed, ...
    session.read(stream)                         # the stream's next contiguous bytes
    session.on_timer(now) when now >= session.deadline()

Each record's plaintext is a list of frames (`nyx.stream.frames`); its packet number is the
record's own 64-bit sequence number, so the record layer's anti-replay window also discards
duplicate packets. Loss is declared by `nyx.stream.recovery` from the delay distribution's tail
and the *frames* of a lost packet are resent (fresh ACKs and window updates, stream bytes not
acknowledged meanwhile), never the record. The shell decides when a record goes out (for example
in the client's cover slots): `next_record` returns None when there is nothing worth sending.

Errors: a record that fails to open is a counted drop (`drops[reason]`); an authenticated record
that breaks the protocol closes the session with the matching `CloseCode`.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from dataclasses import dataclass, field

from nyx.crypto.errors import RecordError
from nyx.crypto.session import HEADER, OVERHEAD, RekeyPolicy
from nyx.stream import frames as F
from nyx.stream.handshake.errors import CloseCode
from nyx.stream.handshake.keys import SessionKeys
from nyx.stream.recovery import AckTracker, DelayEstimator, LossRecovery, RecoveryError, SentPacket
from nyx.stream.streams import FlowControlError, RecvStream, SendStream
from nyx.stream.events import (
    DeliveryReport,
    Event,
    FecLossReported,
    SessionClosed,
    StreamOpened,
    StreamReadable,
    StreamReset,
    StreamStopped,
    StreamWritable,
    SurbsReceived,
    SurbsRequested,
)
from nyx.stream.surbs import SurbPolicy, SurbPool, SurbSupply

__all__ = [
    "CLOSE_RESENDS", "MAX_RECORD_BYTES", "SURB_RESERVE", "DeliveryReport", "Event", "FecLossReported", "Session", "SessionClosed",
    "SessionConfig", "SessionError", "StreamOpened", "StreamReadable", "StreamReset", "StreamStopped",
    "StreamWritable", "SurbsReceived", "SurbsRequested",
]

#: A Sphinx message carries 646 bytes; the shell's routing prefix (which session) takes 8.
MAX_RECORD_BYTES = 646 - 8
#: SURBs a responder keeps back from ACK-only records (for data or the request for more).
SURB_RESERVE = 1
#: How many times a closed session answers the peer's records with its CLOSE again.
CLOSE_RESENDS = 8


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """Limits and timers of one session (both ends may differ; each advertises its own)."""

    max_record_bytes: int = MAX_RECORD_BYTES
    stream_window_bytes: int = 64 * 1024  # receive window per stream (MAX_STREAM_DATA)
    session_window_bytes: int = 256 * 1024  # receive window over all streams (MAX_DATA)
    stream_buffer_bytes: int = 64 * 1024  # send buffer per stream: write() takes at most this unacked
    max_streams: int = 64  # streams the peer may have open at once (MAX_STREAMS)
    idle_timeout_s: float = 300.0
    max_ack_delay_s: float = 0.1
    max_in_flight: int = 256  # ack-eliciting packets outstanding
    rekey: RekeyPolicy = field(default_factory=RekeyPolicy)
    surbs: SurbPolicy | None = None  # replies travel on SURBs: the responder spends one per record
    report_deliveries: bool = False  # emit DeliveryReport events (the client's route scheduler)

    def __post_init__(self) -> None:
        if self.max_record_bytes < OVERHEAD + 64:
            raise ValueError(f"max_record_bytes={self.max_record_bytes} leaves no room for frames")


class SessionError(Exception):
    """A local misuse of the session API (a closed session, a stream that does not exist)."""


# What a sent packet must redo if it is lost (SentPacket.frames holds these small tuples).
_STREAM, _RESET, _STOP, _MAX_DATA, _MAX_STREAM_DATA, _MAX_STREAMS, _SURBS, _SURB_REQUEST, _FEC_REPORT = range(9)


class Session:
    """Both directions of one session's streams over sealed records."""

    # No per-instance __dict__ (~1.6 KB): an exit gateway holds 100,000 of these.
    __slots__ = (
        "config", "keys", "is_initiator", "_records", "_recovery", "_acks", "_send", "_recv",
        "_next_local_id", "_local_opened", "_peer_opened", "_peer_closed", "_peer_max_streams",
        "_max_streams_local", "_peer_max_data", "_sent_data", "_max_data_local", "_received_data",
        "_consumed", "_control", "_events", "_write_blocked", "_rotation", "_last_received", "_ping",
        "_close", "_close_sent", "_close_resend_due", "_close_resends_left", "closed", "drops",
        "records_sent", "records_received", "surb_pool", "_starved", "surb_supply", "_reply_watch",
    )

    def __init__(self, keys: SessionKeys, now: float, config: SessionConfig = SessionConfig()) -> None:
        self.config = config
        self.keys = keys
        self.is_initiator = keys.role == "initiator"
        self._records = keys.record_session(now, config.rekey)
        self._recovery = LossRecovery(max_ack_delay_s=config.max_ack_delay_s, max_in_flight=config.max_in_flight)
        self._acks = AckTracker(max_ack_delay_s=config.max_ack_delay_s)
        self._send: dict[int, SendStream] = {}
        self._recv: dict[int, RecvStream] = {}
        self._next_local_id = 0 if self.is_initiator else 1
        self._local_opened = 0  # streams we opened, ever
        self._peer_opened = 0  # streams the peer opened, ever
        self._peer_closed = 0  # of those, fully closed (each lets the peer open one more)
        self._peer_max_streams = config.max_streams  # until the peer's MAX_STREAMS says otherwise
        self._max_streams_local = config.max_streams  # what we allow the peer (advertised)
        self._peer_max_data = config.session_window_bytes
        self._sent_data = 0  # new stream bytes sent (counts against _peer_max_data)
        self._max_data_local = config.session_window_bytes  # advertised MAX_DATA
        self._received_data = 0  # sum of the peer's highest offsets
        self._consumed = 0  # bytes the application read, over all streams
        # Lists, not deques: a deque costs ~700 bytes even empty, and these stay short (the
        # control queue drains into each record, the rotation holds at most the open streams).
        self._control: list[tuple] = []  # pending (kind, ...) to send, in order
        self._events: list[Event] = []
        self._write_blocked: dict[int, None] = {}  # a set by its keys (an empty set costs 216 B, a dict 64)
        self._rotation: list[int] = []  # stream ids with data to send, round robin
        self._last_received = now
        self._ping = False
        self._close: tuple[int, str] | None = None  # our CLOSE, until sent
        # After our CLOSE went out, a record from the peer means it was lost: send it again, in
        # answer to an authenticated record only, at most CLOSE_RESENDS times (QUIC's closing state).
        self._close_sent: tuple[int, str] | None = None
        self._close_resend_due = False
        self._close_resends_left = CLOSE_RESENDS
        self.closed: SessionClosed | None = None
        self.drops: collections.Counter[str] = collections.Counter()
        self.records_sent = 0
        self.records_received = 0
        # Reply paths: the responder holds SURBs and spends one per record; the initiator supplies them.
        self.surb_pool: SurbPool | None = None
        self._starved = False
        self.surb_supply: SurbSupply | None = None
        self._reply_watch = False  # initiator on SURBs: the exit sent something since the last silence check
        if config.surbs is not None:
            if self.is_initiator:
                self.surb_supply = SurbSupply(config.surbs)
            else:
                self.surb_pool = SurbPool(config.surbs)

    # -- streams ----------------------------------------------------------------------------------

    def open_stream(self) -> int:
        """A new bidirectional stream's id; SessionError once the peer's MAX_STREAMS is used up."""
        self._check_open()
        if self._local_opened >= self._peer_max_streams:
            raise SessionError(f"the peer allows {self._peer_max_streams} streams; wait for it to raise the limit")
        stream_id = self._next_local_id
        self._next_local_id += 2
        self._local_opened += 1
        self._create(stream_id)
        return stream_id

    def _create(self, stream_id: int) -> None:
        self._send[stream_id] = SendStream(stream_id, self.config.stream_buffer_bytes, self.config.stream_window_bytes)
        self._recv[stream_id] = RecvStream(stream_id, self.config.stream_window_bytes)

    def write(self, stream_id: int, data: bytes) -> int:
        """Accept up to the stream's buffer room of `data`; the caller waits for StreamWritable
        to write the rest (accepted bytes are never dropped)."""
        self._check_open()
        taken = self._send_stream(stream_id).write(data)
        if taken < len(data):
            self._write_blocked[stream_id] = None
        if taken:
            self._schedule(stream_id)
        return taken

    def room(self, stream_id: int) -> int:
        return self._send_stream(stream_id).room()

    def finish(self, stream_id: int) -> None:
        """Half-close: no more writes on `stream_id`; the peer reads EOF after the last byte."""
        self._check_open()
        self._send_stream(stream_id).finish()
        self._schedule(stream_id)

    def reset_stream(self, stream_id: int, error_code: int) -> None:
        """Abandon our side of `stream_id` (RESET_STREAM) and ask the peer to stop its side."""
        self._check_open()
        send = self._send_stream(stream_id)
        if send.reset_code is None:
            self._control.append((_RESET, stream_id, error_code, send.reset(error_code)))
        recv = self._recv.get(stream_id)
        if recv is not None and recv.final_size is None:
            self._control.append((_STOP, stream_id, error_code))

    def read(self, stream_id: int, max_bytes: int = -1) -> bytes:
        """The stream's next contiguous bytes (b"" when none are ready, or at EOF: see `at_eof`)."""
        recv = self._recv.get(stream_id)
        if recv is None:
            raise SessionError(f"no stream {stream_id}")
        data = recv.read(max_bytes)
        if data:
            self._consumed += len(data)
            limit = recv.window_update()
            if limit is not None:
                self._control.append((_MAX_STREAM_DATA, stream_id))
            if self._max_data_local - self._consumed <= self.config.session_window_bytes // 2:
                self._max_data_local = self._consumed + self.config.session_window_bytes
                self._control.append((_MAX_DATA,))
        self._maybe_forget(stream_id)
        return data

    def streams(self) -> list[int]:
        """The ids of the streams still open in either direction."""
        return list(self._recv)

    def has_stream(self, stream_id: int) -> bool:
        """Whether `stream_id` is still open in either direction (forgotten once both finish)."""
        return stream_id in self._send or stream_id in self._recv

    def can_finish(self, stream_id: int) -> bool:
        """Whether `finish(stream_id)` would queue a FIN (open, not finished, not reset)."""
        send = self._send.get(stream_id)
        return self.closed is None and self._close is None and send is not None and send.final_size is None and send.reset_code is None

    @property
    def rtt(self) -> DelayEstimator:
        """The session's delay estimator (send to ACK of its records): read-only use, telemetry."""
        return self._recovery.estimator

    @property
    def settled(self) -> bool:
        """Nothing we accepted is still owed to the peer: every stream byte written was
        acknowledged (send buffers empty) and no ack-eliciting record is in flight. A draining
        gateway waits for this on every session before it stops."""
        return self._recovery.in_flight == 0 and all(s.buffered == 0 for s in self._send.values())

    @property
    def loss_timeout_s(self) -> float:
        """How long an unacknowledged packet waits before it is declared lost, now."""
        return self._recovery.loss_timeout_s()

    def at_eof(self, stream_id: int) -> bool:
        recv = self._recv.get(stream_id)
        return recv is None or recv.at_eof or recv.reset_code is not None

    def _send_stream(self, stream_id: int) -> SendStream:
        send = self._send.get(stream_id)
        if send is None:
            raise SessionError(f"no stream {stream_id}")
        return send

    def _schedule(self, stream_id: int) -> None:
        if stream_id not in self._rotation:
            self._rotation.append(stream_id)

    def _maybe_forget(self, stream_id: int) -> None:
        """Drop a stream both of whose halves are finished, freeing its ids for MAX_STREAMS."""
        send, recv = self._send.get(stream_id), self._recv.get(stream_id)
        if send is None or recv is None or not send.done:
            return
        if not (recv.at_eof or recv.reset_code is not None):
            return
        del self._send[stream_id], self._recv[stream_id]
        self._write_blocked.pop(stream_id, None)
        if self._is_peer_stream(stream_id):
            self._peer_closed += 1
            if self._peer_closed + self.config.max_streams - self._max_streams_local >= self.config.max_streams // 2:
                self._max_streams_local = self._peer_closed + self.config.max_streams
                self._control.append((_MAX_STREAMS,))

    def _is_peer_stream(self, stream_id: int) -> bool:
        return (stream_id % 2 == 0) != self.is_initiator

    # -- the session ------------------------------------------------------------------------------

    def close(self, error_code: int = CloseCode.NO_ERROR, reason: str = "") -> None:
        """Send CLOSE with the next record and stop; the peer sees SessionClosed(by_peer=True)."""
        if self.closed is None and self._close is None:
            self._close = (int(error_code), reason)

    def abandon(self, error_code: int, reason: str) -> None:
        """End the session here without telling the peer (its side never opened, or cannot be
        reached): SessionClosed(by_peer=False) now, as an idle timeout ends it."""
        if self.closed is None:
            self._finish_close(SessionClosed(int(error_code), reason, False))

    def _fail(self, code: CloseCode, reason: str) -> None:
        self.drops[code.name.lower()] += 1
        self.close(code, reason)

    def _check_open(self) -> None:
        if self.closed is not None or self._close is not None:
            raise SessionError("the session is closed")

    def events(self) -> list[Event]:
        """Everything that happened since the last call, in order."""
        out, self._events = self._events, []
        return out

    def repeat_close(self) -> None:
        """Send our CLOSE once more (counted against CLOSE_RESENDS): a shell lingering after a
        close calls it now and then, since a peer with nothing to send would never prompt it and
        would wait for its idle timeout if the first copy was lost."""
        if self.lingering:
            self._close_resend_due = True

    @property
    def lingering(self) -> bool:
        """Closed by us, and still able to answer a peer that missed our CLOSE."""
        return self.closed is not None and self._close_sent is not None and self._close_resends_left > 0

    def deadline(self) -> float | None:
        """When `on_timer` must run next (None once closed)."""
        if self.closed is not None:
            return None
        times = [self._last_received + self.config.idle_timeout_s]
        recovery, acks = self._recovery.deadline(), self._acks.deadline()
        if recovery is not None:
            times.append(recovery)
        if acks is not None and self._acks_may_spend_a_surb():
            times.append(acks)  # an ACK that cannot go (no SURB) must not keep a shell's timer in the past
        silence = self._reply_silence_at()
        if silence is not None:
            times.append(silence)
        return min(times)

    def _reply_silence_at(self) -> float | None:
        """Initiator on SURBs: when the exit's silence becomes suspect. It sent something that
        asks for an ACK (stream data, say) and a stream still waits for bytes, yet nothing came
        for two loss timeouts. Its last replies may have been lost on the way back (a burst no
        count sees), leaving it without a SURB, unable to answer or ask. Once per such silence
        the client sends it a few (`SurbSupply.on_silence`); an exit that only had nothing to say
        spends one of them on an ACK."""
        if not self._reply_watch or self.surb_supply is None:
            return None
        if all(recv.at_eof or recv.reset_code is not None for recv in self._recv.values()):
            return None
        return self._last_received + 2 * self._recovery.loss_timeout_s()

    def _acks_may_spend_a_surb(self) -> bool:
        """Whether an ACK-only record may go now: always, except for a responder on SURBs with at
        most one left (kept for a reply that carries data or the request for more)."""
        pool = self.surb_pool
        return pool is None or len(pool) > SURB_RESERVE

    def on_timer(self, now: float) -> None:
        if self.closed is not None:
            return
        if now >= self._last_received + self.config.idle_timeout_s:
            self._finish_close(SessionClosed(CloseCode.IDLE_TIMEOUT, "nothing received for the idle timeout", False))
            return
        lost = self._recovery.on_timeout(now)
        for packet in lost:
            self._on_lost(packet)
        if lost and self.config.report_deliveries:
            self._events.append(DeliveryReport((), tuple(p.pn for p in lost)))
        if self._recovery.probe_due(now):
            self._ping = True
            if self.surb_supply is not None:
                self.surb_supply.on_probe()  # the PING carries fresh SURBs if the exit may be dry
        silence = self._reply_silence_at()
        if silence is not None and now >= silence:
            self._reply_watch = False
            self.surb_supply.on_silence()  # type: ignore[union-attr]

    # -- receiving --------------------------------------------------------------------------------

    def receive_record(self, record: bytes, now: float) -> None:
        """One record from the peer. Bad records are counted drops; protocol errors close."""
        if self.closed is not None:
            self.drops["closed"] += 1
            if self._close_sent is not None and self._close_resends_left > 0:
                try:  # the peer still sends: our CLOSE was lost; answer with it again (bounded)
                    self._records.open(record, now)
                    self._close_resend_due = True
                except RecordError:
                    pass
            return
        try:
            plaintext = self._records.open(record, now)
        except RecordError as error:
            self.drops[error.reason] += 1
            return
        try:
            frames = F.parse_frames(plaintext)
        except F.FrameError as error:
            self._fail(CloseCode.PROTOCOL_VIOLATION, f"malformed frames from the peer ({error.reason})")
            return
        self.records_received += 1
        self._last_received = now
        pn = HEADER.unpack_from(record)[1]
        eliciting = any(F.is_ack_eliciting(frame) for frame in frames)
        if self.surb_supply is not None:
            self.surb_supply.on_reply(pn)  # the responder spent a SURB on it, and on every record before it
            self._reply_watch = self._reply_watch or eliciting
        self._acks.on_packet(pn, now, eliciting)
        for frame in frames:
            try:
                self._on_frame(frame, now)
            except FlowControlError as error:
                code = CloseCode.FINAL_SIZE if error.reason == "final_size" else CloseCode.FLOW_CONTROL
                self._fail(code, str(error))
            except RecoveryError as error:
                self._fail(CloseCode.PROTOCOL_VIOLATION, str(error))
            if self._close is not None or self.closed is not None:
                return

    def _on_frame(self, frame: F.Frame, now: float) -> None:
        if isinstance(frame, F.Stream):
            recv = self._peer_stream(frame.stream_id)
            if recv is None:
                return
            self._charge(recv.on_data(frame.offset, frame.data, frame.fin))
            if recv.readable() or recv.at_eof:
                self._events.append(StreamReadable(frame.stream_id))
        elif isinstance(frame, F.Ack):
            result = self._recovery.on_ack(frame.ranges, frame.ack_delay_us / 1e6, now)
            for packet in result.acked:
                self._on_acked(packet)
            for packet in result.lost:
                self._on_lost(packet)
            if self.config.report_deliveries and (result.acked or result.lost or result.late):
                self._events.append(DeliveryReport(
                    tuple((p.pn, now - p.sent_at) for p in (*result.acked, *result.late)),
                    tuple(p.pn for p in result.lost),
                ))
        elif isinstance(frame, (F.Padding, F.Ping)):
            pass
        elif isinstance(frame, F.MaxData):
            self._peer_max_data = max(self._peer_max_data, frame.limit)
            self._rotation.extend(i for i, s in self._send.items() if s.wants_to_send() and i not in self._rotation)
        elif isinstance(frame, F.MaxStreamData):
            send = self._send.get(frame.stream_id)
            if send is not None and frame.limit > send.peer_limit:
                send.peer_limit = frame.limit
                self._schedule(frame.stream_id)
        elif isinstance(frame, F.MaxStreams):
            self._peer_max_streams = max(self._peer_max_streams, frame.limit)
        elif isinstance(frame, F.ResetStream):
            recv = self._peer_stream(frame.stream_id)
            if recv is not None and recv.reset_code is None:
                self._charge(recv.on_reset(frame.error_code, frame.final_size))
                self._events.append(StreamReset(frame.stream_id, frame.error_code))
                self._maybe_forget(frame.stream_id)
        elif isinstance(frame, F.StopSending):
            send = self._send.get(frame.stream_id)
            if send is not None and send.reset_code is None:
                self._control.append((_RESET, frame.stream_id, frame.error_code, send.reset(frame.error_code)))
                self._events.append(StreamStopped(frame.stream_id, frame.error_code))
        elif isinstance(frame, F.Surbs):
            if self.surb_pool is not None:
                self.surb_pool.add(frame.surbs)
            self._events.append(SurbsReceived(frame.surbs))
        elif isinstance(frame, F.SurbRequest):
            if self.surb_supply is not None:
                self.surb_supply.on_request(frame.count)
            self._events.append(SurbsRequested(frame.count))
        elif isinstance(frame, F.FecReport):
            self._events.append(FecLossReported(frame.shards_expected, frame.shards_received))
        elif isinstance(frame, F.Close):
            self._finish_close(SessionClosed(frame.error_code, frame.reason, True))

    def _peer_stream(self, stream_id: int) -> RecvStream | None:
        """The receive half for a frame from the peer, opening a peer-initiated stream on first
        sight; None for a stream already finished and forgotten (late frames are harmless)."""
        recv = self._recv.get(stream_id)
        if recv is not None:
            return recv
        if not self._is_peer_stream(stream_id):
            if stream_id < self._next_local_id:
                return None  # ours, finished and forgotten
            raise FlowControlError("flow_control", f"the peer sent on stream {stream_id}, which we never opened")
        expected = 2 * self._peer_opened + (1 if self.is_initiator else 0)
        if stream_id < expected:
            return None  # the peer's, finished and forgotten
        count = (stream_id - expected) // 2 + 1
        if self._peer_opened + count > self._max_streams_local:
            self._fail(CloseCode.STREAM_LIMIT, f"the peer opened stream {stream_id} beyond MAX_STREAMS {self._max_streams_local}")
            return None
        for index in range(count):  # opening stream n implicitly opens the lower ones, as in QUIC
            new_id = expected + 2 * index
            self._create(new_id)
            self._events.append(StreamOpened(new_id))
        self._peer_opened += count
        return self._recv[stream_id]

    def _charge(self, new_bytes: int) -> None:
        self._received_data += new_bytes
        if self._received_data > self._max_data_local:
            raise FlowControlError("flow_control", f"the peer sent {self._received_data} bytes, MAX_DATA is {self._max_data_local}")

    def _on_acked(self, packet: SentPacket) -> None:
        for item in packet.frames:
            if item[0] == _STREAM:  # type: ignore[index]
                _, stream_id, offset, length, fin = item  # type: ignore[misc]
                send = self._send.get(stream_id)
                if send is None:
                    continue
                send.on_acked(offset, length, fin)
                if stream_id in self._write_blocked and send.room() > 0:
                    del self._write_blocked[stream_id]
                    self._events.append(StreamWritable(stream_id))
                self._maybe_forget(stream_id)

    def _on_lost(self, packet: SentPacket) -> None:
        for item in packet.frames:
            kind = item[0]  # type: ignore[index]
            if kind == _STREAM:
                _, stream_id, offset, length, fin = item  # type: ignore[misc]
                send = self._send.get(stream_id)
                if send is not None:
                    send.on_lost(offset, length, fin)
                    self._schedule(stream_id)
            elif kind == _FEC_REPORT:
                pass  # superseded by the next report
            elif kind == _SURBS:  # never resent (single-use); the supply counts it as gone
                if self.surb_supply is not None:
                    self.surb_supply.on_lost(1)
            else:  # control frames are resent with their current value
                self._control.append(item)  # type: ignore[arg-type]

    def _finish_close(self, event: SessionClosed) -> None:
        self.closed = event
        self._events.append(event)

    # -- reply paths -------------------------------------------------------------------------------

    def surbs_wanted(self) -> int:
        """Initiator: SURBs to create and hand to `send_surbs` now (0 if none, or no SURB mode).
        The client tops the exit up by its own count only while a stream is open: a session with
        none expects nothing from the exit but ACKs, which its initial supply covers."""
        if self.surb_supply is None or self.closed is not None:
            return 0
        return self.surb_supply.wanted(streams_open=bool(self._recv))

    def send_surbs(self, surbs: Iterable[bytes]) -> None:
        """Initiator: send these SURBs ahead (one per record, in the next records out). A lost
        one is not resent: it may have arrived and been used, and a SURB is single-use."""
        blobs = list(surbs)
        for blob in blobs:
            self._control.append((_SURBS, blob))
        if self.surb_supply is not None:
            self.surb_supply.on_sent(len(blobs))

    def resend_now(self, pns: Iterable[int], now: float) -> int:
        """Resend at once what these in-flight records carried (their route failed), instead of
        waiting for their loss timeout. Returns how many records were given up."""
        given = self._recovery.give_up(list(pns), now)
        for packet in given:
            self._on_lost(packet)
        return len(given)

    def report_fec(self, shards_expected: int, shards_received: int) -> None:
        """Tell the peer its FEC shards' raw loss (from `BlockReceiver.take_report`)."""
        if self.closed is None and self._close is None:
            self._control.append((_FEC_REPORT, shards_expected, shards_received))

    def next_reply(self, now: float) -> tuple[bytes, bytes] | None:
        """Responder in SURB mode: (SURB, record) to send on it, or None: nothing to send, or no
        SURB left (the reply waits; a request went out while SURBs remained)."""
        pool = self.surb_pool
        if pool is None:
            raise SessionError("this session does not send on SURBs; use next_record")
        if not len(pool):
            waiting = self.closed is None and (self._has_eliciting() or self._close is not None)
            if waiting and not self._starved:
                self.drops["surb_starved"] += 1  # once per episode of replies waiting for SURBs
            self._starved = waiting
            return None
        self._starved = False
        if self._recv or self._has_eliciting():  # a session with no stream and nothing to say does not ask
            count = pool.request(now)
            if count:
                self._control.insert(0, (_SURB_REQUEST, count))
        if not self._acks_may_spend_a_surb() and not self._has_eliciting() and self._close is None and not self._close_resend_due:
            return None  # only an ACK is due: it waits for a record with data, or for more SURBs
        record = self._next_record(now)
        if record is None:
            return None
        surb = pool.take()
        assert surb is not None
        return surb, record

    # -- sending ----------------------------------------------------------------------------------

    def next_record(self, now: float) -> bytes | None:
        """The next sealed record to send, or None when nothing needs sending now."""
        if self.surb_pool is not None:
            raise SessionError("this side answers on SURBs: use next_reply, which pairs each record with one")
        return self._next_record(now)

    def _next_record(self, now: float) -> bytes | None:
        if self.closed is not None:
            if not self._close_resend_due or self._close_sent is None:
                return None
            self._close_resend_due = False
            self._close_resends_left -= 1
            return self._seal([F.Close(*self._close_sent)], (), now, track=False)
        room = self.config.max_record_bytes - OVERHEAD
        if self._close is not None:
            code, reason = self._close
            frames: list[F.Frame] = [F.Close(code, reason)]
            record = self._seal(frames, (), now)
            self._close_sent = (code, reason)
            self._finish_close(SessionClosed(code, reason, False))
            return record
        frames = []
        redo: list[tuple] = []
        ack_due = self._acks.ack_due(now)
        sendable = self._has_eliciting()
        if not (ack_due or sendable):
            return None
        if self._acks.largest is not None:
            ranges, delay_s = self._acks.build(now)
            if ranges:
                ack = F.Ack(tuple(ranges), int(delay_s * 1e6))
                frames.append(ack)
                room -= F.frame_size(ack)
        self._fill(frames, redo, room)
        if sendable and len(frames) == 1 and isinstance(frames[0], F.Ack):
            # Something waits but did not fit beside the ACK (a SURB beside many ranges): send it
            # alone and let the ACK ride the next record, or the same ACK would go out for ever.
            frames = []
            self._fill(frames, redo, self.config.max_record_bytes - OVERHEAD)
        if not frames:
            return None
        return self._seal(frames, tuple(redo), now)

    def _fill(self, frames: list[F.Frame], redo: list[tuple], room: int) -> None:
        """Control frames, a probe's PING, then stream data, as far as `room` allows."""
        room = self._add_control(frames, redo, room)
        if self._ping:
            frames.append(F.Ping())
            room -= 1
            self._ping = False
        if self._recovery.can_send():
            self._add_stream_frames(frames, redo, room)

    def _has_eliciting(self) -> bool:
        if self._control or self._ping:
            return True
        if not self._recovery.can_send():
            return False
        credit = self._peer_max_data - self._sent_data
        for stream_id in self._rotation:
            send = self._send.get(stream_id)
            if send is not None and send.wants_to_send() and (credit > 0 or send.needs_no_credit()):
                return True
        return False

    def _add_control(self, frames: list[F.Frame], redo: list[tuple], room: int) -> int:
        control = self._control
        taken = 0  # items at the front of the queue that are sent now, or moot
        for item in control:
            frame = self._control_frame(item)
            if frame is not None:
                size = F.frame_size(frame)
                if size > room:
                    break
                frames.append(frame)
                redo.append(item)
                room -= size
            taken += 1
        if taken:
            del control[:taken]
        return room

    def _control_frame(self, item: tuple) -> F.Frame | None:
        """The frame for a pending control item at its current value (None if it is moot now)."""
        kind = item[0]
        if kind == _MAX_DATA:
            return F.MaxData(self._max_data_local)
        if kind == _MAX_STREAMS:
            return F.MaxStreams(self._max_streams_local)
        if kind == _MAX_STREAM_DATA:
            recv = self._recv.get(item[1])
            return None if recv is None or recv.final_size is not None else F.MaxStreamData(item[1], recv.limit)
        if kind == _RESET:
            return F.ResetStream(item[1], item[2], item[3])
        if kind == _STOP:
            recv = self._recv.get(item[1])
            return None if recv is None or recv.final_size is not None else F.StopSending(item[1], item[2])
        if kind == _SURBS:
            return F.Surbs((item[1],))
        if kind == _SURB_REQUEST:
            return F.SurbRequest(item[1])
        if kind == _FEC_REPORT:
            return F.FecReport(item[1], item[2])
        return None

    def _add_stream_frames(self, frames: list[F.Frame], redo: list[tuple], room: int) -> None:
        rotation = self._rotation
        for _ in range(len(rotation)):
            if room <= 8:
                break
            stream_id = rotation.pop(0)
            send = self._send.get(stream_id)
            if send is None or not send.wants_to_send():
                continue
            overhead = F.stream_frame_overhead(stream_id, send.next_offset(), room)
            chunk = send.next_chunk(room - overhead, self._peer_max_data - self._sent_data)
            if chunk is None:
                continue
            self._sent_data += chunk.new_bytes
            frame = F.Stream(stream_id, chunk.offset, chunk.data, chunk.fin)
            frames.append(frame)
            redo.append((_STREAM, stream_id, chunk.offset, len(chunk.data), chunk.fin))
            room -= F.frame_size(frame)
            if send.wants_to_send():
                rotation.append(stream_id)

    def _seal(self, frames: Iterable[F.Frame], redo: tuple, now: float, track: bool = True) -> bytes:
        frame_list = list(frames)
        record = self._records.seal(F.encode_frames(frame_list), now)
        if track:
            pn = HEADER.unpack_from(record)[1]
            eliciting = any(F.is_ack_eliciting(frame) for frame in frame_list)
            self._recovery.on_packet_sent(SentPacket(pn, now, len(record), eliciting, redo))
        self.records_sent += 1
        return record

