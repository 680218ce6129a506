"""Bounded per-peer send queues (sans-I/O).

A mix must never build an unbounded backlog: under overload the honest outcomes are a counted
drop or backpressure on the sender. This queue does both and knows nothing about sockets or loops.
"""

from __future__ import annotations

from collections import deque


class SendQueue:
    """A FIFO of packets with a fixed capacity; `offer` beyond it is refused and counted."""

    __slots__ = ("capacity", "dropped", "_packets")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"a send queue needs capacity >= 1, got {capacity}")
        self.capacity = capacity
        self.dropped = 0
        self._packets: deque[bytes] = deque()

    def __len__(self) -> int:
        return len(self._packets)

    @property
    def has_room(self) -> bool:
        return len(self._packets) < self.capacity

    def offer(self, packet: bytes) -> bool:
        """Append `packet` if there is room; otherwise count a drop and return False."""
        if len(self._packets) >= self.capacity:
            self.dropped += 1
            return False
        self._packets.append(packet)
        return True

    def pop(self) -> bytes:
        """Oldest packet (raises IndexError when empty)."""
        return self._packets.popleft()

    def take(self, limit: int) -> list[bytes]:
        """Up to `limit` oldest packets, removed from the queue."""
        packets = self._packets
        count = min(limit, len(packets))
        return [packets.popleft() for _ in range(count)]

    def clear(self) -> int:
        """Discard everything queued (counted as dropped); return how many were discarded."""
        count = len(self._packets)
        self.dropped += count
        self._packets.clear()
        return count
