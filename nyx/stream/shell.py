"""The asyncio shell around one `Session`: asyncio-streams semantics on top of the sans-I/O core.

    shell = SessionShell(session, send=lambda record: ...)   # how records leave (a route, a SURB)
    async with asyncio.TaskGroup() as tg:
        tg.create_task(shell.run())
        reader, writer = await shell.open_connection()
        writer.write(b"GET / HTTP/1.0\\r\\n\\r\\n")
        await writer.drain()                                  # waits while the peer's window is shut
        reply = await reader.read(65536)
        writer.close(); await writer.wait_closed()
        await shell.close()

The shell owns one task (`run`) and one timer (the session's deadline); records that arrive are
fed with `receive_record`. Reads come straight from the session when the application asks, so a
reader that stops reading stops the peer (the session's window only moves on `read`); writes
queue in the writer and `drain()` waits until the session has taken them, so a writer that
awaits `drain()` is held back by the peer's flow control and never grows memory without bound.
Accepted bytes are never dropped. On an exit that answers on SURBs, `send` receives
`(surb, record)` pairs instead (`Session.next_reply`).
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable

from nyx.stream.handshake.errors import CloseCode
from nyx.telemetry.window import SampleWindow
from nyx.stream.session import (
    Session,
    SessionError,
    SessionClosed,
    StreamOpened,
    StreamReadable,
    StreamReset,
    StreamStopped,
    StreamWritable,
)

#: drain() returns once at most this many written bytes wait for the session (asyncio's default
#: high-water mark is 64 KiB; the session's own send buffer holds as much again).
DRAIN_HIGH_WATER = 64 * 1024
#: The longest a shell keeps answering, after its CLOSE, a peer that missed it.
CLOSE_LINGER_MAX_S = 30.0


async def wake_or_deadline(wakeup: asyncio.Event, deadline: float | None, clock: Callable[[], float]) -> None:
    """Wait until `wakeup` is set or `deadline` (on `clock`) has come: the one wait of every
    shell that drives sessions (this one, the gateway's exit loop, the client's driver)."""
    timeout = None if deadline is None else max(0.0, deadline - clock())
    try:
        async with asyncio.timeout(timeout):
            await wakeup.wait()
    except TimeoutError:
        pass


class StreamClosedError(ConnectionError):
    """The stream or its session ended; the message says how (reset code, close reason)."""


class _StreamState:
    __slots__ = ("stream_id", "pending", "readable", "drained", "done", "reset_code", "stopped_code", "finish_requested",
                 "writes")

    def __init__(self, stream_id: int) -> None:
        self.stream_id = stream_id
        self.pending = bytearray()  # written by the application, not yet taken by the session
        self.readable = asyncio.Event()
        self.drained = asyncio.Event()
        self.drained.set()
        self.done = asyncio.Event()
        self.reset_code: int | None = None
        self.stopped_code: int | None = None
        self.finish_requested = False
        self.writes: collections.deque[list[float]] | None = None  # [written at, bytes left], when timed


class NyxStreamReader:
    """`asyncio.StreamReader`'s reading methods, reading straight from the session."""

    def __init__(self, shell: SessionStreams, state: _StreamState) -> None:
        self._shell, self._state = shell, state

    @property
    def stream_id(self) -> int:
        return self._state.stream_id

    async def read(self, n: int = -1) -> bytes:
        """Up to `n` bytes (all that is ready with -1) once any are ready; b"" at EOF."""
        while True:
            data = self._shell._read(self._state, n)
            if data or self.at_eof():
                return data
            await self._wait()

    async def readexactly(self, n: int) -> bytes:
        """Exactly `n` bytes, or asyncio.IncompleteReadError with what came before EOF."""
        out = bytearray()
        while len(out) < n:
            chunk = self._shell._read(self._state, n - len(out))
            if chunk:
                out += chunk
                continue
            if self.at_eof():
                raise asyncio.IncompleteReadError(bytes(out), n)
            await self._wait()
        return bytes(out)

    def at_eof(self) -> bool:
        self._shell._raise_if_reset(self._state)
        return self._shell.session.at_eof(self._state.stream_id) or self._shell.session.closed is not None

    async def _wait(self) -> None:
        self._state.readable.clear()
        await self._state.readable.wait()


