"""`ClientCore`: the client's side of one session to one exit, sans-I/O (reply messages and a
clock in; envelopes to send forward, events and one deadline out). The mirror of `ExitCore`: the
`nyx.Client` shell builds Sphinx packets around what `poll` returns, opens the SURB layers of
what comes back before `receive`, and arms one timer.

    core = ClientCore(Initiator({suite: exit_key}), SessionConfig(surbs=SurbPolicy()), make_surbs, now)
    for envelope in core.start(now): send_forward(envelope)
    core.receive(reply, now)                    # one message that came back on one of our SURBs
    core.session.write(core.session.open_stream(), data)   # once `core.session` is not None
    for envelope in core.poll(now): send_forward(envelope)
    core.on_timer(now) when now >= core.deadline()
    for event in core.events(): ...             # StreamReadable, SessionClosed, ...

**Two phases, one object.** Until the exit's Accept arrives the core is a `ClientOpening`; then
it holds the initiator `Session` the opening made, and keeps the opening only as long as it
still resends its Finish (until the session receives a record from the exit). The shell never
has to know which phase it is in.

**SURBs.** `make_surbs(n)` is the shell's: n fresh encoded SURBs on routes back to this client.
The opening sends them as SURB envelopes beside its Init; once open, `poll` hands the session
`make_surbs(session.surbs_wanted())` first, and they ride inside the next records as SURBS frames.

**A failed opening is an event, not an exception.** `OpeningError` (no answer after every
Init, or a handshake the exit's answer breaks) sets `failed` and emits `SessionClosed` with
`by_peer=False`: the handshake's `CloseCode` when there is one, else `IDLE_TIMEOUT` (nothing came
back). Why: the shell's timer loop and receive loop must not need a try around every call, and
an application waiting on a stream learns of it the same way it learns of an idle timeout.
After that the core is inert: `poll` returns nothing, `deadline` is None, replies are drops.

**Drops.** Anyone who learns a SURB can send us bytes on it, so every bad reply is a counted
drop, never an error: `drops[reason]` here (an envelope's `EnvelopeError` reason, `session_id`,
`unexpected_kind`, `record_before_open`, `late_handshake`, `failed`), the opening's own
(`opening.drops`) and the session's (records that fail to open); `all_drops()` merges them.
"""

from __future__ import annotations

import collections
from collections.abc import Callable

from nyx.stream import envelope as E
from nyx.stream.events import Event, SessionClosed
from nyx.stream.handshake import HandshakeError, Initiator
from nyx.stream.handshake.errors import CloseCode
from nyx.stream.opening import ClientOpening, OpeningError
from nyx.stream.session import Session, SessionConfig

__all__ = ["ClientCore"]


