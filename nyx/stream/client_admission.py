"""`ClientAdmission`: the entry gateway's per-source limit on client handshakes, sans-I/O.

A client handshake is a client naming itself to the gateway on a new QUIC connection (its
first packet under a new client id). Each costs the gateway a TLS handshake and a table entry,
and a client that opens a fresh connection per request could otherwise hide from every other
limit, so new client ids are rationed per UDP source address by a token bucket: `rate_per_min`
(the seed's 30 per minute, SCL-002) with a burst of as many. Why the source address and not the
id: ids are chosen by the client and free, addresses are not (behind a NAT several users share
one, which is why the burst is a whole minute's worth).

    admission = ClientAdmission(rate_per_min=30)
    if not admission.admit(source_host, now): refuse the client (close its connection, count it)

The table is bounded (`max_sources`): beyond it the least recently refilled sources are
forgotten, which can only hand a forgotten source a fresh burst, never refuse an honest one.
"""

from __future__ import annotations

import collections

__all__ = ["ClientAdmission"]


class ClientAdmission:
    """Token buckets by source address: `admit` spends one token or says no."""

    def __init__(self, rate_per_min: float = 30.0, burst: float | None = None, max_sources: int = 65_536) -> None:
        if rate_per_min <= 0 or max_sources < 1:
            raise ValueError("rate_per_min and max_sources must be positive")
        self.rate_per_s = rate_per_min / 60.0
        self.burst = float(burst if burst is not None else max(1.0, rate_per_min))
        self.max_sources = max_sources
        self._buckets: collections.OrderedDict[str, tuple[float, float]] = collections.OrderedDict()
        self.admitted = 0
        self.refused = 0

    def admit(self, source: str, now: float) -> bool:
        """Spend one of `source`'s tokens (True), or refuse (False, counted) when it has none."""
        tokens, last = self._buckets.pop(source, (self.burst, now))
        tokens = min(self.burst, tokens + max(0.0, now - last) * self.rate_per_s)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
            self.admitted += 1
        else:
            self.refused += 1
        self._buckets[source] = (tokens, now)
        while len(self._buckets) > self.max_sources:
            self._buckets.popitem(last=False)
        return allowed

    def retry_after_s(self, source: str, now: float) -> float:
        """How long until `source` has a token again (0 if it has one)."""
        tokens, last = self._buckets.get(source, (self.burst, now))
        tokens = min(self.burst, tokens + max(0.0, now - last) * self.rate_per_s)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate_per_s
