"""Path selection: one mix per layer, drawn from the full layer list of a verified document.

Why the full list. A client that asked the directory (or a mirror) for only the nodes it was about
to use would tell whoever answers which route it will take, and a directory that answers
differently to different clients could hand each one a partial view it can later recognise
(route fingerprinting, Danezis and Clayton; bridging, Danezis and Syverson). So selection here
reads nothing but `Directory.layer(n)`, the whole layer of one document that every client holds
in the same bytes, and never looks a node up by id.

The rule, per layer, for a candidate mix `c` (a mix of that layer that publishes a Sphinx key for
the epoch and is not in `avoid`), after a previous hop `prev`:

    p(c | prev)  proportional to  weight(c) * exp(-tau * latency(prev, c) / scale)

where `scale` is the mean latency from `prev` to the layer's candidates. This is the bandwidth
weighting with a Boltzmann (softmin) bias toward low-latency successors in the style of LARMix
(Rahimi, Sharma, Diaz, NDSS 2024): `tau = 0` is plain bandwidth weighting exactly, larger `tau`
leans harder toward near successors, and dividing by the mean makes `tau` dimensionless (the
same `tau` means the same trade-off whether latencies are 2 ms or 200 ms apart). A candidate at
the mean latency keeps `exp(-tau)` of the weight of one at zero latency.

Latency bias alone would let the region nearest the previous hop take nearly all of a layer's
traffic: bad for anonymity (an observer of one region sees most routes) and for load. So the
distribution is then capped: no region's share of the layer's probability mass exceeds
`max_region_share`; a capped region is scaled down to the cap (its mixes keep their relative
odds) and the freed mass goes to the other regions in proportion to their own mass, repeated
until no region is over (water-filling). Mixes that publish no region count as one region
(`None`), so a mix cannot escape the cap by leaving its region out. With `k` regions the cap
cannot go below `1/k` (the shares must sum to one), so the effective cap is
`max(max_region_share, 1/k)`; in particular, when a layer has a single region the cap cannot
apply and the layer is weighted as if there were no cap.

The first layer has no previous mix: it is biased by the latency from `entry` (the client's
entry gateway) if one is given, otherwise it is weighted by bandwidth alone. Biasing the first
hop by the client's own network position would let the first mix learn something about where
its senders sit; the entry gateway already knows that, the mixes need not.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Mapping, Sequence

from nyx.directory.records import Directory, DirectoryError, NodeRecord

__all__ = ["Latency", "layer_entropy_bits", "route_distribution", "select_layers"]

Latency = Callable[[NodeRecord, NodeRecord], float]
"""`latency(prev, candidate) -> seconds`: the measured or estimated one-way latency of a link."""


def select_layers(
    directory: Directory,
    epoch: int,
    rng: random.Random | None = None,
    layers: Sequence[int] | None = None,
    avoid: Iterable[str] = (),
    latency: Latency | None = None,
    tau: float = 0.0,
    max_region_share: float = 0.5,
    *,
    entry: NodeRecord | None = None,
) -> list[NodeRecord]:
    """One mix per layer (`layers`, default every layer of the directory, in order), each drawn
    from that layer's full list by the rule in the module docstring, with `rng` (a seeded
    `random.Random` in tests; `random.SystemRandom` when None). Each layer's previous hop is the
    mix chosen for the layer before (for the first, `entry` if given).

    Raises `DirectoryError` naming the layer and epoch when a layer has no usable mix, and
    `ValueError` for a `tau` or `max_region_share` out of range.
    """
    _check_parameters(tau, max_region_share)
    rng = rng or random.SystemRandom()
    avoided = frozenset(avoid)
    chosen: list[NodeRecord] = []
    prev = entry
    for layer in layers if layers is not None else directory.layers():
        candidates, masses = _layer_masses(directory, epoch, layer, avoided, latency, tau, max_region_share, prev)
        prev = rng.choices(candidates, weights=masses)[0]
        chosen.append(prev)
    return chosen


def route_distribution(
    directory: Directory,
    epoch: int,
    layer: int,
    avoid: Iterable[str] = (),
    latency: Latency | None = None,
    tau: float = 0.0,
    max_region_share: float = 0.5,
    prev: NodeRecord | None = None,
) -> dict[str, float]:
    """The probability `select_layers` gives each usable mix of `layer` after `prev` (node id ->
    probability, summing to one): what tests and the anonymity figures measure."""
    _check_parameters(tau, max_region_share)
    candidates, masses = _layer_masses(directory, epoch, layer, frozenset(avoid), latency, tau, max_region_share, prev)
    total = math.fsum(masses)
    return {record.node_id: mass / total for record, mass in zip(candidates, masses, strict=True)}


def layer_entropy_bits(distribution: Mapping[str, float]) -> float:
    """Shannon entropy of a layer's distribution in bits: log2 of the number of equally likely
    mixes it is worth (log2(n) for a uniform layer of n mixes, 0 for a certain choice)."""
    return -math.fsum(p * math.log2(p) for p in distribution.values() if p > 0)


def _check_parameters(tau: float, max_region_share: float) -> None:
    if not (math.isfinite(tau) and tau >= 0):
        raise ValueError(f"tau must be a finite number >= 0, got {tau}")
    if not 0 < max_region_share <= 1:
        raise ValueError(f"max_region_share must be in (0, 1], got {max_region_share}")


def _layer_masses(
    directory: Directory,
    epoch: int,
    layer: int,
    avoided: frozenset[str],
    latency: Latency | None,
    tau: float,
    max_region_share: float,
    prev: NodeRecord | None,
) -> tuple[list[NodeRecord], list[float]]:
    """The layer's usable mixes and their unnormalised selection masses. With no latency bias and
    no binding cap the masses are the weights themselves, so a seeded rng draws what it drew
    before path selection moved here."""
    candidates = [r for r in directory.layer(layer) if epoch in r.sphinx_keys and r.node_id not in avoided]
    if not candidates:
        raise DirectoryError(f"no usable mix in layer {layer} for epoch {epoch}")
    masses = [r.weight for r in candidates]
    if latency is not None and tau > 0 and prev is not None:
        masses = _latency_biased(candidates, masses, [latency(prev, c) for c in candidates], tau)
    return candidates, _capped(candidates, masses, max_region_share)


def _latency_biased(candidates: list[NodeRecord], weights: list[float], latencies_s: list[float], tau: float) -> list[float]:
    for record, latency_s in zip(candidates, latencies_s, strict=True):
        if not (math.isfinite(latency_s) and latency_s >= 0):
            raise ValueError(f"latency to {record.node_id} must be a finite number of seconds >= 0, got {latency_s}")
    scale_s = math.fsum(latencies_s) / len(latencies_s)
    if scale_s == 0:
        return weights
    # Measured from the nearest candidate (a common factor, so the distribution is unchanged): the
    # nearest keeps its weight whole, so a large tau cannot underflow every mass to zero.
    nearest_s = min(latencies_s)
    return [
        w * math.exp(-tau * (latency_s - nearest_s) / scale_s)
        for w, latency_s in zip(weights, latencies_s, strict=True)
    ]


def _capped(candidates: list[NodeRecord], masses: list[float], max_region_share: float) -> list[float]:
    """Scale regions down to the cap and spread the rest over the others (water-filling)."""
    region_mass: dict[str | None, float] = {}
    for record, mass in zip(candidates, masses, strict=True):
        region_mass[record.region] = region_mass.get(record.region, 0.0) + mass
    cap = max(max_region_share, 1 / len(region_mass))
    over_cap = cap * (1 + 1e-12)  # a share of 1/k computed as 1 - (k-1)/k is not over a cap of 1/k
    total = math.fsum(region_mass.values())
    if all(mass / total <= over_cap for mass in region_mass.values()):
        return masses
    capped: set[str | None] = set()
    while True:
        free_mass = math.fsum(m for region, m in region_mass.items() if region not in capped)
        left = 1.0 - cap * len(capped)
        over = {r for r, m in region_mass.items() if r not in capped and m / free_mass * left > over_cap}
        if not over:
            break
        capped |= over
    share = {
        region: cap if region in capped else mass / free_mass * left for region, mass in region_mass.items()
    }
    return [mass / region_mass[r.region] * share[r.region] for r, mass in zip(candidates, masses, strict=True)]