class NyxStreamWriter:
    """`asyncio.StreamWriter`'s writing methods over one stream."""

    def __init__(self, shell: SessionStreams, state: _StreamState) -> None:
        self._shell, self._state = shell, state

    @property
    def stream_id(self) -> int:
        return self._state.stream_id

    def write(self, data: bytes) -> None:
        """Queue `data` (never blocks, never drops); `await drain()` to apply backpressure."""
        if self._state.finish_requested:
            raise StreamClosedError(f"stream {self.stream_id} is closed for writing")
        self._shell._raise_if_reset(self._state)
        if data:
            self._state.pending += data
            self._state.drained.clear()
            self._shell._written(self._state, len(data))
            self._shell._wake()

    async def drain(self) -> None:
        """Wait until the queued bytes are down to the high-water mark (taken by the session)."""
        while len(self._state.pending) > DRAIN_HIGH_WATER:
            self._shell._raise_if_reset(self._state)
            self._state.drained.clear()
            await self._state.drained.wait()
        self._shell._raise_if_reset(self._state)

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        """Half-close: the peer reads EOF after the bytes already written."""
        self._state.finish_requested = True
        self._shell._wake()

    def close(self) -> None:
        self.write_eof()

    def is_closing(self) -> bool:
        return self._state.finish_requested

    async def wait_closed(self) -> None:
        """Wait until every written byte and the FIN were acknowledged (or the stream ended)."""
        await self._state.done.wait()


