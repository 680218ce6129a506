"""pytest-benchmark suite for nyx.cover: the per-send cost of the core, a cover packet's build
cost, and simulated hours per wall second.

CI runs these once with --benchmark-disable (each is then a correctness check); time them with
`python -m pytest bench/bench_cover.py --benchmark-enable`. The floor that matters: a client at
tens of pps spends microseconds per send in the core; the cover packet's cost is the mix layer's
`create_packet` (a 3-hop build), paid once per cover send.
"""

from __future__ import annotations

import random
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from nyx.cover import ClientCover, CoverConfig, Kind, MixCoverPackets, RatePolicy
from nyx.cover.simulate import run_client
from nyx.mix.directory import Directory, NodeRecord


def test_cover_core_per_send(benchmark: Any) -> None:
    cover: ClientCover[int] = ClientCover(CoverConfig(RatePolicy(base_pps=20.0)), random.Random(1), 0.0)

    def one_send() -> int:
        # Poll deadline after deadline until one yields a send (some deadlines are controller ticks).
        while not (sends := cover.poll(cover.next_deadline())):
            pass
        return len(sends)

    assert benchmark(one_send) >= 1
    assert cover.next_deadline() > 0.0  # the schedule moved on in time


def test_cover_loop_packet_build(benchmark: Any) -> None:
    records = [
        NodeRecord(f"mix-{layer}", "mix", layer, "sim", 0, None,
                   {0: X25519PrivateKey.generate().public_key().public_bytes_raw()})
        for layer in (1, 2, 3)
    ]
    packets = MixCoverPackets(Directory.of(records), "alice", lambda: 0, random.Random(2))
    cover = benchmark(lambda: packets(Kind.LOOP))
    assert cover.loop_id is not None


def test_cover_simulated_hour(benchmark: Any) -> None:
    config = CoverConfig(RatePolicy(base_pps=5.0), loop_pps=1.0, drop_pps=1.0)
    report = benchmark.pedantic(lambda: run_client(config, 3600.0, seed=1), rounds=3, iterations=1)
    assert report.drift_pct < 3.0
