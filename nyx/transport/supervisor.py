"""The link supervisor: when an outbound link connects, pings, gives up and retries (sans-I/O).

Reconnecting, backing off, keeping alive and closing idle links are decisions, not I/O, so they
live here, where tests drive them with plain numbers. The asyncio shell (outbound.py) reports
what happened (`want`, `handshake_completed`, `connect_failed`, `connection_ended`) and asks
`poll(now, ...)` what to do; it sleeps until `next_deadline()` or until something happens.

The rules:

- A wanted link that is DOWN connects at once; a failed attempt (an error, or no handshake within
  `connect_timeout_s`) waits a jittered exponential backoff (link.py) before the next one, and a
  wanted link retries for as long as it is wanted (its bounded queue drops what does not fit).
- An UP link is checked every `check_interval_s` (the smaller of `keepalive_s` and half of
  `peer_silence_s`):
  - a connection that sent and heard nothing back for `peer_silence_s` is dead (a crashed peer
    sends no CONNECTION_CLOSE, and QUIC would wait out its whole idle timeout): close it and
    reconnect after a backoff;
  - nothing sent for `idle_close_s`: close it; if nothing is queued when it has closed, the link
    goes DOWN until the next send;
  - nothing sent for `keepalive_s`: PING, so QUIC's idle timeout does not fire on a quiet link.
- A connection that ends for any other reason is reconnected after a backoff.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nyx.transport.link import Backoff, LinkPhase


@dataclass(frozen=True, slots=True)
class LinkTimers:
    """The supervisor's timings, in seconds (QuicSettings carries the same names)."""

    connect_timeout_s: float = 5.0
    keepalive_s: float = 5.0
    idle_close_s: float = 300.0
    peer_silence_s: float = 3.0
    backoff_initial_s: float = 0.05
    backoff_max_s: float = 5.0

    @property
    def check_interval_s(self) -> float:
        return min(self.keepalive_s, self.peer_silence_s / 2)


@dataclass(frozen=True, slots=True)
class Connect:
    """Open a connection now (attempt number `attempt`, counted from 1)."""

    attempt: int


@dataclass(frozen=True, slots=True)
class AbandonConnect:
    """The handshake did not complete within `connect_timeout_s`: drop the attempt; the next one
    is due in `retry_in_s`."""

    waited_s: float
    retry_in_s: float


@dataclass(frozen=True, slots=True)
class Ping:
    """Send a PING: the link has been quiet for `keepalive_s` but not yet for `idle_close_s`."""


@dataclass(frozen=True, slots=True)
class CloseIdle:
    """Close the connection: nothing was sent on it for `idle_s`."""

    idle_s: float


@dataclass(frozen=True, slots=True)
class ClosePeerSilent:
    """The peer has not answered for `silent_s`: forget the connection now; reconnect in
    `retry_in_s`."""

    silent_s: float
    retry_in_s: float


Decision = Connect | AbandonConnect | Ping | CloseIdle | ClosePeerSilent


@dataclass(slots=True)
class LinkSupervisor:
    """Phase, backoff and activity of one outbound link; decisions out of `poll`."""

    timers: LinkTimers = field(default_factory=LinkTimers)
    backoff: Backoff | None = None
    phase: LinkPhase = LinkPhase.DOWN
    wanted: bool = False
    attempts: int = 0
    last_activity: float = 0.0
    closing_idle: bool = False
    _attempt_started: float = 0.0
    _retry_at: float = 0.0
    _next_check: float = 0.0
    _packets_sent: int = 0

    def __post_init__(self) -> None:
        if self.backoff is None:
            self.backoff = Backoff(self.timers.backoff_initial_s, self.timers.backoff_max_s)

    # -- what happened -----------------------------------------------------------------------

    def want(self) -> None:
        """Something is queued, or a caller asked to connect: the link should be up."""
        self.wanted = True

    def handshake_completed(self, now: float) -> None:
        self.phase = LinkPhase.UP
        self.backoff.reset()  # type: ignore[union-attr]
        self.last_activity = now
        self.closing_idle = False
        self._next_check = now + self.timers.check_interval_s

    def connect_failed(self, now: float) -> float:
        """The attempt failed (refused, authentication, closed in the handshake); return the
        backoff before the next attempt."""
        return self._back_off(now)

    def connection_ended(self, now: float, queued: bool) -> float | None:
        """The live connection is gone. Return the backoff before reconnecting, or None when the
        link went DOWN (it was closed as idle and nothing is queued)."""
        if self.phase is not LinkPhase.UP:
            return None  # already handled (a peer declared silent)
        if self.closing_idle and not queued:
            self.closing_idle = False
            self.phase = LinkPhase.DOWN
            self.wanted = False
            return None
        self.closing_idle = False
        self.wanted = True
        return self._back_off(now)

    def _back_off(self, now: float) -> float:
        self.phase = LinkPhase.BACKOFF
        delay = self.backoff.next_delay_s()  # type: ignore[union-attr]
        self._retry_at = now + delay
        return delay

    # -- what to do --------------------------------------------------------------------------

    def poll(
        self, now: float, *, packets_sent: int = 0, last_sent: float = 0.0, last_received: float = 0.0
    ) -> Decision | None:
        """The next decision at `now`, or None. Call again until None.

        `packets_sent`: the link's running count of packets handed to the connection (a change
        is activity). `last_sent` / `last_received`: clock of the connection's last UDP datagram
        each way (how silence is told).
        """
        if packets_sent != self._packets_sent:
            self._packets_sent = packets_sent
            self.last_activity = now
        phase = self.phase
        if phase is LinkPhase.DOWN or phase is LinkPhase.BACKOFF:
            if self.wanted and (phase is LinkPhase.DOWN or now >= self._retry_at):
                self.phase = LinkPhase.CONNECTING
                self.attempts += 1
                self._attempt_started = now
                return Connect(self.attempts)
            return None
        if phase is LinkPhase.CONNECTING:
            waited = now - self._attempt_started
            if waited >= self.timers.connect_timeout_s:
                return AbandonConnect(waited, self._back_off(now))
            return None
        if self.closing_idle or now < self._next_check:
            return None
        self._next_check = now + self.timers.check_interval_s
        silent = now - last_received
        if last_sent > last_received and silent > self.timers.peer_silence_s:
            self.wanted = True
            return ClosePeerSilent(silent, self._back_off(now))
        idle = now - self.last_activity
        if idle >= self.timers.idle_close_s:
            self.closing_idle = True
            return CloseIdle(idle)
        if idle >= self.timers.keepalive_s:
            return Ping()
        return None

    def next_deadline(self) -> float | None:
        """When `poll` may next decide something without being told of an event (None: only
        after an event)."""
        phase = self.phase
        if phase is LinkPhase.CONNECTING:
            return self._attempt_started + self.timers.connect_timeout_s
        if phase is LinkPhase.BACKOFF:
            return self._retry_at if self.wanted else None
        if phase is LinkPhase.UP and not self.closing_idle:
            return self._next_check
        return None
