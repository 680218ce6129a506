"""The adversary's analyses on hand-made observations, where the right answer is known exactly."""

from __future__ import annotations

import math

import pytest

from nyx.bench.anonymity import (
    DelayModel, LinkEvent, Topology, entropy_bits, output_distribution, pool_timeline, rank_senders, score_attack,
    sender_distributions,
)

ONE_MIX = Topology(clients=("a", "b", "c", "d"), layers=(("m",),), providers=("p",), recipients=("r",),
                   mean_delay_s=1.0)


def _in(client: str, at: float) -> LinkEvent:
    return LinkEvent(client, "m", at - 0.001, at)


def _out(at: float) -> LinkEvent:
    return LinkEvent("m", "p", at, at + 0.001)


def test_entropy_of_uniform_weights_is_log2_of_their_number_and_of_a_certainty_zero():
    assert entropy_bits([0.25] * 8) == pytest.approx(3.0)
    assert entropy_bits([3.0, 3.0]) == pytest.approx(1.0)  # weights are normalised
    assert entropy_bits([1.0, 0.0, 0.0]) == 0.0
    assert entropy_bits([]) == 0.0


@pytest.mark.parametrize("pool", [1, 7, 63])
def test_a_target_joining_a_pool_that_then_empties_is_any_of_its_packets_equally(pool):
    # pool packets wait in the mix, the target arrives, nothing else arrives: by memorylessness
    # each of the pool + 1 departures is the target with probability 1 / (pool + 1)
    events = [_in("a", 0.1 * i) for i in range(pool)] + [_in("b", 10.0)]
    events += [_out(11.0 + i) for i in range(pool + 1)]
    steps = pool_timeline(events, ONE_MIX)
    dist = output_distribution(steps, events, ONE_MIX, target=pool)
    assert sum(dist.values()) == pytest.approx(1.0)
    assert sorted(dist.values()) == pytest.approx([1 / (pool + 1)] * (pool + 1))
    assert entropy_bits(dist.values()) == pytest.approx(math.log2(pool + 1))


def test_a_packet_alone_in_a_mix_is_traced_with_certainty_whatever_came_before():
    events = [_in("a", 1.0), _out(1.5), _in("b", 2.0), _out(2.0), _in("c", 3.0), _out(3.2)]
    steps = pool_timeline(events, ONE_MIX)
    assert output_distribution(steps, events, ONE_MIX, target=2) == {3: 1.0}
    assert entropy_bits(output_distribution(steps, events, ONE_MIX, target=2).values()) == 0.0


def test_packets_arriving_after_the_target_share_its_later_departures():
    # the target arrives, then another packet, then two departures: pools of 2, then 1
    events = [_in("a", 1.0), _in("b", 2.0), _out(3.0), _out(4.0)]
    steps = pool_timeline(events, ONE_MIX)
    assert output_distribution(steps, events, ONE_MIX, target=0) == pytest.approx({2: 0.5, 3: 0.5})


def test_a_departure_carries_the_pools_mix_of_senders():
    events = [_in("a", 1.0), _in("a", 1.1), _in("a", 1.2), _in("b", 1.3), _out(2.0), _out(3.0)]
    steps = pool_timeline(events, ONE_MIX)
    out = sender_distributions(steps, events, ONE_MIX)
    assert list(out[4]) == pytest.approx([0.75, 0.25, 0.0, 0.0])
    assert list(out[5]) == pytest.approx([0.75, 0.25, 0.0, 0.0])  # the pool stays exchangeable
    assert entropy_bits(out[4]) == pytest.approx(-(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25)))


def test_tracking_composes_over_layers():
    two = Topology(clients=("a", "b"), layers=(("m1",), ("m2",)), providers=("p",), recipients=("r",),
                   mean_delay_s=1.0)
    events = [
        LinkEvent("a", "m1", 0.0, 1.0), LinkEvent("b", "m1", 0.0, 1.0),  # 0, 1: both in m1
        LinkEvent("m1", "m2", 2.0, 2.0), LinkEvent("m1", "m2", 3.0, 3.0),  # 2, 3: each 1/2 the target
        # (zero-latency links: an arrival still follows the departure that sent it)
        LinkEvent("m2", "p", 4.0, 4.0), LinkEvent("m2", "p", 5.0, 5.0),  # 4, 5
    ]
    steps = pool_timeline(events, two)
    dist = output_distribution(steps, events, two, target=0)
    # m2 holds 1/2 (first packet) then 1/2 more: departure 4 sees a pool of 2 holding 1/2 + 1/2
    assert dist == pytest.approx({4: 0.5, 5: 0.5})
    senders = sender_distributions(steps, events, two)
    assert list(senders[4]) == pytest.approx([0.5, 0.5])


def test_delay_density_is_a_density_even_for_a_zero_mean():
    for hops, mean in ((3, 0.05), (1, 0.2), (3, 0.0)):
        model = DelayModel(hops, mean, resolution_s=0.001)
        low, high = model.window_s
        step = 0.0001
        area = sum(model.density(low + (i + 0.5) * step) for i in range(int((high - low) / step))) * step
        assert area == pytest.approx(1.0, abs=0.01)


def test_the_attack_names_the_sender_whose_packet_fits_the_delay_law():
    topology = Topology(clients=("a", "b", "c"), layers=(("m",),), providers=("p",), recipients=("r",),
                        mean_delay_s=0.05)
    link = 0.002
    events = [LinkEvent("a", "m", 1.000, 1.000 + link), LinkEvent("b", "m", 1.300, 1.300 + link),
              LinkEvent("c", "m", 5.000, 5.000 + link)]
    # delivered 60 ms after b's packet reached the mix: a's is 360 ms old (7 means), c's not sent yet
    events += [LinkEvent("m", "p", 1.362, 1.362 + link), LinkEvent("p", "r", 1.362 + link, 1.362 + 2 * link)]
    rankings = rank_senders(events, topology)
    assert list(rankings) == [4]
    assert rankings[4][:2] == ["b", "a"]
    result = score_attack(rankings, {4: "b"}, k=2)
    assert (result.n, result.top1, result.topk, result.chance1) == (1, 1.0, 1.0, pytest.approx(1 / 3))


def test_a_delivery_no_sender_explains_is_ranked_by_chance_not_by_client_order():
    topology = Topology(clients=tuple("abcdefgh"), layers=(("m",),), providers=("p",), recipients=("r",),
                        mean_delay_s=0.0)
    events = [LinkEvent("p", "r", 10.0 + i, 10.001 + i) for i in range(200)]
    rankings = rank_senders(events, topology, seed=3)
    firsts = {order[0] for order in rankings.values()}
    assert len(firsts) == 8
