"""`ExitCore`: the exit gateway's per-message dispatch, sans-I/O (Sphinx payloads and a clock in;
`(SURB, envelope)` pairs, `(session id, event)` pairs and one deadline out). The gateway program
is a thin shell around it: it feeds what the mix layer delivers, sends what `poll` returns on
the SURBs, routes events to its services and arms one timer.

    core = ExitCore(responder, SessionConfig(surbs=SurbPolicy()))
    core.receive(payload, now)                  # one delivered Sphinx payload (an envelope)
    for sid, event in core.events(): ...        # StreamOpened, StreamReadable, SessionClosed, ...
    core.session(sid).write(stream, data)       # services answer through the session
    for surb, message in core.poll(now): send_on_surb(surb, message)
    core.on_timer(now) when now >= core.deadline()

**Per envelope kind**, for a session id in the table: RECORD -> `Session.receive_record`; SURB
-> the session's `SurbPool`; HANDSHAKE -> dropped as `late_handshake` (a Finish the client
resent before our first record reached it: normal, nothing to do); FEC_SHARD -> dropped as
`fec_unsupported` (the exit does not decode FEC blocks yet; clients must not send them).
Anything else (an unknown id) goes to `ExitOpenings`, whose finished openings join the table.

**Which sessions `poll` asks.** Calling `next_reply` on 100,000 sessions per poll would cost
more than the traffic, so only *active* sessions are asked: those that received something,
whose timer fired, or that the shell touched through `session(sid)` (it is about to write).
A session stays active until `next_reply` returns None. Round robin: one reply per active
session per turn, at most `replies_per_poll` (64) per session per poll, so one busy session
cannot starve the others; a session cut off at the cap stays active for the next poll.

**The timer** is a heap of (deadline, session id) refreshed lazily: every time the core touches
a session it pushes the session's new deadline if it changed; stale entries are discarded when
they reach the top, and the heap is rebuilt when it holds more than twice the live entries.
`deadline()` is O(1) amortised (O(log n) per discarded entry), so 100,000 idle sessions cost
nothing per turn. This relies on the shell feeding sessions only through the core: a session's
deadline moves only in `receive_record`, `next_reply` and `on_timer`, never in write/read/close.

**Lifecycle and bounds.** A session that closes leaves the table once it is not lingering; one
that closed itself (its CLOSE may be lost) lingers three loss timeouts, answering the peer's
records with the CLOSE again, as `SessionShell` does. At most `max_sessions` sessions: beyond
that, new openings are refused (`sessions_full`) rather than a live session evicted, since a
flood of cheap Init fragments must not be able to push real users out; the opening layer has
its own bounds (`ExitOpenings`). Counters are plain attributes (`drops` here, `openings.drops`
for the opening layer; `all_drops()` merges them), published by the shell.
"""

from __future__ import annotations

import collections
import heapq
from collections.abc import Callable

from nyx.stream import envelope as E
from nyx.stream.events import Event
from nyx.stream.handshake import Responder
from nyx.stream.opening import ExitOpenings
from nyx.stream.session import Session, SessionConfig

__all__ = ["LINGER_LOSS_TIMEOUTS", "REPLIES_PER_POLL", "ExitCore"]

#: Replies one session may send per `poll`: enough for a burst, small enough to share the shell's turn.
REPLIES_PER_POLL = 64
#: A session that closed itself lingers this many loss timeouts to resend its CLOSE (as SessionShell).
LINGER_LOSS_TIMEOUTS = 3


