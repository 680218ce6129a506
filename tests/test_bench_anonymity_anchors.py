"""Sanity anchors of the anonymity bench, on the real network (MixNodes, Sphinx, CoverEmitter over
SimTransport on a virtual clock), over several seeds. Each run is 10-40 virtual seconds and well
under a second or two of CPU."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from nyx.bench.anonymity import MixnetSettings, measure, simulate

SEEDS = (1, 2, 3)
SMALL = MixnetSettings(clients=10, layers=3, mixes_per_layer=2, mean_delay_s=0.05, real_pps=1.0, cover_pps=0.0,
                       duration_s=20.0)
NOISE_BITS = 0.15  # seed-to-seed spread of the mean sender entropy at these sizes is about 0.1 bit


@pytest.mark.parametrize("seed", SEEDS)
def test_without_delay_or_cover_the_adversary_traces_every_packet(seed):
    result = measure(replace(SMALL, mean_delay_s=0.0, seed=seed), targets=100)
    assert result.output_entropy.mean < 0.05
    assert result.sender_entropy.mean < 0.05
    assert result.attack.n > 100
    # misses only when two clients' packets reach the mixes within the 1 ms resolution
    assert result.attack.top1 >= 0.95
    assert result.attack.topk == pytest.approx(1.0, abs=0.01)


@pytest.mark.parametrize("seed", SEEDS[:2])
def test_a_single_mix_with_a_large_pool_approaches_log2_of_the_pool(seed):
    # one mix, 40 packets/s in, 0.5 s mean delay: about 20 packets in its pool. A steady Poisson
    # mix's departures are the target with geometric odds (1/k, (1 - 1/k)/k, ...), whose entropy
    # is log2(k) + log2(e) as k grows: the figure is log2 of the pool, plus 1.44 bits at most
    settings = MixnetSettings(clients=20, layers=1, mixes_per_layer=1, mean_delay_s=0.5, real_pps=2.0,
                              duration_s=40.0, seed=seed)
    result = measure(settings, targets=150)
    assert 15 < result.pool_mean < 25
    pool_bits = math.log2(result.pool_mean)
    assert pool_bits < result.output_entropy.mean < pool_bits + math.log2(math.e) + 0.15
    assert result.output_entropy.p10 > pool_bits - 0.5


def _mean_sender_entropy(settings: MixnetSettings) -> list[float]:
    return [measure(replace(settings, seed=seed), targets=50).sender_entropy.mean for seed in SEEDS]


def test_more_delay_never_lowers_sender_entropy_beyond_noise():
    by_delay = [_mean_sender_entropy(replace(SMALL, mean_delay_s=d)) for d in (0.01, 0.05, 0.2)]
    for lower, higher in zip(by_delay, by_delay[1:]):
        assert all(h > l - NOISE_BITS for l, h in zip(lower, higher))
        assert sum(higher) > sum(lower)


def test_more_cover_never_lowers_sender_entropy_beyond_noise():
    by_cover = [_mean_sender_entropy(replace(SMALL, cover_pps=c)) for c in (0.0, 1.0, 4.0)]
    for lower, higher in zip(by_cover, by_cover[1:]):
        assert all(h > l - NOISE_BITS for l, h in zip(lower, higher))
        assert sum(higher) > sum(lower)


def test_the_attack_falls_towards_chance_as_mixing_grows():
    traced = measure(replace(SMALL, mean_delay_s=0.01), targets=20).attack
    mixed = measure(replace(SMALL, mean_delay_s=0.2, cover_pps=4.0), targets=20).attack
    assert traced.top1 > 3 * traced.chance1
    assert mixed.top1 < traced.top1 / 2
    assert mixed.top1 < 2 * mixed.chance1


def test_the_ground_truth_matches_what_was_sent_and_the_latency_is_at_least_the_links():
    observation = simulate(replace(SMALL, cover_pps=1.0))
    clients = set(observation.topology.clients)
    assert observation.mix_drops == 0
    # every real message written reaches its recipient but those still queued for a slot at the end
    assert observation.real_unsent > 0
    assert len(observation.deliveries) == observation.real_written - observation.real_unsent
    assert {d.sender for d in observation.deliveries} == clients
    for delivery in observation.deliveries:
        event = observation.events[delivery.event_index]
        assert event.src == "provider" and event.dst.startswith("rcpt-")
        assert delivery.received_at - delivery.written_at >= 5 * SMALL.link_latency_s - 1e-9
    # every packet a client sent went into a first-layer mix, and cover made up the rest of the slots
    first_layer = set(observation.topology.layers[0])
    assert all(e.dst in first_layer for e in observation.events if e.src in clients)
    assert observation.client_packets > 1.5 * observation.real_written
