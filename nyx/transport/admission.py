"""Admission of inbound QUIC connections: who may hold half-open state, and for how long.

A client Initial costs the sender one 1,200-byte datagram and costs us a `QuicConnection` (about
30-65 KiB and 0.2-0.8 ms of CPU) before anything has been decrypted or authenticated. Without a
bound, a few thousand forged Initials fill the inbound table and lock real clients out. This
module holds the policy, as QUIC servers do it (and TCP's SYN cache before them):

- Half-open connections (handshake not completed) have their own budget, `max_half_open`,
  apart from established ones (`max_established`): a flood of Initials never displaces an
  established peer, and a full table of established peers refuses new Initials up front.
- When the half-open budget is full, the oldest half-open connection is evicted to admit the new
  one (the oldest one admitted without a Retry token if there is one: a sender that proved its
  address is never evicted for one that did not). Refusing the newcomer instead would let an attacker hold the table with `max_half_open`
  Initials per handshake timeout (about 50 per second at the defaults) for as long as it likes;
  with eviction it has to send `max_half_open` Initials within one handshake of a real client,
  which lasts one or two round trips, and each of those Initials must first pass a Retry.
- Under load (`retry_above` half-open connections, or a source at its own limit) a first
  Initial gets a stateless Retry instead of a connection; only an Initial carrying a valid token
  (`validated`), which proves the sender receives at its address, creates state then. Spoofed
  sources never get past the Retry.
- Each source address holds at most `max_half_open_per_source`; past it the source's own oldest
  half-open connection (unvalidated first) is evicted, after a Retry, never another source's and
  never a refusal:
  a refusal would let anyone who can spoof a victim's address lock that address out with a
  handful of packets per handshake timeout (and it would lock out every client behind a NAT
  shared with an attacker).
- Every half-open connection is dropped `handshake_timeout_s` after it was admitted, by the shell,
  whatever timers the backend arms (left to themselves, both backends keep such a connection for
  their whole idle timeout, 30 s, and removal on qh3 was reported to fail altogether).

Sans-I/O: addresses, verdicts and a clock in; verdicts, evictions and expiries out. The asyncio
shell (quic.py) owns the connections, the socket and the one timer for `next_deadline()`.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

Key = TypeVar("Key", bound=Hashable)


@dataclass(frozen=True, slots=True)
class AdmissionLimits:
    """How much inbound connection state a node keeps, and when it asks for a Retry.

    max_established: inbound connections whose handshake completed. max_half_open: inbound
    connections still in their handshake. max_half_open_per_source: the same, per source IP
    address. retry_above: half-open count from which a first Initial gets a Retry instead of a
    connection (0: always; None: never, then the limits are enforced by eviction alone).
    handshake_timeout_s: a half-open connection older than this is dropped; the default equals
    the client's `connect_timeout_s`, after which a client gives up anyway.
    """

    max_established: int = 4096
    max_half_open: int = 256
    max_half_open_per_source: int = 32
    retry_above: int | None = 64
    handshake_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        if self.max_established < 1 or self.max_half_open < 1 or self.max_half_open_per_source < 1:
            raise ValueError(f"admission limits must be at least 1: {self}")
        if self.retry_above is not None and self.retry_above < 0:
            raise ValueError(f"retry_above must be None or at least 0, not {self.retry_above}")
        if not self.handshake_timeout_s > 0:
            raise ValueError(f"handshake_timeout_s must be positive, not {self.handshake_timeout_s}")


@dataclass(frozen=True, slots=True)
class Admit(Generic[Key]):
    """Open a connection; first drop the half-open connections in `evict` (zero or one)."""

    evict: tuple[Key, ...] = ()


@dataclass(frozen=True, slots=True)
class SendRetry:
    """Answer with a stateless Retry; the client returns with a token that proves its address."""


@dataclass(frozen=True, slots=True)
class Refuse:
    """Drop the Initial: `reason` says which budget is full."""

    reason: str


@dataclass(slots=True)
class _HalfOpen:
    source: str
    deadline: float
    validated: bool


class InboundAdmission(Generic[Key]):
    """The admission policy for one endpoint's inbound connections (see the module docstring).

    The shell calls `decide` for each Initial that would start a connection, `opened` once it
    made the connection, `established` when its handshake completes, `closed` when it ends
    (for any reason), and `expire` when `next_deadline()` passes. Counters are plain attributes.
    """

    def __init__(self, limits: AdmissionLimits | None = None) -> None:
        self.limits = limits if limits is not None else AdmissionLimits()
        self._half_open: dict[Key, _HalfOpen] = {}  # insertion order = age = deadline order
        self._unvalidated: dict[Key, None] = {}  # the half-open ones admitted without a token, oldest first
        self._by_source: dict[str, dict[Key, None]] = {}  # per source, oldest first
        self._established: set[Key] = set()
        self.refused_full = 0  # Initials or completed handshakes refused: established budget full
        self.retries = 0  # first Initials answered with a Retry
        self.evicted_full = 0  # half-open connections evicted: half-open budget full
        self.evicted_source = 0  # half-open connections evicted: their source at its limit
        self.expired = 0  # half-open connections dropped at the handshake timeout

    @property
    def half_open(self) -> int:
        return len(self._half_open)

    @property
    def established_count(self) -> int:
        return len(self._established)

    def half_open_from(self, source: str) -> int:
        return len(self._by_source.get(source, ()))

    def is_half_open(self, key: Key) -> bool:
        return key in self._half_open

    def decide(self, source: str, validated: bool, now: float) -> Admit[Key] | SendRetry | Refuse:
        """What to do with an Initial from `source` that would open a new connection.

        `validated`: it carries a valid Retry token. An `Admit` verdict has already removed its
        evicted keys from the books; the shell must drop those connections and call `opened`.
        """
        limits = self.limits
        if len(self._established) >= limits.max_established:
            self.refused_full += 1
            return Refuse("established connections at max_established")
        from_source = self._by_source.get(source)
        source_full = from_source is not None and len(from_source) >= limits.max_half_open_per_source
        if not validated and limits.retry_above is not None:
            if source_full or len(self._half_open) >= limits.retry_above:
                self.retries += 1
                return SendRetry()
        if source_full:
            assert from_source is not None
            victim = next((key for key in from_source if key in self._unvalidated), next(iter(from_source)))
            self.evicted_source += 1
        elif len(self._half_open) >= limits.max_half_open:
            victim = next(iter(self._unvalidated or self._half_open))
            self.evicted_full += 1
        else:
            return Admit()
        self._forget(victim)
        return Admit((victim,))

    def opened(self, key: Key, source: str, now: float, validated: bool = False) -> None:
        """`key` is a new half-open connection from `source`, admitted at `now` (`validated`: with
        a valid Retry token)."""
        self._half_open[key] = _HalfOpen(source, now + self.limits.handshake_timeout_s, validated)
        self._by_source.setdefault(source, {})[key] = None
        if not validated:
            self._unvalidated[key] = None

    def established(self, key: Key) -> bool:
        """`key` completed its handshake. False if established connections are at their limit
        (counted; the shell closes it) or `key` was not admitted here (already dropped)."""
        if key not in self._half_open:
            return False
        self._forget(key)
        if len(self._established) >= self.limits.max_established:
            self.refused_full += 1
            return False
        self._established.add(key)
        return True

    def closed(self, key: Key) -> None:
        """`key` is gone (closed, terminated, dropped); forget it wherever it is."""
        self._forget(key)
        self._established.discard(key)

    def expire(self, now: float) -> list[Key]:
        """Half-open connections whose handshake timeout has passed, removed from the books;
        the shell drops them."""
        expired: list[Key] = []
        for key, entry in self._half_open.items():
            if entry.deadline > now:
                break
            expired.append(key)
        for key in expired:
            self._forget(key)
        self.expired += len(expired)
        return expired

    def next_deadline(self) -> float | None:
        """When `expire` next has work: the oldest half-open connection's deadline."""
        for entry in self._half_open.values():
            return entry.deadline
        return None

    def _forget(self, key: Key) -> None:
        entry = self._half_open.pop(key, None)
        if entry is None:
            return
        if not entry.validated:
            del self._unvalidated[key]
        from_source = self._by_source[entry.source]
        del from_source[key]
        if not from_source:
            del self._by_source[entry.source]
