"""The responder's memory of recent Init messages, so a replayed Init is refused.

An Init carries a coarse timestamp (whole seconds). The responder accepts it only within
`window_s` of its own clock and remembers a digest of every accepted Init until that Init could
no longer pass the timestamp check; so a replay is caught however it is timed, with memory bounded
by `capacity` entries (32 bytes each plus overhead). When the cache is full the responder refuses
new handshakes with BUSY rather than forgetting: failing closed keeps the replay guarantee.

Coarse timestamps are a deliberate trade-off: they let the responder bound its memory, at the
cost of revealing the initiator's clock to within a second to its gateway (documented in
docs/protocol.md; clients should run NTP-synchronised clocks).
"""

from __future__ import annotations

import heapq

from nyx.stream.handshake.errors import CloseCode, HandshakeError


class InitReplayCache:
    """Digests of accepted Init messages, each kept until its timestamp leaves the window."""

    def __init__(self, window_s: float = 120.0, capacity: int = 1 << 16) -> None:
        if window_s <= 0 or capacity <= 0:
            raise ValueError("replay window and capacity must be positive")
        self.window_s = window_s
        self.capacity = capacity
        self._seen: set[bytes] = set()
        self._expiry: list[tuple[float, bytes]] = []

    def __len__(self) -> int:
        return len(self._seen)

    def admit(self, digest: bytes, timestamp_s: int, now: float) -> None:
        """Remember `digest`, or raise STALE / REPLAYED / BUSY."""
        if abs(now - timestamp_s) > self.window_s:
            raise HandshakeError(
                CloseCode.STALE,
                f"Init timestamp is {now - timestamp_s:+.0f} s from the responder's clock "
                f"(window ±{self.window_s:.0f} s); check the initiator's clock",
            )
        expiry = self._expiry
        while expiry and expiry[0][0] < now:
            self._seen.discard(heapq.heappop(expiry)[1])
        if digest in self._seen:
            raise HandshakeError(CloseCode.REPLAYED, "this Init was already received (a replay)")
        if len(self._seen) >= self.capacity:
            raise HandshakeError(CloseCode.BUSY, "too many handshakes within the replay window; retry later")
        self._seen.add(digest)
        heapq.heappush(expiry, (timestamp_s + self.window_s, digest))
