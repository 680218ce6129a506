"""Mixnet messages: the 8-byte envelope that tells an exit which session a Sphinx message belongs
to and what it carries, and the fragments that spread a handshake message over several messages.
Sans-I/O; every parser takes untrusted bytes and returns a value or raises `EnvelopeError`.

    envelope = kind u8 | session_id [7] | body            (at most 646 bytes: one Sphinx message)
    HANDSHAKE body = message_id u16 | index u8 | count u8 | chunk   (at most 634 chunk bytes)

Kinds: HANDSHAKE (a fragment of a handshake message), RECORD (one sealed record for
`Session.receive_record`, at most `MAX_RECORD_BYTES` = 638), FEC_SHARD (a `nyx.stream.blocks`
message: configure `BlockSender(MAX_BODY_BYTES)`), SURB (one encoded SURB, opaque, at most 638
bytes; a real one is 552: how a client that is still opening its session gives the exit a way to
answer, see `nyx.stream.opening`).

**The session id** is 7 random bytes the client draws per session (`new_session_id`). It sits
inside the Sphinx payload, which every mix re-encrypts with its Lioness layer, so only the
exit gateway reads it on the way out (and only the client, after removing every layer of its
SURB, on the way back); no mix ever sees it. Seven bytes are enough: with n sessions alive at
one exit, the chance that any two share an id is about n^2 / 2^57, 6.9e-8 for 100,000 sessions.
A collision costs at most one handshake (the exit refuses an Init for an id it already holds and
the client retries with a fresh id); it never mixes two sessions' data, since every record opens
only under its own session's keys.

**Reassembly.** Mixes reorder nearly every packet, lose some and an attacker can replay or forge
some, so `Reassembler` takes fragments in any order with duplicates, delivers each message once,
and bounds what a flood can make it hold: `max_pending` partial messages (oldest evicted first),
`max_message_bytes` each, `max_buffered_bytes` in all, `timeout_s` of age (`expire(now)`). A
fragment that contradicts what arrived before (another count, another chunk at an index) discards
the partial message: the reassembler cannot tell which side is forged, and the handshake
authenticates its messages anyway, so it keeps neither and lets the sender's retransmission
(the handshake layer resends each message until it is answered) assemble the message again.
"""

from __future__ import annotations

import collections
import secrets
import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

__all__ = [
    "ENVELOPE_ERROR_REASONS", "FEC_SHARD", "FRAGMENT_HEADER_BYTES", "HANDSHAKE", "HEADER_BYTES", "MAX_BODY_BYTES",
    "MAX_CHUNK_BYTES", "MAX_FRAGMENTS", "MAX_HANDSHAKE_BYTES", "MESSAGE_BYTES", "RECORD", "SESSION_ID_BYTES", "SURB",
    "Envelope", "EnvelopeError", "Fragment", "Kind", "Reassembler", "fragment_count", "fragments",
    "new_session_id", "parse_fragment", "unwrap", "wrap",
]

#: One Sphinx message (`nyx.mix.packet.DEFAULT_FORMAT.message_bytes`; a test holds them equal).
MESSAGE_BYTES: Final = 646
SESSION_ID_BYTES: Final = 7
#: kind u8 | session_id [7]
HEADER_BYTES: Final = 1 + SESSION_ID_BYTES
#: The largest body: exactly `nyx.stream.session.MAX_RECORD_BYTES`.
MAX_BODY_BYTES: Final = MESSAGE_BYTES - HEADER_BYTES
#: message_id u16 | index u8 | count u8
FRAGMENT_HEADER_BYTES: Final = 4
MAX_CHUNK_BYTES: Final = MAX_BODY_BYTES - FRAGMENT_HEADER_BYTES
#: 16 fragments hold 10,144 bytes, room for the largest handshake message (a pq-alt Init, 6,700).
MAX_FRAGMENTS: Final = 16
MAX_HANDSHAKE_BYTES: Final = MAX_FRAGMENTS * MAX_CHUNK_BYTES

ENVELOPE_ERROR_REASONS: Final = ("truncated", "size", "kind", "count", "index")

_FRAGMENT_HEADER: Final = struct.Struct(">HBB")


class Kind(IntEnum):
    """What an envelope's body is; the integer is its wire byte."""

    HANDSHAKE = 0x01
    RECORD = 0x02
    FEC_SHARD = 0x03
    SURB = 0x04


HANDSHAKE: Final = Kind.HANDSHAKE
RECORD: Final = Kind.RECORD
FEC_SHARD: Final = Kind.FEC_SHARD
SURB: Final = Kind.SURB
_KINDS: Final = {int(kind): kind for kind in Kind}


