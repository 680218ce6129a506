"""`RangeSet`: a set of integers kept as sorted, merged half-open ranges [start, end).

Streams use it for the byte ranges a peer acknowledged or delivered, which arrive in any order on
mix paths; it stays small because ranges merge as gaps fill.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator


class RangeSet:
    """Sorted, disjoint, non-adjacent half-open ranges."""

    __slots__ = ("_starts", "_ends")

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []

    def add(self, start: int, end: int) -> None:
        """Add [start, end), merging with every range it touches or overlaps."""
        if end <= start:
            return
        starts, ends = self._starts, self._ends
        lo = bisect.bisect_left(ends, start)  # first range that ends at or after `start`
        hi = bisect.bisect_right(starts, end)  # first range that starts after `end`
        if lo < hi:
            start = min(start, starts[lo])
            end = max(end, ends[hi - 1])
        starts[lo:hi] = [start]
        ends[lo:hi] = [end]

    def subtract(self, start: int, end: int) -> None:
        """Remove [start, end)."""
        if end <= start:
            return
        kept: list[tuple[int, int]] = []
        for s, e in zip(self._starts, self._ends):
            if e <= start or s >= end:
                kept.append((s, e))
                continue
            if s < start:
                kept.append((s, start))
            if e > end:
                kept.append((end, e))
        self._starts = [s for s, _ in kept]
        self._ends = [e for _, e in kept]

    def contains(self, start: int, end: int) -> bool:
        """Whether all of [start, end) is in the set."""
        if end <= start:
            return True
        i = bisect.bisect_right(self._starts, start) - 1
        return i >= 0 and self._ends[i] >= end

    def missing(self, start: int, end: int) -> Iterator[tuple[int, int]]:
        """The parts of [start, end) not in the set, in order."""
        cursor = start
        i = max(0, bisect.bisect_right(self._starts, start) - 1)
        while cursor < end and i < len(self._starts):
            s, e = self._starts[i], self._ends[i]
            if e <= cursor:
                i += 1
                continue
            if s >= end:
                break
            if s > cursor:
                yield cursor, s
            cursor = max(cursor, e)
            i += 1
        if cursor < end:
            yield cursor, end

    def first(self) -> tuple[int, int] | None:
        return (self._starts[0], self._ends[0]) if self._starts else None

    def pop_first(self, limit: int) -> tuple[int, int] | None:
        """Remove and return the first range, cut to at most `limit` integers."""
        if not self._starts:
            return None
        start, end = self._starts[0], self._ends[0]
        if end - start > limit:
            self._starts[0] = start + limit
            return start, start + limit
        del self._starts[0], self._ends[0]
        return start, end

    def prefix_end(self, origin: int) -> int:
        """The end of the range that starts at or before `origin` and covers it, else `origin`."""
        if self._starts and self._starts[0] <= origin < self._ends[0]:
            return self._ends[0]
        return origin

    def drop_below(self, bound: int) -> None:
        """Forget everything below `bound` (bytes the stream has freed)."""
        while self._starts and self._ends[0] <= bound:
            del self._starts[0], self._ends[0]
        if self._starts and self._starts[0] < bound:
            self._starts[0] = bound

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(zip(self._starts, self._ends))

    def __len__(self) -> int:
        return len(self._starts)

    def __bool__(self) -> bool:
        return bool(self._starts)

    def __repr__(self) -> str:
        return "RangeSet(" + ", ".join(f"[{s}, {e})" for s, e in self) + ")"