class ExitCore:
    """Every session at one exit: the openings, the table of open sessions, their replies and timers."""

    def __init__(
        self,
        responder: Responder,
        config: SessionConfig,
        *,
        max_sessions: int = 100_000,
        replies_per_poll: int = REPLIES_PER_POLL,
        openings: Callable[[Responder, SessionConfig], ExitOpenings] = ExitOpenings,
    ) -> None:
        """`openings`: how to build the opening layer (pass a `functools.partial` for its limits)."""
        if max_sessions < 1 or replies_per_poll < 1:
            raise ValueError("max_sessions and replies_per_poll must be positive")
        self.config = config
        self.max_sessions = max_sessions
        self.replies_per_poll = replies_per_poll
        self.openings = openings(responder, config)  # raises without a SurbPolicy
        self._sessions: dict[bytes, Session] = {}
        self._active: dict[bytes, None] = {}  # insertion-ordered set: sessions poll must ask
        self._heap: list[tuple[float, bytes]] = []
        self._due: dict[bytes, float] = {}  # the deadline each session's live heap entry holds
        self._linger_until: dict[bytes, float] = {}
        self._outbox: list[tuple[bytes, bytes]] = []  # the openings' answers, until poll
        self._events: collections.deque[tuple[bytes, Event]] = collections.deque()
        self.drops: collections.Counter[str] = collections.Counter()
        self.sessions_opened = 0
        self.sessions_opened_pq = 0  # of those, under a post-quantum suite (hybrid, pq, pq-alt)
        self.sessions_closed = 0

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, session_id: bytes) -> bool:
        return session_id in self._sessions

    def session(self, session_id: bytes) -> Session | None:
        """The open session, for the shell to write, read or close; marks it for the next poll."""
        session = self._sessions.get(session_id)
        if session is not None:
            self._active[session_id] = None
        return session

    def events(self) -> list[tuple[bytes, Event]]:
        """(session id, event) for everything that happened since the last call, in order. Use
        this, not `Session.events()`: the core drains each session's events as it touches it."""
        out = list(self._events)
        self._events.clear()
        return out

    def all_drops(self) -> collections.Counter[str]:
        """This core's drops and the opening layer's, merged (for publishing)."""
        return self.drops + self.openings.drops

    # -- in ---------------------------------------------------------------------------------------

    def receive(self, message: bytes, now: float) -> None:
        """One Sphinx payload delivered to this exit. Anyone can send one: every failure is a drop."""
        try:
            env = E.unwrap(message)
        except E.EnvelopeError as error:
            self.drops[error.reason] += 1
            return
        sid = env.session_id
        session = self._sessions.get(sid)
        if session is None:
            if sid not in self.openings and len(self._sessions) >= self.max_sessions and env.kind is not E.RECORD:
                self.drops["sessions_full"] += 1  # refuse before the handshake costs a key exchange
                return
            self._outbox += self.openings.receive(message, now)
            self._file_opened(now)
            return
        if env.kind is E.RECORD:
            session.receive_record(env.body, now)
        elif env.kind is E.SURB:
            assert session.surb_pool is not None  # config.surbs is set
            session.surb_pool.add((env.body,))
        elif env.kind is E.HANDSHAKE:
            self.drops["late_handshake"] += 1
            return
        else:
            self.drops["fec_unsupported"] += 1
            return
        self._active[sid] = None
        self._after(sid, session, now)

    def _file_opened(self, now: float) -> None:
        for sid, session in self.openings.sessions_opened():
            if len(self._sessions) >= self.max_sessions:
                self.drops["sessions_full"] += 1  # its opening began before the table filled
                continue
            self._sessions[sid] = session
            self.sessions_opened += 1
            self.sessions_opened_pq += session.keys.suite.post_quantum
            self._after(sid, session, now)

    # -- out --------------------------------------------------------------------------------------

    def poll(self, now: float) -> list[tuple[bytes, bytes]]:
        """Every (SURB, envelope) to send now: the openings' answers, then replies, round robin."""
        out, self._outbox = self._outbox, []
        turn = collections.deque(self._active)
        self._active = {}
        sent: collections.Counter[bytes] = collections.Counter()
        while turn:
            sid = turn.popleft()
            session = self._sessions.get(sid)
            if session is None:
                continue
            reply = session.next_reply(now)
            if reply is None:
                self._after(sid, session, now)  # done for now: leaves the active set
                continue
            surb, record = reply
            out.append((surb, E.wrap(E.RECORD, sid, record)))
            sent[sid] += 1
            if sent[sid] >= self.replies_per_poll:
                self._active[sid] = None  # capped: first in line next poll
                self._after(sid, session, now)
            else:
                turn.append(sid)
        return out

    # -- time -------------------------------------------------------------------------------------

    def deadline(self) -> float | None:
        """When `on_timer` must run next: the earliest of the openings' and every session's."""
        heap = self._heap
        while heap and self._due.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)  # stale: the session moved its deadline or left
        times = [t for t in (self.openings.deadline(), heap[0][0] if heap else None) if t is not None]
        return min(times) if times else None

    def on_timer(self, now: float) -> None:
        """Expire openings; run every session whose deadline has come (idle, loss, ACK, linger)."""
        self.openings.on_timer(now)
        due: list[bytes] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            deadline, sid = heapq.heappop(heap)
            if self._due.get(sid) == deadline:
                del self._due[sid]
                due.append(sid)
        for sid in due:
            session = self._sessions.get(sid)
            if session is None:
                continue
            linger = self._linger_until.get(sid)
            if linger is not None and linger <= now:
                self._remove(sid)
                continue
            session.on_timer(now)
            self._active[sid] = None
            self._after(sid, session, now)

    # -- bookkeeping ------------------------------------------------------------------------------

    def _after(self, sid: bytes, session: Session, now: float) -> None:
        """After touching a session: pass on its events, retire it if closed, refresh its deadline."""
        for event in session.events():
            self._events.append((sid, event))
        if session.closed is not None:
            if not session.lingering:
                self._remove(sid)
                return
            if sid not in self._linger_until:
                self._linger_until[sid] = now + LINGER_LOSS_TIMEOUTS * session.loss_timeout_s
            deadline: float | None = self._linger_until[sid]
        else:
            deadline = session.deadline()
        if deadline is None or self._due.get(sid) == deadline:
            return
        self._due[sid] = deadline
        heapq.heappush(self._heap, (deadline, sid))
        if len(self._heap) > 2 * len(self._sessions) + 64:  # too many stale entries: rebuild
            self._heap = [(t, s) for s, t in self._due.items()]
            heapq.heapify(self._heap)

    def _remove(self, sid: bytes) -> None:
        session = self._sessions.pop(sid)
        for event in session.events():
            self._events.append((sid, event))
        self._due.pop(sid, None)
        self._linger_until.pop(sid, None)
        self._active.pop(sid, None)
        self.sessions_closed += 1