class EnvelopeError(ValueError):
    """A message from the mixnet could not be parsed; `reason` is one of ENVELOPE_ERROR_REASONS
    (for drop counters). Anyone can send an exit bytes, so this is a drop, not a session error."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Envelope:
    kind: Kind
    session_id: bytes
    body: bytes


def new_session_id() -> bytes:
    """A fresh random session id (drawn by the client; see the module docstring for why 7 bytes)."""
    return secrets.token_bytes(SESSION_ID_BYTES)


def wrap(kind: Kind | int, session_id: bytes, body: bytes) -> bytes:
    """One Sphinx message: `kind | session_id | body`. ValueError for a message we must not send."""
    if kind not in _KINDS:
        raise ValueError(f"unknown envelope kind {kind!r}")
    if len(session_id) != SESSION_ID_BYTES:
        raise ValueError(f"a session id is {SESSION_ID_BYTES} bytes, not {len(session_id)}")
    if len(body) > MAX_BODY_BYTES:
        raise ValueError(f"an envelope body is at most {MAX_BODY_BYTES} bytes, not {len(body)}")
    return bytes((kind,)) + session_id + body


def unwrap(message: bytes) -> Envelope:
    """Split a delivered message into kind, session id and body; EnvelopeError if malformed."""
    if len(message) < HEADER_BYTES:
        raise EnvelopeError("truncated", f"an envelope is at least {HEADER_BYTES} bytes, got {len(message)}")
    if len(message) > MESSAGE_BYTES:
        raise EnvelopeError("size", f"an envelope is at most {MESSAGE_BYTES} bytes, got {len(message)}")
    kind = _KINDS.get(message[0])
    if kind is None:
        raise EnvelopeError("kind", f"unknown envelope kind 0x{message[0]:02x}")
    return Envelope(kind, bytes(message[1:HEADER_BYTES]), bytes(message[HEADER_BYTES:]))


# ------------------------------------------------------------------------------------ fragments


@dataclass(frozen=True, slots=True)
class Fragment:
    """Chunk `index` of the `count` that make handshake message `message_id` of a session."""

    message_id: int
    index: int
    count: int
    chunk: bytes


def fragment_count(size_bytes: int, message_bytes: int = MESSAGE_BYTES) -> int:
    """How many Sphinx messages a handshake message of `size_bytes` takes (an empty one takes 1)."""
    chunk_bytes = message_bytes - HEADER_BYTES - FRAGMENT_HEADER_BYTES
    if chunk_bytes < 1:
        raise ValueError(f"a {message_bytes}-byte message leaves no room for a fragment")
    return max(1, -(-size_bytes // chunk_bytes))


def fragments(session_id: bytes, message_id: int, handshake_message: bytes, message_bytes: int = MESSAGE_BYTES) -> list[bytes]:
    """The complete HANDSHAKE envelopes that carry `handshake_message`, in index order.

    `message_id` (u16) names the message within the session; a retransmission reuses it, so
    fragments of both copies combine. Every chunk but the last is full.
    """
    if not 0 <= message_id <= 0xFFFF:
        raise ValueError(f"message_id {message_id} does not fit in u16")
    if message_bytes > MESSAGE_BYTES:
        raise ValueError(f"a Sphinx message carries at most {MESSAGE_BYTES} bytes, not {message_bytes}")
    count = fragment_count(len(handshake_message), message_bytes)
    if count > MAX_FRAGMENTS:
        raise ValueError(
            f"a {len(handshake_message)}-byte handshake message needs {count} fragments; at most {MAX_FRAGMENTS}"
        )
    if len(session_id) != SESSION_ID_BYTES:
        raise ValueError(f"a session id is {SESSION_ID_BYTES} bytes, not {len(session_id)}")
    chunk_bytes = message_bytes - HEADER_BYTES - FRAGMENT_HEADER_BYTES
    prefix = bytes((HANDSHAKE,)) + session_id
    data = bytes(handshake_message)
    return [
        prefix + _FRAGMENT_HEADER.pack(message_id, index, count) + data[index * chunk_bytes : (index + 1) * chunk_bytes]
        for index in range(count)
    ]


def parse_fragment(body: bytes) -> Fragment:
    """A HANDSHAKE envelope's body as a Fragment; EnvelopeError if malformed."""
    if len(body) < FRAGMENT_HEADER_BYTES:
        raise EnvelopeError("truncated", f"a fragment is at least {FRAGMENT_HEADER_BYTES} bytes, got {len(body)}")
    message_id, index, count = _FRAGMENT_HEADER.unpack_from(body)
    if not 1 <= count <= MAX_FRAGMENTS:
        raise EnvelopeError("count", f"a handshake message has 1..{MAX_FRAGMENTS} fragments, not {count}")
    if index >= count:
        raise EnvelopeError("index", f"fragment index {index} of a {count}-fragment message")
    return Fragment(message_id, index, count, bytes(body[FRAGMENT_HEADER_BYTES:]))


# ------------------------------------------------------------------------------------ reassembly


class _Partial:
    __slots__ = ("chunks", "count", "first_seen", "missing", "size_bytes")

    def __init__(self, count: int, now: float) -> None:
        self.count = count
        self.chunks: list[bytes | None] = [None] * count
        self.missing = count
        self.size_bytes = 0
        self.first_seen = now


