"""Path selection (nyx.directory.paths): bandwidth weighting, the LARMix-style latency bias, the
region cap, and selection from the full layer list only."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nyx.directory.paths import layer_entropy_bits, route_distribution, select_layers
from nyx.directory.records import Directory, DirectoryError, NodeRecord

KEY = bytes(32)
REGIONS = ("eu", "us", "ap")
REGION_LATENCY_S = {
    ("eu", "eu"): 0.010, ("us", "us"): 0.010, ("ap", "ap"): 0.010,
    ("eu", "us"): 0.080, ("eu", "ap"): 0.150, ("us", "ap"): 0.120,
}


def mix(node_id: str, layer: int, weight: float = 1.0, region: str | None = None, epochs=(0,)) -> NodeRecord:
    return NodeRecord(node_id, "mix", layer, "sim", 0, None, {e: KEY for e in epochs}, region=region, weight=weight)


def latency_s(prev: NodeRecord, candidate: NodeRecord) -> float:
    """The region matrix plus a fixed per-pair spread of up to 4 ms (deterministic)."""
    a, b = prev.region, candidate.region
    base = REGION_LATENCY_S.get((a, b)) or REGION_LATENCY_S[(b, a)]
    return base + int.from_bytes((prev.node_id + candidate.node_id).encode(), "big") % 97 / 97 * 0.004


def three_region_layers(per_layer: int = 30) -> Directory:
    """Two layers of `per_layer` mixes, regions eu/us/ap in turn, equal weights."""
    return Directory.of(
        mix(f"m{layer}-{i:02d}", layer, region=REGIONS[i % 3]) for layer in (1, 2) for i in range(per_layer)
    )


def region_shares(directory: Directory, distribution: dict[str, float]) -> dict[str | None, float]:
    shares: Counter[str | None] = Counter()
    for node_id, p in distribution.items():
        shares[directory.nodes[node_id].region] += p
    return dict(shares)


def chi_square(counts: Counter[str], expected: dict[str, float], draws: int) -> float:
    return sum((counts[k] - draws * p) ** 2 / (draws * p) for k, p in expected.items())


def test_mixes_are_drawn_in_proportion_to_their_bandwidth_weight() -> None:
    directory = Directory.of(mix(f"m-{w}", 1, weight=float(w)) for w in (1, 2, 3, 4))
    rng = random.Random(14)
    draws = 8000
    counts = Counter(select_layers(directory, 0, rng)[0].node_id for _ in range(draws))
    by_weight = {f"m-{w}": w / 10 for w in (1, 2, 3, 4)}
    uniform = {f"m-{w}": 0.25 for w in (1, 2, 3, 4)}
    # 3 degrees of freedom: 16.3 is the 0.1% critical value; ignoring the weights gives ~1,300.
    assert chi_square(counts, by_weight, draws) < 16.3
    assert chi_square(counts, uniform, draws) > 200


def test_the_distribution_is_the_normalised_weights_without_latency() -> None:
    directory = Directory.of(mix(f"m-{w}", 1, weight=float(w)) for w in (1, 2, 3, 4))
    assert route_distribution(directory, 0, 1) == pytest.approx({f"m-{w}": w / 10 for w in (1, 2, 3, 4)})


def test_tau_zero_is_plain_bandwidth_weighting_even_with_a_latency_function() -> None:
    directory = Directory.of(mix(f"m{layer}-{i}", layer, weight=1.0 + i, region=REGIONS[i % 3])
                             for layer in (1, 2) for i in range(6))
    prev = directory.nodes["m1-0"]
    plain = route_distribution(directory, 0, 2, max_region_share=1.0)
    assert route_distribution(directory, 0, 2, latency=latency_s, tau=0.0, max_region_share=1.0, prev=prev) == plain
    with_latency = [select_layers(directory, 0, random.Random(seed), latency=latency_s, tau=0.0) for seed in range(50)]
    without = [select_layers(directory, 0, random.Random(seed)) for seed in range(50)]
    assert with_latency == without


def test_a_positive_tau_shifts_probability_toward_low_latency_successors() -> None:
    directory = three_region_layers()
    prev = directory.nodes["m1-00"]  # in eu
    near = [r.node_id for r in directory.layer(2) if r.region == "eu"]
    before = sum(route_distribution(directory, 0, 2, latency=latency_s, tau=0.0, prev=prev)[n] for n in near)
    after = sum(route_distribution(directory, 0, 2, latency=latency_s, tau=1.0, prev=prev)[n] for n in near)
    assert before == pytest.approx(1 / 3)
    assert after > before + 0.1
    # and the draws follow: the second hop stays in the first hop's region about half the time
    # (held there by the cap), not a third
    rng = random.Random(3)
    routes = [select_layers(directory, 0, rng, latency=latency_s, tau=1.0) for _ in range(3000)]
    assert 0.45 < sum(first.region == second.region for first, second in routes) / 3000 < 0.55


def test_a_positive_tau_prefers_the_nearer_of_two_mixes_in_one_region() -> None:
    directory = Directory.of([mix("a", 1, region="eu"), mix("near", 2, region="eu"), mix("far", 2, region="eu")])
    distances = {"near": 0.01, "far": 0.05}
    dist = route_distribution(directory, 0, 2, latency=lambda p, c: distances[c.node_id], tau=2.0,
                              prev=directory.nodes["a"])
    # scale is the mean latency (0.03 s): near/far = exp(2 * 0.04 / 0.03)
    assert dist["near"] / dist["far"] == pytest.approx(2.718281828 ** (2 * 0.04 / 0.03))


def test_no_region_gets_more_than_the_cap_even_with_ten_times_the_weight() -> None:
    directory = Directory.of(
        [mix(f"heavy-{i}", 1, weight=10.0, region="eu") for i in range(5)]
        + [mix(f"light-{i}", 1, weight=1.0, region=r) for i, r in enumerate(["us", "us", "ap", "ap", "sa"])]
    )
    shares = region_shares(directory, route_distribution(directory, 0, 1, max_region_share=0.5))
    assert shares["eu"] == pytest.approx(0.5)
    assert shares["us"] == pytest.approx(0.2) and shares["ap"] == pytest.approx(0.2)
    rng = random.Random(9)
    picks = Counter(select_layers(directory, 0, rng)[0].region for _ in range(4000))
    assert picks["eu"] / 4000 < 0.53


def test_mixes_in_a_capped_region_keep_their_relative_odds() -> None:
    directory = Directory.of([mix("eu-1", 1, 6.0, "eu"), mix("eu-2", 1, 12.0, "eu"), mix("us-1", 1, 1.0, "us")])
    dist = route_distribution(directory, 0, 1, max_region_share=0.6)
    assert dist == pytest.approx({"eu-1": 0.2, "eu-2": 0.4, "us-1": 0.4})


def test_the_cap_cannot_apply_when_a_layer_has_one_region() -> None:
    directory = Directory.of([mix("a", 1, 1.0, "eu"), mix("b", 1, 3.0, "eu")])
    assert route_distribution(directory, 0, 1, max_region_share=0.5) == pytest.approx({"a": 0.25, "b": 0.75})


def test_a_cap_below_one_over_the_region_count_gives_each_region_an_equal_share() -> None:
    directory = Directory.of([mix("eu", 1, 8.0, "eu"), mix("us", 1, 1.0, "us"), mix("ap", 1, 1.0, "ap")])
    assert route_distribution(directory, 0, 1, max_region_share=0.1) == pytest.approx(
        {"eu": 1 / 3, "us": 1 / 3, "ap": 1 / 3})


def test_mixes_without_a_region_are_capped_together() -> None:
    directory = Directory.of([mix(f"anon-{i}", 1, 5.0) for i in range(4)] + [mix("eu", 1, 1.0, "eu")])
    shares = region_shares(directory, route_distribution(directory, 0, 1, max_region_share=0.5))
    assert shares == pytest.approx({None: 0.5, "eu": 0.5})


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0.01, 100.0), st.sampled_from(["eu", "us", "ap", "sa", None])), min_size=1,
                max_size=12),
       st.floats(0.05, 1.0), st.floats(0.0, 8.0))
def test_every_distribution_sums_to_one_covers_every_mix_and_respects_the_cap(mixes, cap, tau) -> None:
    directory = Directory.of([mix("prev", 1, region="eu")]
                             + [mix(f"m-{i}", 2, w, region) for i, (w, region) in enumerate(mixes)])
    dist = route_distribution(directory, 0, 2, latency=lambda p, c: 0.001 * (1 + int(c.node_id[2:])), tau=tau,
                              max_region_share=cap, prev=directory.nodes["prev"])
    assert sum(dist.values()) == pytest.approx(1.0)
    assert set(dist) == {f"m-{i}" for i in range(len(mixes))}
    assert all(p > 0 for p in dist.values())
    shares = region_shares(directory, dist)
    assert max(shares.values()) <= max(cap, 1 / len(shares)) + 1e-9


def test_avoided_mixes_are_never_chosen() -> None:
    directory = Directory.of(mix(f"m-{i}", 1) for i in range(4))
    rng = random.Random(1)
    picks = {select_layers(directory, 0, rng, avoid=["m-0", "m-2"])[0].node_id for _ in range(200)}
    assert picks == {"m-1", "m-3"}
    assert set(route_distribution(directory, 0, 1, avoid=["m-0"])) == {"m-1", "m-2", "m-3"}


def test_mixes_without_a_key_for_the_epoch_are_skipped() -> None:
    directory = Directory.of([mix("old", 1, epochs=(6,)), mix("current", 1, epochs=(6, 7)), mix("next", 1, epochs=(8,))])
    rng = random.Random(2)
    assert {select_layers(directory, 7, rng)[0].node_id for _ in range(100)} == {"current"}


def test_an_empty_layer_raises_an_error_naming_the_layer() -> None:
    directory = Directory.of([mix("a", 1), mix("b", 2)])
    with pytest.raises(DirectoryError, match="layer 2 for epoch 0"):
        select_layers(directory, 0, random.Random(0), avoid=["b"])
    with pytest.raises(DirectoryError, match="layer 3"):
        select_layers(directory, 0, random.Random(0), layers=[1, 3])
    with pytest.raises(DirectoryError, match="layer 1 for epoch 5"):
        route_distribution(directory, 5, 1)


def test_out_of_range_parameters_are_refused() -> None:
    directory = Directory.of([mix("a", 1)])
    with pytest.raises(ValueError, match="tau"):
        select_layers(directory, 0, random.Random(0), tau=-1.0)
    with pytest.raises(ValueError, match="max_region_share"):
        select_layers(directory, 0, random.Random(0), max_region_share=0.0)


def test_one_mix_per_layer_in_layer_order_each_biased_by_the_one_before() -> None:
    directory = three_region_layers()
    calls: list[tuple[str, str]] = []

    def recorded(prev: NodeRecord, candidate: NodeRecord) -> float:
        calls.append((prev.node_id, candidate.node_id))
        return latency_s(prev, candidate)

    route = select_layers(directory, 0, random.Random(4), latency=recorded, tau=1.0)
    assert [r.layer for r in route] == [1, 2]
    assert {prev for prev, _ in calls} == {route[0].node_id}  # no entry: the first layer is unbiased
    assert {c for _, c in calls} == {r.node_id for r in directory.layer(2)}
    calls.clear()
    entry = NodeRecord("gw", "gateway", 0, "sim", 0, None, region="eu")
    select_layers(directory, 0, random.Random(4), latency=recorded, tau=1.0, entry=entry)
    assert "gw" in {prev for prev, _ in calls}


def test_entropy_is_log2_of_the_mix_count_for_a_uniform_layer_and_zero_for_a_certain_one() -> None:
    assert layer_entropy_bits({f"m{i}": 1 / 8 for i in range(8)}) == pytest.approx(3.0)
    assert layer_entropy_bits({"only": 1.0}) == 0.0


def test_entropy_drops_as_tau_grows_on_a_three_region_layer() -> None:
    """30 mixes, 10 per region, equal weights, region latencies 10/80/120/150 ms, cap 0.5.
    From an eu mix: 4.907 bits at tau 0, 4.761 at tau 1, 4.371 at tau 5 (uncapped: 4.607, 3.424)."""
    directory = three_region_layers()
    for prev_id in ("m1-00", "m1-01", "m1-02"):  # one previous mix in each region
        prev = directory.nodes[prev_id]
        bits = [layer_entropy_bits(route_distribution(directory, 0, 2, latency=latency_s, tau=tau, prev=prev))
                for tau in (0.0, 1.0, 5.0)]
        assert bits[0] == pytest.approx(4.907, abs=1e-3)
        assert bits[0] > bits[1] > bits[2] > 4.3  # the cap keeps half the mass off the near region
        uncapped = layer_entropy_bits(route_distribution(directory, 0, 2, latency=latency_s, tau=5.0,
                                                         max_region_share=1.0, prev=prev))
        assert uncapped < 3.5 < bits[2]


class LookupRefused(dict):
    """A node table that answers only whole-table reads: any lookup of one node by id fails, as a
    per-route fetch from a directory server would be visible to it."""

    def __getitem__(self, node_id: str) -> NodeRecord:
        raise AssertionError(f"path selection looked up {node_id!r} by id")

    def get(self, node_id: str, default: object = None) -> NodeRecord:
        raise AssertionError(f"path selection looked up {node_id!r} by id")


def test_selection_reads_the_whole_layer_list_never_a_lookup_by_id() -> None:
    full = three_region_layers()
    directory = Directory(LookupRefused(full.nodes))
    rng = random.Random(6)
    routes = [select_layers(directory, 0, rng, latency=latency_s, tau=1.0) for _ in range(2000)]
    # every usable mix of the layer is a possible pick (the support is the full list, not a subset)
    assert set(route_distribution(directory, 0, 2, latency=latency_s, tau=5.0, prev=full.nodes["m1-00"])) == {
        r.node_id for r in full.layer(2)}
    assert {route[1].node_id for route in routes} == {r.node_id for r in full.layer(2)}
