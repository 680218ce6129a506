"""Opening a session through the mixnet: the handshake carried in envelopes, sans-I/O
(envelopes and a clock in; envelopes, `(SURB, envelope)` pairs and sessions out).

The client cannot be addressed, so the exit answers only on SURBs the client sent ahead:

    client                                              exit
    Init (message 1, k fragments) + n SURB envelopes -->   (n = Accept fragments + 1)
                                <-- Accept (message 1) on SURBs, or a Reject
    Finish (message 3, 1 fragment)                   -->   Session opened
    (after a version/suite Reject: Init message 2 + fresh SURBs, once)

Hybrid: 4 Init + 3 SURB envelopes forward, 2 Accept back, 1 Finish forward.

**Retransmission.** The client resends the *same* Init fragments (and n fresh SURBs) every
`resend_s` until an answer completes, at most `max_tries` times, then raises `OpeningError`. Not
a new Init: the responder's replay cache refuses an Init it saw, and a new Init would need a new
Initiator attempt for every lost packet. The same bytes work both ways: if an Init fragment was
lost, the exit's Reassembler still holds the others and the resent copy completes the message;
if the exit already answered (its Accept was lost), it recognises the session and Init message
id and resends its stored answer on the fresh SURBs, at most once per `resend_gap_s` (one resent
Init is several fragments). The Finish is resent the same way until the client's Session has
received a record from the exit (proof that the exit opened).

**Bounds at the exit** (anyone can send it envelopes): at most `max_openings` openings (a new one
evicts the oldest, counted), `max_surbs` SURBs per opening and `max_surb_bytes` over all, one
held answer per opening, `timeout_s` of age. Errors are counted drops (`drops[reason]`); a
HandshakeError closes only that opening, after its Reject when the responder has one.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass, field

from nyx.crypto.suites import Suite
from nyx.stream import envelope as E
from nyx.stream.handshake import HandshakeError, HandshakeRejected, Initiator, PendingSession, Responder
from nyx.stream.handshake import messages
from nyx.stream.session import Session, SessionConfig

__all__ = ["FINISH_ID", "INIT_ID", "RETRY_ID", "ClientOpening", "ExitOpenings", "OpeningError", "accept_bytes"]

#: Handshake message ids within a session. An answer (Accept or Reject) carries the id of the Init
#: it answers, so the client never confuses the answer to its first Init with the retry's.
INIT_ID, RETRY_ID, FINISH_ID = 1, 2, 3


class OpeningError(Exception):
    """The session could not be opened (no answer after every try, or the handshake failed)."""


def accept_bytes(suite: Suite) -> int:
    """The size of `suite`'s Accept, known before it arrives (it fixes how many SURBs to send)."""
    return len(messages.Accept(1, suite, 0, bytes(suite.kem().ciphertext_size), bytes(messages.CONFIRM_SIZE)).encode())


