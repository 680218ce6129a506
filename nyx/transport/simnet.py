"""The simulated network's model (sans-I/O): link profiles, regions, failures, a seeded dice.

`SimModel.offer(src, dst, size_bytes, now)` decides the fate of one packet: delivered at a given
time, lost, dropped by a full link queue, or blocked by a failure. It owns no clock and no loop, so
a benchmark can drive it with the event loop's clock and a test with plain numbers; the same seed
gives the same fates.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field

from nyx.transport.base import PeerId


@dataclass(frozen=True, slots=True)
class LinkProfile:
    """One direction of a simulated link.

    latency_s: mean one-way delay. jitter_s: each packet's delay is latency_s + U(-jitter_s,
    +jitter_s), floored at 0, so the mean stays latency_s. loss: independent drop probability.
    bandwidth_bps: serialization rate (None = unlimited). queue_bytes: how much may wait for the
    wire before tail drop (only meaningful with a bandwidth).
    """

    latency_s: float = 0.001
    jitter_s: float = 0.0
    loss: float = 0.0
    bandwidth_bps: float | None = None
    queue_bytes: int = 256 * 1024

    def __post_init__(self) -> None:
        if self.latency_s < 0 or self.jitter_s < 0:
            raise ValueError("latency_s and jitter_s must be >= 0")
        if not 0.0 <= self.loss <= 1.0:
            raise ValueError(f"loss is a probability in [0, 1], got {self.loss}")
        if self.bandwidth_bps is not None and self.bandwidth_bps <= 0:
            raise ValueError("bandwidth_bps must be > 0 (or None for unlimited)")


class Fate(enum.Enum):
    DELIVER = "deliver"
    LOST = "lost"  # random loss on the wire
    QUEUE_FULL = "queue_full"  # tail drop at the sender's link queue
    FAILED = "failed"  # link or node failure injected
    UNKNOWN = "unknown"  # destination is not on the network


@dataclass(slots=True)
class _Wire:
    busy_until: float = 0.0


@dataclass(slots=True)
class SimModel:
    """Regions, per-link overrides and failures for a set of nodes.

    Latency between two nodes comes from, in order: an explicit `set_link` profile; the region
    matrix (`region_latency_s[(a, b)]`, symmetric) combined with `default`'s jitter, loss and
    bandwidth; `default` itself.
    """

    default: LinkProfile = field(default_factory=LinkProfile)
    region_latency_s: dict[tuple[str, str], float] = field(default_factory=dict)
    seed: int = 0
    rng: random.Random = field(init=False)
    regions: dict[PeerId, str | None] = field(default_factory=dict)
    links: dict[tuple[PeerId, PeerId], LinkProfile] = field(default_factory=dict)
    failed_links: set[tuple[PeerId, PeerId]] = field(default_factory=set)
    failed_nodes: set[PeerId] = field(default_factory=set)
    _wires: dict[tuple[PeerId, PeerId], _Wire] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def add_node(self, node: PeerId, region: str | None = None) -> None:
        self.regions[node] = region

    def set_link(self, src: PeerId, dst: PeerId, profile: LinkProfile, both_ways: bool = True) -> None:
        self.links[(src, dst)] = profile
        if both_ways:
            self.links[(dst, src)] = profile

    def fail_link(self, a: PeerId, b: PeerId) -> None:
        self.failed_links.update({(a, b), (b, a)})

    def restore_link(self, a: PeerId, b: PeerId) -> None:
        self.failed_links.difference_update({(a, b), (b, a)})

    def fail_node(self, node: PeerId) -> None:
        self.failed_nodes.add(node)

    def restore_node(self, node: PeerId) -> None:
        self.failed_nodes.discard(node)

    def profile(self, src: PeerId, dst: PeerId) -> LinkProfile:
        explicit = self.links.get((src, dst))
        if explicit is not None:
            return explicit
        ra, rb = self.regions.get(src), self.regions.get(dst)
        if ra is not None and rb is not None:
            latency = self.region_latency_s.get((ra, rb), self.region_latency_s.get((rb, ra)))
            if latency is not None:
                d = self.default
                return LinkProfile(latency, d.jitter_s, d.loss, d.bandwidth_bps, d.queue_bytes)
        return self.default

    def has_room(self, src: PeerId, dst: PeerId, size_bytes: int, now: float) -> bool:
        """Whether the src->dst wire queue would accept `size_bytes` now (no state change)."""
        p = self.profile(src, dst)
        if p.bandwidth_bps is None:
            return True
        wire = self._wires.get((src, dst))
        backlog_s = max(0.0, wire.busy_until - now) if wire is not None else 0.0
        return backlog_s * p.bandwidth_bps / 8 + size_bytes <= p.queue_bytes

    def offer(self, src: PeerId, dst: PeerId, size_bytes: int, now: float) -> tuple[Fate, float]:
        """Decide one packet's fate; for DELIVER, also when it arrives (else the second item is now)."""
        if dst not in self.regions:
            return Fate.UNKNOWN, now
        if src in self.failed_nodes or dst in self.failed_nodes or (src, dst) in self.failed_links:
            return Fate.FAILED, now
        p = self.profile(src, dst)
        departs = now
        if p.bandwidth_bps is not None:
            wire = self._wires.get((src, dst))
            if wire is None:
                wire = self._wires[(src, dst)] = _Wire()
            start = max(now, wire.busy_until)
            if (start - now) * p.bandwidth_bps / 8 + size_bytes > p.queue_bytes:
                return Fate.QUEUE_FULL, now
            wire.busy_until = departs = start + size_bytes * 8 / p.bandwidth_bps
        if p.loss and self.rng.random() < p.loss:
            return Fate.LOST, now
        delay = p.latency_s
        if p.jitter_s:
            delay = max(0.0, delay + self.rng.uniform(-p.jitter_s, p.jitter_s))
        return Fate.DELIVER, departs + delay


def three_regions(spacing_s: float = 0.090, local_s: float = 0.002) -> dict[tuple[str, str], float]:
    """A region matrix for SCL-014: regions a, b, c with `spacing_s` between each pair."""
    names = ("a", "b", "c")
    matrix = {(r, r): local_s for r in names}
    for i, x in enumerate(names):
        for y in names[i + 1 :]:
            matrix[(x, y)] = spacing_s
    return matrix