class Reassembler:
    """Handshake fragments in (any order, duplicates, loss, forgeries), whole messages out once.

    Bounds, whatever arrives: at most `max_pending` partial messages (a new one evicts the
    oldest, counted in `evicted`), `max_message_bytes` each and `max_buffered_bytes` over all
    (the oldest are evicted to make room), none older than `timeout_s` once `expire(now)` runs
    (`expired`). Delivered messages are remembered (at most `max_pending`, for `timeout_s`) so a
    late duplicate fragment is ignored (`duplicates`) instead of delivering the message again;
    a gateway that sees an Init fragment for a session it already answered resends its Accept
    itself. Counters are plain attributes, published by the shell.
    """

    def __init__(
        self,
        *,
        max_pending: int = 4096,
        max_message_bytes: int = 16 * 1024,
        max_buffered_bytes: int = 16 * 1024 * 1024,
        timeout_s: float = 30.0,
    ) -> None:
        if max_pending < 1 or max_message_bytes < 1 or max_buffered_bytes < max_message_bytes or timeout_s <= 0:
            raise ValueError("reassembler limits must be positive, with max_buffered_bytes >= max_message_bytes")
        self.max_pending = max_pending
        self.max_message_bytes = max_message_bytes
        self.max_buffered_bytes = max_buffered_bytes
        self.timeout_s = timeout_s
        # Both maps are in arrival order, so the oldest entry is always first.
        self._partials: collections.OrderedDict[tuple[bytes, int], _Partial] = collections.OrderedDict()
        self._delivered: collections.OrderedDict[tuple[bytes, int], float] = collections.OrderedDict()
        self.buffered_bytes = 0
        self.completed = 0
        self.evicted = 0
        self.expired = 0
        self.contradictions = 0
        self.duplicates = 0
        self.oversized = 0

    @property
    def pending(self) -> int:
        """Partial messages held now."""
        return len(self._partials)

    def receive(self, session_id: bytes, fragment: Fragment, now: float) -> bytes | None:
        """Take one fragment; the whole message when this fragment completes it, else None."""
        key = (session_id, fragment.message_id)
        if key in self._delivered:
            self.duplicates += 1
            return None
        count, index, chunk = fragment.count, fragment.index, fragment.chunk
        partial = self._partials.get(key)
        if not 0 <= index < count or (partial is not None and partial.count != count):
            self.contradictions += 1
            self._discard(key)
            return None
        if partial is None:
            if count == 1:
                if len(chunk) > self.max_message_bytes:
                    self.oversized += 1
                    return None
                self._deliver(key, now)
                return chunk
            partial = _Partial(count, now)
            self._partials[key] = partial
            while len(self._partials) > self.max_pending:
                self._evict_oldest()
        held = partial.chunks[index]
        if held is not None:
            if held == chunk:
                self.duplicates += 1
            else:
                self.contradictions += 1
                self._discard(key)
            return None
        if partial.size_bytes + len(chunk) > self.max_message_bytes:
            self.oversized += 1
            self._discard(key)
            return None
        partial.chunks[index] = chunk
        partial.missing -= 1
        partial.size_bytes += len(chunk)
        self.buffered_bytes += len(chunk)
        if partial.missing == 0:
            self._discard(key)
            self._deliver(key, now)
            return b"".join(partial.chunks)  # type: ignore[arg-type]  # none is None now
        while self.buffered_bytes > self.max_buffered_bytes:
            self._evict_oldest()
        return None

    def expire(self, now: float) -> None:
        """Drop partial messages older than `timeout_s` and forget old deliveries."""
        # first_seen + timeout_s, the same sum deadline() returns, so expire(deadline()) drops.
        while self._partials:
            key, partial = next(iter(self._partials.items()))
            if partial.first_seen + self.timeout_s > now:
                break
            self._discard(key)
            self.expired += 1
        while self._delivered and next(iter(self._delivered.values())) + self.timeout_s <= now:
            self._delivered.popitem(last=False)

    def deadline(self) -> float | None:
        """When `expire` next has something to drop (for the shell's one timer), or None."""
        oldest = next(iter(self._partials.values()), None)
        times = [oldest.first_seen] if oldest is not None else []
        times += [next(iter(self._delivered.values()))] if self._delivered else []
        return min(times) + self.timeout_s if times else None

    def _deliver(self, key: tuple[bytes, int], now: float) -> None:
        self.completed += 1
        self._delivered[key] = now
        if len(self._delivered) > self.max_pending:
            self._delivered.popitem(last=False)

    def _discard(self, key: tuple[bytes, int]) -> None:
        partial = self._partials.pop(key, None)
        if partial is not None:
            self.buffered_bytes -= partial.size_bytes

    def _evict_oldest(self) -> None:
        key = next(iter(self._partials))
        self._discard(key)
        self.evicted += 1
