"""A sliding anti-replay window over 64-bit record sequence numbers (in the spirit of RFC 6479).

Records travel over lossy, reordering mix paths, so a receiver must accept any sequence number
it has not seen within the last `size` (default 2^20) of the highest one, and refuse the rest.
A flat 2^20-bit map costs 128 KiB per direction whether a session sends ten records or ten
million; this one keeps the map in 2 KiB pages allocated on first use and freed as they fall out
of the window, so memory follows the traffic (at most `size` bits plus one page). A page grows
to its 2 KiB as its sequence numbers are used (doubling from `_FIRST_PAGE_BYTES`), so a session
that received a few dozen records holds a few bytes of map, not 2 KiB: at an exit gateway with
100,000 idle sessions that is 0.2 GB. Bytes beyond a page's current length are unmarked bits.
"""

from __future__ import annotations

_PAGE_SHIFT = 14  # 16,384 sequence numbers (2 KiB of bits) per page
_PAGE_MASK = (1 << _PAGE_SHIFT) - 1
_PAGE_BYTES = (1 << _PAGE_SHIFT) // 8
_FIRST_PAGE_BYTES = 16  # a new page's length; it doubles, up to _PAGE_BYTES, as bits beyond are marked


class ReplayWindow:
    """Which sequence numbers have been accepted; `size` must be a multiple of the page size."""

    __slots__ = ("size", "highest", "_pages", "_oldest_page")

    def __init__(self, size: int = 1 << 20) -> None:
        if size <= 0 or size & _PAGE_MASK:
            raise ValueError(f"replay window size must be a positive multiple of {1 << _PAGE_SHIFT}")
        self.size = size
        self.highest = -1
        self._pages: dict[int, bytearray] = {}
        self._oldest_page = 0

    def is_fresh(self, seq: int) -> bool:
        """True if `seq` is newer than the window's floor and has not been marked."""
        if seq > self.highest:
            return True
        if seq <= self.highest - self.size:
            return False
        page = self._pages.get(seq >> _PAGE_SHIFT)
        if page is None:
            return True
        bit = seq & _PAGE_MASK
        byte = bit >> 3
        return byte >= len(page) or not (page[byte] >> (bit & 7)) & 1

    def is_too_old(self, seq: int) -> bool:
        """True if `seq` has fallen below the window (distinguishes "old" from "replayed")."""
        return seq <= self.highest - self.size

    def mark(self, seq: int) -> None:
        """Record `seq` as accepted. Call only after the record authenticated."""
        page_no = seq >> _PAGE_SHIFT
        bit = seq & _PAGE_MASK
        byte = bit >> 3
        page = self._pages.get(page_no)
        if page is None:
            length = _FIRST_PAGE_BYTES
            while length <= byte:
                length *= 2
            page = self._pages[page_no] = bytearray(min(length, _PAGE_BYTES))
        elif byte >= len(page):
            length = 2 * len(page)
            while length <= byte:
                length *= 2
            page.extend(bytes(min(length, _PAGE_BYTES) - len(page)))
        page[byte] |= 1 << (bit & 7)
        if seq > self.highest:
            self.highest = seq
            floor_page = max(0, (seq - self.size + 1) >> _PAGE_SHIFT)
            if floor_page > self._oldest_page:
                if floor_page - self._oldest_page > len(self._pages):
                    for stale in [p for p in self._pages if p < floor_page]:
                        del self._pages[stale]
                else:
                    for stale in range(self._oldest_page, floor_page):
                        self._pages.pop(stale, None)
                self._oldest_page = floor_page

    @property
    def pages_in_use(self) -> int:
        """Allocated pages, each at most 2 KiB (for memory accounting and tests)."""
        return len(self._pages)
