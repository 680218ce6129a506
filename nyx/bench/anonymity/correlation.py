"""A timing-correlation attack, sans-I/O: link each delivered message to the sender whose send
times best explain when it came out.

The adversary knows the public delay law: a packet spends an Erlang(layers, mean delay) time in
the mixes, plus one link latency per link (it sees both ends of every link, so it knows them).
For a message delivered at time t, a packet that sender s put into the first mix at time a
explains it with likelihood f(t - transit - a), f the Erlang density; if every packet of every
sender is a priori equally likely to be the message, sender s's likelihood is the sum over its
packets. The attack ranks the senders by that sum. It cannot tell real packets from cover: every
packet a client sends counts (which is exactly what cover is for).

The density is smoothed over the observation's time resolution (`resolution_s`: a window of
+/- that width), so that a zero mean delay (the packet leaves each mix at once) is a spike the
attack can still use, as an adversary timestamping links to 1 ms would.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from nyx.bench.anonymity.observer import LinkEvent, Topology
from nyx.mix.delay import erlang_cdf, erlang_quantile

DEFAULT_RESOLUTION_S = 0.001


@dataclass(frozen=True, slots=True)
class AttackResult:
    """How often the true sender was ranked first and within the first `k`, over `n` messages,
    beside the rates of a guess (1/senders and k/senders)."""

    n: int
    k: int
    top1: float
    topk: float
    chance1: float
    chancek: float


class DelayModel:
    """The public delay law as the adversary uses it: the density of the time a packet spends in
    `hops` Poisson mixes of mean `mean_s`, smoothed over +/- `resolution_s`."""

    def __init__(self, hops: int, mean_s: float, resolution_s: float = DEFAULT_RESOLUTION_S) -> None:
        if hops < 1 or mean_s < 0 or resolution_s <= 0:
            raise ValueError(f"need hops >= 1, mean_s >= 0, resolution_s > 0 (got {hops}, {mean_s}, {resolution_s})")
        self.hops, self.mean_s, self.resolution_s = hops, mean_s, resolution_s
        tail = erlang_quantile(hops, 1 - 1e-9) * mean_s
        self.window_s = (-resolution_s, tail + resolution_s)

    def _cdf(self, x: float) -> float:
        if self.mean_s == 0:
            return 1.0 if x >= 0 else 0.0
        return erlang_cdf(self.hops, x / self.mean_s)

    def density(self, x: float) -> float:
        eps = self.resolution_s
        return (self._cdf(x + eps) - self._cdf(x - eps)) / (2 * eps)


def mean_link_latency(events: Sequence[LinkEvent]) -> float:
    """The adversary's estimate of one link's latency: it sees both ends of every link."""
    if not events:
        return 0.0
    return math.fsum(e.arrives_at - e.sent_at for e in events) / len(events)


def rank_senders(
    events: Sequence[LinkEvent], topology: Topology, resolution_s: float = DEFAULT_RESOLUTION_S, seed: int = 0,
) -> dict[int, list[str]]:
    """For every delivery (a provider-to-recipient event, by index), the senders from most to
    least likely. Ties (e.g. no sender explains it at all) are broken at random (`seed`), so a
    hopeless attack scores the chance rate rather than favouring the first client."""
    mixes = topology.mixes()
    senders = {client: [] for client in topology.clients}  # times their packets reached a first mix
    for event in events:
        if event.src in senders and event.dst in mixes:
            senders[event.src].append(event.arrives_at)
    for times in senders.values():
        times.sort()
    model = DelayModel(len(topology.layers), topology.mean_delay_s, resolution_s)
    transit_s = len(topology.layers) * mean_link_latency(events)
    providers, recipients = set(topology.providers), set(topology.recipients)
    rng = random.Random(seed)
    low, high = model.window_s
    rankings = {}
    for index, event in enumerate(events):
        if event.src not in providers or event.dst not in recipients:
            continue
        left = event.sent_at - transit_s
        scores = {}
        for client, times in senders.items():
            first = bisect.bisect_left(times, left - high)
            last = bisect.bisect_right(times, left - low)
            scores[client] = math.fsum(model.density(left - a) for a in times[first:last])
        order = list(topology.clients)
        rng.shuffle(order)
        order.sort(key=lambda client: -scores[client])
        rankings[index] = order
    return rankings


def score_attack(rankings: dict[int, list[str]], truth: dict[int, str], k: int = 3) -> AttackResult:
    """Success of `rankings` against `truth` (event index -> true sender), over the deliveries
    both know."""
    judged = [(rankings[i], sender) for i, sender in truth.items() if i in rankings]
    senders = len(next(iter(rankings.values()))) if rankings else 0
    if not judged or not senders:
        return AttackResult(0, k, math.nan, math.nan, math.nan, math.nan)
    top1 = sum(order[0] == sender for order, sender in judged) / len(judged)
    topk = sum(sender in order[:k] for order, sender in judged) / len(judged)
    return AttackResult(len(judged), k, top1, topk, 1 / senders, min(k, senders) / senders)
