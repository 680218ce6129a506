"""The receiver's side of loss recovery, sans-I/O: which packet numbers arrived, the ACK ranges
that say so, and when an ACK is due.

ACKs are expensive on a mixnet (the exit answers on single-use reply blocks), so they are
batched: one ACK per `ack_every` ack-eliciting packets, or when the oldest unacknowledged one has
waited `max_ack_delay_s`. A gap (a packet overtaken by later ones) is no reason to hurry, unlike
QUIC: on mix paths nearly every packet is overtaken. Re-exported by `nyx.stream.recovery`.
"""

from __future__ import annotations

from bisect import bisect_right


class AckTracker:
    """Received pns as at most `max_ranges` disjoint, non-adjacent ranges above a floor.

    Bounded memory: when a new range would make `max_ranges + 1`, the lowest range is dropped
    and the floor rises above it; the floor also follows `largest - window + 1`. A pn below the
    floor cannot be told from a replay of a forgotten one, so `on_packet` refuses it (False,
    counted in `too_old_total`). That is safe: it is never acknowledged, so the sender declares
    it lost (it already has, that long after) and re-sends its frames in a new packet.

    Every ACK repeats all ranges above the floor (no ACK-of-ACK bookkeeping): a lost ACK costs
    nothing but the wait for the next one, which ACK loss on reply paths makes common.
    """

    __slots__ = (
        "max_ack_delay_s", "ack_every", "max_ranges", "window", "largest", "duplicates_total",
        "too_old_total", "_lows", "_highs", "_floor", "_largest_at", "_pending", "_first_pending_at",
        "_count_due_at",
    )

    def __init__(self, *, max_ack_delay_s: float = 0.1, ack_every: int = 8, max_ranges: int = 32,
                 window: int = 4096) -> None:
        if max_ack_delay_s < 0 or ack_every < 1 or max_ranges < 1 or window < 1:
            raise ValueError("need max_ack_delay_s >= 0, ack_every >= 1, max_ranges >= 1, window >= 1")
        self.max_ack_delay_s = max_ack_delay_s
        self.ack_every = ack_every
        self.max_ranges = max_ranges
        self.window = window
        self.largest: int | None = None
        self.duplicates_total = 0
        self.too_old_total = 0
        self._lows: list[int] = []  # ascending; _highs[i] + 1 < _lows[i + 1]
        self._highs: list[int] = []
        self._floor = 0
        self._largest_at = 0.0
        self._pending = 0  # ack-eliciting packets since the last build
        self._first_pending_at: float | None = None
        self._count_due_at: float | None = None

    @property
    def floor(self) -> int:
        """The lowest pn this tracker can still answer for."""
        return self._floor

    def on_packet(self, pn: int, now: float, ack_eliciting: bool) -> bool:
        """Record an arrival. False for a duplicate or a pn below the floor: drop that record."""
        if pn < 0:
            raise ValueError(f"packet numbers are non-negative, got {pn}")
        if pn < self._floor:
            self.too_old_total += 1
            return False
        lows, highs = self._lows, self._highs
        i = bisect_right(lows, pn) - 1  # the range starting at or below pn, if any
        if i >= 0 and pn <= highs[i]:
            self.duplicates_total += 1
            return False
        joins_left = i >= 0 and highs[i] == pn - 1
        joins_right = i + 1 < len(lows) and lows[i + 1] == pn + 1
        if joins_left and joins_right:
            highs[i] = highs[i + 1]
            del lows[i + 1], highs[i + 1]
        elif joins_left:
            highs[i] = pn
        elif joins_right:
            lows[i + 1] = pn
        else:
            lows.insert(i + 1, pn)
            highs.insert(i + 1, pn)
        if self.largest is None or pn > self.largest:
            self.largest, self._largest_at = pn, now
            self._raise_floor(pn - self.window + 1)
        if len(lows) > self.max_ranges:
            self._raise_floor(highs[0] + 1)
        if ack_eliciting:
            self._pending += 1
            if self._first_pending_at is None:
                self._first_pending_at = now
            if self._pending >= self.ack_every and self._count_due_at is None:
                self._count_due_at = now
        return True

    def _raise_floor(self, floor: int) -> None:
        if floor <= self._floor:
            return
        self._floor = floor
        while self._highs and self._highs[0] < floor:
            del self._lows[0], self._highs[0]
        if self._lows and self._lows[0] < floor:
            self._lows[0] = floor

    def ack_due(self, now: float) -> bool:
        """An ACK should go now: `ack_every` ack-eliciting packets since the last one, or the
        oldest of them has waited `max_ack_delay_s`."""
        deadline = self.deadline()
        return deadline is not None and now >= deadline

    def deadline(self) -> float | None:
        """When `ack_due` becomes true (by count: the arrival that reached `ack_every`, possibly
        past; by time: the oldest pending arrival + max_ack_delay_s); None if nothing to ack."""
        if self._first_pending_at is None:
            return None
        by_time = self._first_pending_at + self.max_ack_delay_s
        return by_time if self._count_due_at is None else min(by_time, self._count_due_at)

    def ranges(self) -> tuple[tuple[int, int], ...]:
        """Every received range above the floor, descending, as an ACK frame carries them."""
        return tuple(zip(reversed(self._lows), reversed(self._highs)))

    def build(self, now: float) -> tuple[tuple[tuple[int, int], ...], float]:
        """The ACK to send now: (ranges descending, seconds since the largest pn arrived).
        Resets the due state; the ranges stay and are repeated in the next ACK."""
        self._pending = 0
        self._first_pending_at = self._count_due_at = None
        if self.largest is None:
            return (), 0.0
        return self.ranges(), max(0.0, now - self._largest_at)
