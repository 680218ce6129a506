"""One measured point: run the network, then let the adversary analyse what it saw.

The analysis covers the steady part of the run only: pools start empty, so targets sent in the
first `warmup` seconds would look easier to trace than a running network's, and targets sent
near the end would leave through draining pools. The window is reported with the result.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, replace

import numpy as np

from nyx.bench.anonymity.correlation import AttackResult, rank_senders, score_attack
from nyx.bench.anonymity.entropy import (
    DEPART, Summary, arrival_positions, entropy_bits, output_distribution, pool_timeline, sender_distributions,
)
from nyx.bench.anonymity.simulation import MixnetSettings, Observation, simulate
from nyx.mix.delay import erlang_quantile


@dataclass(frozen=True, slots=True)
class AnonymityResult:
    """What one run's adversary achieved, and what the network cost, for `settings`.

    output_entropy: per target packet (a client's, real or cover), bits over network outputs.
    sender_entropy: per packet leaving the network, bits over senders; `ceiling_bits` = log2 of
    the number of senders. pool_mean: packets in a mix as a departure sees them (the candidates).
    latency: real messages, written to delivered (client queueing included), in seconds.
    overhead: packets clients sent per real message written (1 = no cover).
    """

    settings: MixnetSettings
    output_entropy: Summary
    sender_entropy: Summary
    ceiling_bits: float
    attack: AttackResult
    latency_mean_s: float
    latency_p95_s: float
    overhead: float
    pool_mean: float
    window_s: tuple[float, float]
    real_messages: int
    link_packets: int
    cpu_s: float


def steady_window(settings: MixnetSettings) -> tuple[float, float]:
    """Targets sent within this window are analysed: after the pools have filled (5 mean delays
    per layer), and early enough to leave before traffic stops (the 99% Erlang quantile)."""
    mixing_s = settings.layers * settings.mean_delay_s
    warm = min(settings.duration_s / 3, 5 * mixing_s + 0.5)
    tail = min(settings.duration_s / 3, erlang_quantile(settings.layers, 0.99) * settings.mean_delay_s)
    return warm, settings.duration_s - tail


def analyse(observation: Observation, *, targets: int = 200, k: int = 3, seed: int = 0) -> AnonymityResult:
    """The adversary's figures from an `Observation` (sans-I/O: no network, no clock)."""
    started = time.process_time()
    settings, events, topology = observation.settings, observation.events, observation.topology
    start, end = steady_window(settings)
    steps = pool_timeline(events, topology)
    clients, mixes = set(topology.clients), topology.mixes()
    candidates = [i for i, e in enumerate(events) if e.src in clients and e.dst in mixes and start <= e.sent_at <= end]
    chosen = random.Random(seed).sample(candidates, min(targets, len(candidates)))
    positions = arrival_positions(steps)
    output_bits = [
        entropy_bits(output_distribution(steps, events, topology, target, positions=positions).values())
        for target in chosen
    ]
    senders = sender_distributions(steps, events, topology)
    sender_bits = [entropy_bits(vector) for index, vector in senders.items() if start <= events[index].sent_at <= end]
    attack = score_attack(rank_senders(events, topology, seed=seed),
                          {d.event_index: d.sender for d in observation.deliveries}, k)
    latencies = [d.received_at - d.written_at for d in observation.deliveries]
    pools = [s.pool for s in steps if s.kind == DEPART and start <= s.time <= end]
    return AnonymityResult(
        settings=settings,
        output_entropy=Summary.of(output_bits),
        sender_entropy=Summary.of(sender_bits),
        ceiling_bits=math.log2(len(topology.clients)),
        attack=attack,
        latency_mean_s=float(np.mean(latencies)) if latencies else math.nan,
        latency_p95_s=float(np.quantile(latencies, 0.95)) if latencies else math.nan,
        overhead=observation.client_packets / observation.real_written if observation.real_written else math.nan,
        pool_mean=float(np.mean(pools)) if pools else math.nan,
        window_s=(start, end),
        real_messages=observation.real_written,
        link_packets=len(events),
        cpu_s=time.process_time() - started,
    )


def measure(settings: MixnetSettings, *, targets: int = 200, k: int = 3) -> AnonymityResult:
    """Run `settings` on the virtual clock and analyse it; `cpu_s` covers both."""
    started = time.process_time()
    result = analyse(simulate(settings), targets=targets, k=k, seed=settings.seed)
    return replace(result, cpu_s=time.process_time() - started)