class SessionStreams:
    """The streams of one session as reader/writer pairs, for any shell that drives the session.

    It holds what the application wrote but the session has not taken (`pump_writes`), turns
    the session's events into wake-ups of readers and writers (`dispatch`), and reads straight
    from the session. It never reads `session.events()` itself nor sends records: `SessionShell`
    drives one session with it, the gateway drives thousands through `ExitCore`, which drains
    each session's events as it touches it. `wake` asks the owner to run its pump soon.
    """

    def __init__(
        self,
        session: Session,
        wake: Callable[[], None],
        *,
        queue_wait: SampleWindow | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`queue_wait`: if given, each write's time from `write()` until the session took its
        last byte is recorded there (the `stream_queue_latency` of SCL-013)."""
        self.session = session
        self._wake = wake
        self.queue_wait = queue_wait
        self._clock = clock
        self._states: dict[int, _StreamState] = {}
        self.accepted: asyncio.Queue[tuple[NyxStreamReader, NyxStreamWriter]] = asyncio.Queue()
        self.ended = False

    def open(self) -> tuple[NyxStreamReader, NyxStreamWriter]:
        """A new stream, as (reader, writer)."""
        return self._pair(self.session.open_stream())

    def pump_writes(self) -> None:
        """Writers' queues into the session (as much as its windows take), FINs when due."""
        session = self.session
        for state in self._states.values():
            if state.pending and session.closed is None and state.reset_code is None and state.stopped_code is None:
                try:
                    taken = session.write(state.stream_id, bytes(state.pending))
                except SessionError:  # closing: its CLOSE is queued, the writers are told by end_all
                    break
                del state.pending[:taken]
                if state.writes is not None and taken:
                    self._taken(state.writes, taken)
                if len(state.pending) <= DRAIN_HIGH_WATER:
                    state.drained.set()
            if state.finish_requested and not state.pending and session.can_finish(state.stream_id):
                session.finish(state.stream_id)

    def _written(self, state: _StreamState, size: int) -> None:
        if self.queue_wait is not None:
            if state.writes is None:
                state.writes = collections.deque()
            state.writes.append([self._clock(), float(size)])

    def _taken(self, writes: collections.deque[list[float]], taken: int) -> None:
        assert self.queue_wait is not None
        now = self._clock()
        while taken and writes:
            head = writes[0]
            if head[1] <= taken:
                taken -= int(head[1])
                writes.popleft()
                self.queue_wait.record(now - head[0])
            else:
                head[1] -= taken
                taken = 0

    def wants_pump(self) -> bool:
        """True while a writer has bytes or a FIN the session has not taken."""
        return any(
            (state.pending or (state.finish_requested and self.session.has_stream(state.stream_id)))
            and state.reset_code is None and state.stopped_code is None
            for state in self._states.values()
        )

    def reap(self) -> None:
        """Release the waiters of streams the session has finished with (both halves done)."""
        session = self.session
        for stream_id, state in list(self._states.items()):
            if not session.has_stream(stream_id):
                state.done.set()

    def dispatch(self, event: object) -> None:
        if isinstance(event, StreamOpened):
            self.accepted.put_nowait(self._pair(event.stream_id))
        elif isinstance(event, StreamReadable):
            self._state(event.stream_id).readable.set()
        elif isinstance(event, StreamWritable):
            self._wake()
        elif isinstance(event, StreamReset):
            state = self._state(event.stream_id)
            state.reset_code = event.error_code
            state.readable.set()
        elif isinstance(event, StreamStopped):
            state = self._state(event.stream_id)
            state.stopped_code = event.error_code
            state.drained.set()
            state.done.set()
        elif isinstance(event, SessionClosed):
            self.end_all()

    def end_all(self) -> None:
        """The session ended: wake every reader and writer (they see why on their next call)."""
        self.ended = True
        for state in self._states.values():
            state.readable.set()
            state.drained.set()
            state.done.set()

    def _state(self, stream_id: int) -> _StreamState:
        state = self._states.get(stream_id)
        if state is None:
            state = self._states[stream_id] = _StreamState(stream_id)
            if self.ended:
                state.readable.set()
                state.done.set()
        return state

    def _pair(self, stream_id: int) -> tuple[NyxStreamReader, NyxStreamWriter]:
        state = self._state(stream_id)
        return NyxStreamReader(self, state), NyxStreamWriter(self, state)

    def _read(self, state: _StreamState, n: int) -> bytes:
        self._raise_if_reset(state)
        if not self.session.has_stream(state.stream_id):
            return b""
        data = self.session.read(state.stream_id, n)
        if data:
            self._wake()  # the window moved: a MAX_STREAM_DATA may be due
        return data

    def _raise_if_reset(self, state: _StreamState) -> None:
        if state.reset_code is not None:
            raise StreamClosedError(f"stream {state.stream_id} was reset by the peer (code {state.reset_code})")
        if state.stopped_code is not None:
            raise StreamClosedError(f"the peer stopped reading stream {state.stream_id} (code {state.stopped_code})")
        closed = self.session.closed
        if closed is not None and closed.error_code != CloseCode.NO_ERROR and not self.session.at_eof(state.stream_id):
            try:
                name = CloseCode(closed.error_code).name
            except ValueError:
                name = str(closed.error_code)
            raise StreamClosedError(f"the session closed ({name}): {closed.reason}")


class SessionShell:
    """One session on the event loop: records in and out, one timer, streams as reader/writer.

    The session must have been created on `clock`'s time scale (`Session(keys, clock())`): its
    idle timeout and key-update ages are measured on it.
    """

    def __init__(self, session: Session, send: Callable[..., None], clock: Callable[[], float] = time.monotonic) -> None:
        self.session = session
        self._send = send
        self._clock = clock
        self._wakeup = asyncio.Event()
        self.streams = SessionStreams(session, self._wake)
        self.closed = asyncio.Event()

    # -- the application's side -------------------------------------------------------------------

    async def open_connection(self) -> tuple[NyxStreamReader, NyxStreamWriter]:
        """A new stream, as (reader, writer)."""
        return self.streams.open()

    async def accept(self) -> tuple[NyxStreamReader, NyxStreamWriter]:
        """The next stream the peer opened."""
        return await self.streams.accepted.get()

    async def close(self, error_code: int = CloseCode.NO_ERROR, reason: str = "") -> None:
        """Close the session (CLOSE goes with the next record) and wait until it is sent."""
        self.session.close(error_code, reason)
        self._wake()
        await self.closed.wait()

    def receive_record(self, record: bytes) -> None:
        """A record from the peer (from the transport's packet handler)."""
        self.session.receive_record(record, self._clock())
        self._wake()

    # -- the loop -----------------------------------------------------------------------------------

    async def run(self) -> None:
        """Drive the session until it closes: one wait at a time, for a wake-up or the deadline."""
        try:
            while self.session.closed is None:
                self._pump()
                if self.session.closed is not None:
                    break
                await wake_or_deadline(self._wakeup, self.session.deadline(), self._clock)
                self._wakeup.clear()
                now = self._clock()
                deadline = self.session.deadline()
                if deadline is not None and now >= deadline:
                    self.session.on_timer(now)
            self._pump()
            self._end_all()
            await self._linger()
        finally:
            self._end_all()

    async def _linger(self) -> None:
        """After our CLOSE, keep answering for a while: a peer that still sends missed it. Once
        per loss timeout of silence the CLOSE goes again unprompted (a lost CLOSE to a peer with
        nothing to send would otherwise cost it its idle timeout); CLOSE_RESENDS bounds both."""
        interval = max(0.2, self.session.loss_timeout_s)
        end = self._clock() + min(CLOSE_LINGER_MAX_S, max(1.0, 3 * interval))
        while self.session.lingering and (left := end - self._clock()) > 0:
            self._wakeup.clear()
            try:
                async with asyncio.timeout(min(left, interval)):
                    await self._wakeup.wait()
            except TimeoutError:
                self.session.repeat_close()
            self._pump()

    def _wake(self) -> None:
        self._wakeup.set()

    def _pump(self) -> None:
        """Writers' queues into the session, the session's records out, its events to streams."""
        session, now = self.session, self._clock()
        self.streams.pump_writes()
        if session.surb_pool is not None:
            while (reply := session.next_reply(now)) is not None:
                self._send(*reply)
        else:
            while (record := session.next_record(now)) is not None:
                self._send(record)
        for event in session.events():
            self.streams.dispatch(event)
        self.streams.reap()

    def _end_all(self) -> None:
        self.streams.end_all()
        self.closed.set()