class ClientOpening:
    """The client side of one session's opening."""

    def __init__(
        self,
        initiator: Initiator,
        session_id: bytes,
        surbs: Callable[[int], list[bytes]],
        config: SessionConfig,
        now: float,
        *,
        resend_s: float = 2.0,
        max_tries: int = 5,
    ) -> None:
        """`surbs(n)`: n fresh encoded SURBs from the shell. `max_tries`: sends of each Init or Finish."""
        self.initiator = initiator
        self.session_id = session_id
        self._surbs = surbs
        self.config = config
        self.resend_s = resend_s
        self.max_tries = max_tries
        self.session: Session | None = None
        self.drops: collections.Counter[str] = collections.Counter()
        # Only answers to our own Inits arrive here (on our SURBs): two small messages at most.
        self._reassembler = E.Reassembler(max_pending=4, max_message_bytes=E.MAX_HANDSHAKE_BYTES, timeout_s=60.0)
        self._attempt = 0  # message id of the Init in flight (0 before start)
        self._sent: list[bytes] = []  # the Init's (later the Finish's) fragments, for resending
        self._tries = 0
        self._next_send: float | None = None
        self._created = now

    def _surb_envelopes(self) -> list[bytes]:
        # Enough for the Accept, plus one: a Reject needs one, and the rest go to the session's pool.
        count = E.fragment_count(accept_bytes(self.initiator.suite)) + 1
        return [E.wrap(E.SURB, self.session_id, surb) for surb in self._surbs(count)]

    def _send_init(self, message_id: int, init: bytes, now: float) -> list[bytes]:
        self._attempt = message_id
        self._sent = E.fragments(self.session_id, message_id, init)
        self._tries = 1
        self._next_send = now + self.resend_s
        return self._sent + self._surb_envelopes()

    def start(self, now: float) -> list[bytes]:
        """The Init's HANDSHAKE fragments and the SURB envelopes the exit answers on."""
        return self._send_init(INIT_ID, self.initiator.start(now), now)

    def receive(self, message: bytes, now: float) -> list[bytes]:
        """One message the exit sent back (already opened from its SURB): envelopes to send.

        Raises OpeningError when the handshake fails for good (bad Accept, a Reject after the retry).
        """
        if self.session is not None:
            self.drops["opened"] += 1  # a late duplicate answer
            return []
        try:
            env = E.unwrap(message)
            if env.kind is not E.HANDSHAKE or env.session_id != self.session_id:
                self.drops["unexpected"] += 1
                return []
            fragment = E.parse_fragment(env.body)
        except E.EnvelopeError as error:
            self.drops[error.reason] += 1
            return []
        if fragment.message_id != self._attempt:
            self.drops["stale"] += 1  # an answer to an Init we no longer wait for
            return []
        whole = self._reassembler.receive(self.session_id, fragment, now)
        if whole is None:
            return []
        try:
            finish, keys = self.initiator.receive(whole)
        except HandshakeRejected as rejection:
            if self._attempt != INIT_ID:
                raise OpeningError(f"the exit rejected the retry as well: {rejection}") from rejection
            try:
                init = self.initiator.retry(rejection, now)
            except HandshakeError as error:
                raise OpeningError(f"cannot retry after the exit's Reject: {error}") from error
            return self._send_init(RETRY_ID, init, now)
        except HandshakeError as error:
            raise OpeningError(f"the exit's answer failed the handshake ({error.code.name}): {error}") from error
        self.session = Session(keys, now, self.config)
        self._sent = E.fragments(self.session_id, FINISH_ID, finish)
        self._tries = 1
        self._next_send = now + self.resend_s
        return list(self._sent)

    def deadline(self) -> float | None:
        """When `on_timer` next has something to resend, or None."""
        if self.session is not None and self.session.records_received > 0:
            return None  # the exit opened: it answered a record
        return self._next_send

    def on_timer(self, now: float) -> list[bytes]:
        """Resend the Init (with fresh SURBs) or the Finish when due. OpeningError after `max_tries`
        Init sends, or after `max_tries` Finish sends with no record from the exit (the shell ends
        the Session it made: `ClientCore` abandons it)."""
        due = self.deadline()
        if due is None or now < due:
            return []
        if self._tries >= self.max_tries:
            self._next_send = None
            if self.session is None:
                raise OpeningError(
                    f"no answer from the exit after {self._tries} Init sends over {now - self._created:.1f} s"
                )
            # Every Finish may be lost: the exit never opened, and would drop every record of ours
            # until the idle timeout (300 s). Fail now: the shell opens a new session.
            raise OpeningError(
                f"the exit never confirmed the session: no record from it after {self._tries} Finish sends"
                f" over {now - self._created:.1f} s"
            )
        self._tries += 1
        self._next_send = now + self.resend_s
        if self.session is not None:
            return list(self._sent)
        return list(self._sent) + self._surb_envelopes()


@dataclass(slots=True)
class _Opening:
    created: float
    surbs: collections.deque[bytes] = field(default_factory=collections.deque)
    attempt: int = 0  # message id of the Init answered (0: none yet)
    pending: PendingSession | None = None
    answer: list[bytes] = field(default_factory=list)  # the answer's fragments, for resending
    outbox: collections.deque[bytes] = field(default_factory=collections.deque)  # waiting for SURBs
    last_answer: float = -float("inf")


