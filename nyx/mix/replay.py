"""Replay protection: the per-hop tags a mix has seen, per key epoch, in bounded memory.

A replayed packet yields the same shared secret and so the same 16-byte tag at every honest mix;
refusing a tag seen before stops an attacker from replaying a packet to watch where it goes.
Tags only need keeping while the key that produced them is accepted, so there is one table per
key epoch and it is freed when the key retires (see `KeyRing.rotate`).

The table is a fixed array of 32-bit fingerprints with open addressing (linear probing), sized to
twice its capacity: 8 bytes of memory per tag of capacity, about 0.3 us per check in CPython (a
Bloom filter with a comparable rate needs ~20 bit probes per packet, several microseconds in
Python). The slot comes from tag bits 0..31 (mod the table size) and the fingerprint from bits
32..63, so a new tag is wrongly taken for a replay only if a probed slot holds its exact
fingerprint: at the full load factor of 1/2 an unsuccessful search probes 2.5 slots on average
(Knuth), so the false-positive rate is at most 2.5 / 2**32 = 5.8e-10 per packet
(`FALSE_POSITIVE_RATE`). At capacity the table refuses new tags rather than let that rate grow:
size it as the peak packet rate times the time a key is accepted (epoch_s + 2 * overlap_s);
`python -m nyx.mix` does so from `max_rate_pps`.

A table survives a restart as its raw slots (`table_bytes` / `from_table`, 32-bit little-endian,
8 bytes per tag of capacity); `nyx.mix.replay_store` frames them into the state file.
"""

from __future__ import annotations

import sys
from array import array

FALSE_POSITIVE_RATE = 2.5 / 2**32  # per checked packet, at full load (bound, see above)
BYTES_PER_TAG = 8
SLOT_BYTES = 4  # one 32-bit fingerprint per slot, two slots per tag of capacity

if array("I").itemsize != SLOT_BYTES:  # the saved format and memory_bytes assume 32-bit slots
    raise ImportError("nyx.mix.replay needs a 4-byte array('I') on this platform")


class ReplayCacheFull(Exception):
    """The epoch's table reached its capacity; the packet cannot be checked and must be dropped."""


class ReplayFilter:
    """The tags of one key epoch."""

    __slots__ = ("capacity", "count", "_table", "_slots")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"a replay filter needs a capacity of at least 1 tag, not {capacity}")
        self.capacity = capacity
        self.count = 0
        self._slots = 2 * capacity  # load factor at most 1/2
        self._table = array("I", [0]) * self._slots  # no transient copy of a large zero buffer

    @property
    def memory_bytes(self) -> int:
        return len(self._table) * self._table.itemsize

    def table_bytes(self) -> bytes:
        """A copy of the slots as little-endian 32-bit words (what a save writes).

        One memcpy (17 ms for the default 4.2 M-tag table): cheap enough to take on the event
        loop, so the copy is consistent and the slow part (writing it) can go to a thread.
        """
        if sys.byteorder == "little":
            return self._table.tobytes()
        copy = array("I", self._table)
        copy.byteswap()
        return copy.tobytes()

    @classmethod
    def from_table(cls, capacity: int, count: int, table: bytes | memoryview) -> ReplayFilter:
        """The filter whose slots are `table` (from `table_bytes`); ValueError if they cannot be.

        The slots are checked, not trusted: `add` only terminates while a slot is free, so the
        number of filled slots must equal `count` and stay within `capacity`.
        """
        if capacity < 1:
            raise ValueError(f"a replay filter needs a capacity of at least 1 tag, not {capacity}")
        if len(table) != 2 * capacity * SLOT_BYTES:
            raise ValueError(f"a {capacity}-tag replay table is {2 * capacity * SLOT_BYTES} bytes, not {len(table)}")
        slots = array("I")
        slots.frombytes(table)
        if sys.byteorder != "little":
            slots.byteswap()
        filled = len(slots) - slots.count(0)
        if filled != count or count > capacity:
            raise ValueError(f"replay table holds {filled} tags but says {count} (capacity {capacity})")
        restored = cls.__new__(cls)
        restored.capacity, restored.count, restored._slots, restored._table = capacity, count, len(slots), slots
        return restored

    def add(self, tag: bytes) -> bool:
        """Record `tag`; True if it is new, False if it was seen before (a replay).

        Raises ReplayCacheFull if the tag is new and the table is at capacity.
        """
        value = int.from_bytes(tag[:8], "little")
        fingerprint = (value >> 32) or 1  # 0 marks an empty slot
        table, slots = self._table, self._slots
        slot = (value & 0xFFFFFFFF) % slots
        while True:
            held = table[slot]
            if held == 0:
                if self.count >= self.capacity:
                    raise ReplayCacheFull(
                        f"replay filter full at {self.capacity} tags: rotate the key epoch sooner "
                        "or raise the replay capacity"
                    )
                table[slot] = fingerprint
                self.count += 1
                return True
            if held == fingerprint:
                return False
            slot += 1
            if slot == slots:
                slot = 0


class ReplayCache:
    """One `ReplayFilter` per key epoch, created on first use and dropped with the epoch's key."""

    __slots__ = ("capacity", "_filters")

    def __init__(self, capacity_per_epoch: int = 1 << 20) -> None:
        self.capacity = capacity_per_epoch
        self._filters: dict[int, ReplayFilter] = {}

    def check(self, epoch: int, tag: bytes) -> str | None:
        """None if the packet may proceed, else a drop reason ("replay" or "replay_full")."""
        table = self._filters.get(epoch)
        if table is None:
            table = self._filters[epoch] = ReplayFilter(self.capacity)
        try:
            return None if table.add(tag) else "replay"
        except ReplayCacheFull:
            return "replay_full"

    def retire(self, epoch: int) -> None:
        self._filters.pop(epoch, None)

    def install(self, epoch: int, table: ReplayFilter) -> None:
        """Use `table` (restored from disk) for `epoch`; it keeps its own capacity."""
        self._filters[epoch] = table

    def filters(self) -> dict[int, ReplayFilter]:
        """The tables by epoch (a new dict; the tables themselves are live)."""
        return dict(self._filters)

    def epochs(self) -> list[int]:
        return sorted(self._filters)

    @property
    def memory_bytes(self) -> int:
        return sum(f.memory_bytes for f in self._filters.values())
