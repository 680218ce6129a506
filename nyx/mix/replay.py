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
"""

from __future__ import annotations

from array import array

FALSE_POSITIVE_RATE = 2.5 / 2**32  # per checked packet, at full load (bound, see above)
BYTES_PER_TAG = 8


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

    def epochs(self) -> list[int]:
        return sorted(self._filters)

    @property
    def memory_bytes(self) -> int:
        return sum(f.memory_bytes for f in self._filters.values())
