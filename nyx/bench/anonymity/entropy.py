"""Sender entropy by the Loopix method, sans-I/O: plain functions over the adversary's
`LinkEvent`s and the public `Topology`.

A Poisson mix holds each packet for an exponential delay. Memorylessness makes every packet in a
mix's pool equally likely to be the next to leave, whenever it arrived. So the adversary, who
counts each mix's pool from its input and output links, can track a target: a mix holding a
share `m` of the target's probability among `k` packets sends out `m / k` of it with its next
packet and keeps `m (1 - 1/k)`; the share sent travels with that packet to the next mix, where
it joins that pool. Composed over the layers, this gives the probability that each packet
leaving the last layer is the target (Piotrowska et al., "The Loopix Anonymity System", USENIX
Security 2017, section 4). The same bookkeeping run with a vector of senders in place of one
target gives, for each packet leaving the network, the probability of each sender having sent
it: its entropy is at most log2 of the number of senders.

Two figures, both in bits:

- `output_entropy`: for a target packet a client sent into the network, the entropy of the
  distribution over packets leaving the network (Loopix's figure; unbounded by the senders);
- `sender_entropy`: for a packet leaving the network, the entropy of the distribution over
  senders (the anonymity set of senders; ceiling log2 of their number).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from nyx.bench.anonymity.observer import LinkEvent, Topology

ARRIVE, DEPART = 0, 1


@dataclass(frozen=True, slots=True)
class PoolStep:
    """One arrival at, or departure from, a mix, in time order; `pool` is the number of packets
    in that mix just before a departure (the candidates for it), and its count after an arrival."""

    time: float
    kind: int
    event_index: int
    mix: str
    pool: int


@dataclass(frozen=True, slots=True)
class Summary:
    """Mean and quantiles of a set of figures (NaN when it is empty)."""

    n: int
    mean: float
    p10: float
    p50: float
    p90: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        if not values:
            nan = math.nan
            return cls(0, nan, nan, nan, nan)
        ordered = sorted(values)
        q = np.quantile(ordered, [0.1, 0.5, 0.9])
        return cls(len(ordered), float(np.mean(ordered)), float(q[0]), float(q[1]), float(q[2]))


def entropy_bits(weights: Iterable[float]) -> float:
    """Shannon entropy (bits) of the distribution proportional to `weights` (zeros ignored)."""
    values = [w for w in weights if w > 0]
    total = sum(values)
    if total <= 0:
        return 0.0
    return -sum(w / total * math.log2(w / total) for w in values)


def pool_timeline(events: Sequence[LinkEvent], topology: Topology) -> list[PoolStep]:
    """Every mix arrival and departure in time order, with the pool size the adversary counts.

    At equal times an arrival comes first (a packet cannot leave before it arrived, and a zero
    delay mix releases it at its arrival time), except one over a zero-latency link from a mix,
    which must follow the departure that sent it."""
    mixes = topology.mixes()
    raw: list[tuple[float, int, int, int, str]] = []
    for i, event in enumerate(events):
        if event.dst in mixes:
            after_departures = event.src in mixes and event.arrives_at <= event.sent_at
            raw.append((event.arrives_at, 2 if after_departures else 0, ARRIVE, i, event.dst))
        if event.src in mixes:
            raw.append((event.sent_at, 1, DEPART, i, event.src))
    raw.sort()
    pools = dict.fromkeys(mixes, 0)
    steps = []
    for time, _, kind, index, mix in raw:
        if kind == ARRIVE:
            pools[mix] += 1
            steps.append(PoolStep(time, kind, index, mix, pools[mix]))
        else:  # a packet the mix originated (its own cover) leaves a pool of at least itself
            steps.append(PoolStep(time, kind, index, mix, max(pools[mix], 1)))
            pools[mix] = max(pools[mix] - 1, 0)
    return steps


def output_distribution(
    steps: Sequence[PoolStep], events: Sequence[LinkEvent], topology: Topology, target: int,
    resolved: float = 1e-4, positions: dict[int, int] | None = None,
) -> dict[int, float]:
    """Where the target packet `events[target]` (a client's packet into the first mix) went: the
    probability, per event index of a packet leaving the last layer, that it is the target.

    Stops once all but `resolved` of the probability has left the network; what is still inside
    when the observation ends is left out (the caller sees the shortfall in the sum).
    `positions` (from `arrival_positions`) saves a search when tracking many targets."""
    mixes = topology.mixes()
    if positions is None:
        positions = arrival_positions(steps)
    if target not in positions:
        raise ValueError(f"event {target} never arrives at a mix")
    start = positions[target]
    in_mix: dict[str, float] = {}
    in_flight = {target: 1.0}
    out: dict[int, float] = {}
    left = 0.0
    for step in steps[start:]:
        if step.kind == ARRIVE:
            share = in_flight.pop(step.event_index, 0.0)
            if share:
                in_mix[step.mix] = in_mix.get(step.mix, 0.0) + share
            continue
        held = in_mix.get(step.mix, 0.0)
        if not held:
            continue
        share = held / step.pool
        in_mix[step.mix] = held - share
        if events[step.event_index].dst in mixes:
            in_flight[step.event_index] = share
        else:
            out[step.event_index] = share
            left += share
            if left >= 1.0 - resolved:
                break
    return out


def sender_distributions(
    steps: Sequence[PoolStep], events: Sequence[LinkEvent], topology: Topology
) -> dict[int, np.ndarray]:
    """For every packet leaving the last layer (by event index): the probability of each sender
    (in `topology.clients` order) having sent it. A client's packet enters its first mix as
    certainly its own; each departure carries the pool's mean sender vector."""
    mixes = topology.mixes()
    senders = {client: i for i, client in enumerate(topology.clients)}
    width = len(topology.clients)
    pool_mass = {mix: np.zeros(width) for mix in mixes}
    in_flight: dict[int, np.ndarray] = {}
    out: dict[int, np.ndarray] = {}
    for step in steps:
        event = events[step.event_index]
        if step.kind == ARRIVE:
            carried = in_flight.pop(step.event_index, None)
            if carried is not None:
                pool_mass[step.mix] += carried
            elif event.src in senders:
                pool_mass[step.mix][senders[event.src]] += 1.0
            continue
        vector = pool_mass[step.mix] / step.pool
        pool_mass[step.mix] -= vector
        if event.dst in mixes:
            in_flight[step.event_index] = vector
        else:
            out[step.event_index] = vector
    return out


def arrival_positions(steps: Sequence[PoolStep]) -> dict[int, int]:
    """Where in `steps` each event's arrival at a mix is (by event index)."""
    return {step.event_index: position for position, step in enumerate(steps) if step.kind == ARRIVE}