class ClientCore:
    """One session from this client to one exit: its opening, then its initiator Session."""

    def __init__(
        self,
        initiator: Initiator,
        config: SessionConfig,
        make_surbs: Callable[[int], list[bytes]],
        now: float,
        *,
        session_id: bytes | None = None,
        resend_s: float = 2.0,
        max_tries: int = 5,
    ) -> None:
        """`session_id`: drawn fresh when None (tests pin it). `resend_s`, `max_tries`: the opening's."""
        if config.surbs is None:
            raise ValueError("the exit answers on SURBs only: give SessionConfig a SurbPolicy")
        self.session_id = session_id if session_id is not None else E.new_session_id()
        self.make_surbs = make_surbs
        self.opening: ClientOpening | None = ClientOpening(
            initiator, self.session_id, make_surbs, config, now, resend_s=resend_s, max_tries=max_tries
        )
        self._opening_drops = self.opening.drops  # kept after the opening is released
        self._session: Session | None = None
        self._outbox: list[bytes] = []  # the opening's envelopes (Finish, resends), until poll
        self._events: collections.deque[Event] = collections.deque()
        self.failed: OpeningError | None = None
        self.drops: collections.Counter[str] = collections.Counter()

    @property
    def session(self) -> Session | None:
        """The initiator Session once the exit's Accept arrived (None before, or after a failure)."""
        return self._session

    def all_drops(self) -> collections.Counter[str]:
        """This core's drops, the opening's and the session's, merged (for publishing)."""
        merged = self.drops + self._opening_drops
        return merged + self._session.drops if self._session is not None else merged

    def events(self) -> list[Event]:
        """Everything since the last call, in order: a failed opening's SessionClosed, then the session's."""
        out = list(self._events)
        self._events.clear()
        if self._session is not None:
            out += self._session.events()
        return out

    # -- in ---------------------------------------------------------------------------------------

    def start(self, now: float) -> list[bytes]:
        """The Init's HANDSHAKE fragments and the SURB envelopes the exit answers on."""
        assert self.opening is not None, "start() once, before anything else"
        return self.opening.start(now)

    def receive(self, message: bytes, now: float) -> None:
        """One message that came back on one of our SURBs (the shell removed the SURB's layers)."""
        if self.failed is not None:
            self.drops["failed"] += 1
            return
        try:
            env = E.unwrap(message)
        except E.EnvelopeError as error:
            self.drops[error.reason] += 1
            return
        if env.session_id != self.session_id:
            self.drops["session_id"] += 1
            return
        if env.kind is E.HANDSHAKE:
            if self._session is not None or self.opening is None:
                self.drops["late_handshake"] += 1  # a resent Accept: the exit's answer crossed ours
                return
            try:
                self._outbox += self.opening.receive(message, now)
            except OpeningError as error:
                self._fail(error)
                return
            self._session = self.opening.session
        elif env.kind is E.RECORD:
            if self._session is None:
                self.drops["record_before_open"] += 1  # cannot happen honestly: the exit opens after our Finish
                return
            self._session.receive_record(env.body, now)
            self._release_opening()
        else:
            self.drops["unexpected_kind"] += 1  # the exit sends only HANDSHAKE and RECORD

    # -- out --------------------------------------------------------------------------------------

    def poll(self, now: float) -> list[bytes]:
        """Envelopes to send forward now: the opening's, then the session's records (SURBs first handed over)."""
        out, self._outbox = self._outbox, []
        session = self._session
        if session is None:
            return out
        wanted = session.surbs_wanted()
        if wanted:
            session.send_surbs(self.make_surbs(wanted))
        while (record := session.next_record(now)) is not None:
            out.append(E.wrap(E.RECORD, self.session_id, record))
        return out

    # -- time -------------------------------------------------------------------------------------

    def deadline(self) -> float | None:
        """When `on_timer` must run next: the earlier of the opening's resend and the session's."""
        times = [
            t
            for t in (
                self.opening.deadline() if self.opening is not None else None,
                self._session.deadline() if self._session is not None else None,
            )
            if t is not None
        ]
        return min(times) if times else None

    def on_timer(self, now: float) -> None:
        """Resend what the opening owes (collected for `poll`), run the session's timer; never raises
        OpeningError (see the module docstring)."""
        if self.opening is not None:
            try:
                self._outbox += self.opening.on_timer(now)
            except OpeningError as error:
                self._fail(error)
                return
            self._release_opening()
        session = self._session
        if session is not None:
            due = session.deadline()
            if due is not None and due <= now:
                session.on_timer(now)

    # -- bookkeeping ------------------------------------------------------------------------------

    def _release_opening(self) -> None:
        """Forget the opening once it has nothing left to resend (the exit answered a record)."""
        if self.opening is not None and self._session is not None and self.opening.deadline() is None:
            self.opening = None

    def _fail(self, error: OpeningError) -> None:
        self.failed = error
        self.opening = None
        self._outbox = []
        cause = error.__cause__
        code = cause.code if isinstance(cause, HandshakeError) else CloseCode.IDLE_TIMEOUT
        session, self._session = self._session, None
        if session is not None:  # opened here, never at the exit: its streams must see it end
            session.abandon(code, str(error))
            self._events.extend(session.events())
        else:
            self._events.append(SessionClosed(int(code), str(error), by_peer=False))