class ExitOpenings:
    """The exit side: every session being opened, until its Finish turns it into a Session."""

    def __init__(
        self,
        responder: Responder,
        config: SessionConfig,
        *,
        max_openings: int = 1024,
        max_surbs: int = 16,
        max_surb_bytes: int = 4 * 1024 * 1024,
        timeout_s: float = 30.0,
        resend_gap_s: float = 1.0,
    ) -> None:
        if config.surbs is None:
            raise ValueError("an exit answers on SURBs only: give SessionConfig a SurbPolicy")
        if max_openings < 1 or max_surbs < 1 or timeout_s <= 0:
            raise ValueError("opening limits must be positive")
        self.responder = responder
        self.config = config
        self.max_openings = max_openings
        self.max_surbs = max_surbs
        self.max_surb_bytes = max_surb_bytes
        self.timeout_s = timeout_s
        self.resend_gap_s = resend_gap_s
        self.reassembler = E.Reassembler(max_pending=max_openings, timeout_s=timeout_s)
        self._openings: collections.OrderedDict[bytes, _Opening] = collections.OrderedDict()
        self._opened: list[tuple[bytes, Session]] = []
        self.surb_bytes = 0
        self.drops: collections.Counter[str] = collections.Counter()

    def __len__(self) -> int:
        return len(self._openings)

    def __contains__(self, session_id: bytes) -> bool:
        return session_id in self._openings

    def sessions_opened(self) -> list[tuple[bytes, Session]]:
        """(session id, responder Session) for each opening finished since the last call."""
        opened, self._opened = self._opened, []
        return opened

    def receive(self, message: bytes, now: float) -> list[tuple[bytes, bytes]]:
        """One envelope from the mixnet: (SURB, envelope) pairs to send, each message on its SURB."""
        try:
            env = E.unwrap(message)
            fragment = E.parse_fragment(env.body) if env.kind is E.HANDSHAKE else None
        except E.EnvelopeError as error:
            self.drops[error.reason] += 1
            return []
        sid = env.session_id
        opening = self._openings.get(sid)
        if env.kind in (E.RECORD, E.FEC_SHARD):
            # Before the Finish there are no keys to open it; the client retransmits.
            self.drops["record_while_opening" if opening is not None else "unknown_session"] += 1
            return []
        if opening is None:
            if fragment is not None and fragment.message_id == FINISH_ID:
                # A Finish for no opening: a late resend for a session already opened (the shell
                # routes live sessions' envelopes past us) or a forgery; it must not start one.
                self.drops["unknown_session"] += 1
                return []
            opening = self._openings[sid] = _Opening(now)
            while len(self._openings) > self.max_openings:
                self._close(next(iter(self._openings)), "evicted")
        if env.kind is E.SURB:
            self._add_surb(opening, env.body)
        elif fragment is not None:
            self._on_fragment(sid, opening, fragment, now)
        return self._flush(sid)

    def _add_surb(self, opening: _Opening, surb: bytes) -> None:
        if len(opening.surbs) >= self.max_surbs or self.surb_bytes + len(surb) > self.max_surb_bytes:
            self.drops["surb_full"] += 1
            return
        opening.surbs.append(surb)
        self.surb_bytes += len(surb)

    def _on_fragment(self, sid: bytes, opening: _Opening, fragment: E.Fragment, now: float) -> None:
        message_id = fragment.message_id
        if message_id in (INIT_ID, RETRY_ID) and message_id == opening.attempt:
            # The client resent an Init we answered: our answer was lost. Resend it (not the Init
            # to the responder, whose replay cache would refuse it), once per gap.
            if now - opening.last_answer >= self.resend_gap_s:
                opening.outbox = collections.deque(opening.answer)
                opening.last_answer = now
            else:
                self.drops["duplicate"] += 1
            return
        if message_id not in (INIT_ID, RETRY_ID, FINISH_ID) or (message_id != FINISH_ID and message_id < opening.attempt):
            self.drops["message_id"] += 1
            return
        whole = self.reassembler.receive(sid, fragment, now)
        if whole is None:
            return
        if message_id == FINISH_ID:
            self._on_finish(sid, opening, whole, now)
            return
        try:
            accept, pending = self.responder.respond(whole, now)
        except HandshakeError as error:
            reject = self.responder.reject(error)
            self.drops[f"handshake_{error.code.name.lower()}"] += 1
            if reject is None:
                self._close(sid, None)
                return
            opening.pending, answer = None, reject
        else:
            opening.pending, answer = pending, accept
        opening.attempt = message_id
        opening.answer = E.fragments(sid, message_id, answer)
        opening.outbox = collections.deque(opening.answer)
        opening.last_answer = now

    def _on_finish(self, sid: bytes, opening: _Opening, finish: bytes, now: float) -> None:
        if opening.pending is None:
            self.drops["finish_without_accept"] += 1
            return
        try:
            keys = opening.pending.finish(finish)
        except HandshakeError as error:
            self.drops[f"handshake_{error.code.name.lower()}"] += 1
            self._close(sid, None)
            return
        session = Session(keys, now, self.config)
        assert session.surb_pool is not None  # config.surbs is set
        session.surb_pool.add(tuple(opening.surbs))
        self._close(sid, None)  # releases the moved SURBs' bytes from this budget
        self._opened.append((sid, session))

    def _flush(self, sid: bytes) -> list[tuple[bytes, bytes]]:
        """Pair held answer fragments with SURBs while both last."""
        opening = self._openings.get(sid)
        out: list[tuple[bytes, bytes]] = []
        while opening is not None and opening.outbox and opening.surbs:
            surb = opening.surbs.popleft()
            self.surb_bytes -= len(surb)
            out.append((surb, opening.outbox.popleft()))
        return out

    def _close(self, sid: bytes, reason: str | None) -> None:
        opening = self._openings.pop(sid)
        self.surb_bytes -= sum(map(len, opening.surbs))
        if reason is not None:
            self.drops[reason] += 1

    def deadline(self) -> float | None:
        """When `on_timer` next has an opening (or a partial message) to expire, or None."""
        times = [t for t in (self.reassembler.deadline(),) if t is not None]
        oldest = next(iter(self._openings.values()), None)
        if oldest is not None:
            times.append(oldest.created + self.timeout_s)
        return min(times) if times else None

    def on_timer(self, now: float) -> None:
        """Drop openings older than `timeout_s` (the client gave up or never finished)."""
        self.reassembler.expire(now)
        while self._openings:
            sid, opening = next(iter(self._openings.items()))
            if opening.created + self.timeout_s > now:
                break
            self._close(sid, "expired")
