"""pytest-benchmark suite for nyx.mix: one hop and packet creation, beside sphinxmix when installed.

CI runs these once with --benchmark-disable (each is then a correctness check); time them with
`python -m pytest bench/bench_mix.py --benchmark-enable`. sphinxmix (the `bench` extra) is the
reference the issue sets (goal: our hop at least 3x faster); its tests skip when it is missing.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from nyx.mix import CLASSIC_FORMAT, KEM_FORMAT, Forward, Hop, KeyRing, MixCore, PacketFormat, create_packet

KEY = X25519PrivateKey.generate()
PUBLIC = KEY.public_key().public_bytes_raw()


class _NoReplay:
    def check(self, epoch: int, tag: bytes) -> str | None:
        return None


@pytest.mark.parametrize("fmt", [KEM_FORMAT, CLASSIC_FORMAT], ids=lambda f: f.name)
def test_mix_hop(benchmark: Any, fmt: PacketFormat) -> None:
    route = [Hop("mix-a", PUBLIC), Hop("mix-b", PUBLIC), Hop("mix-c", PUBLIC)]
    pool = [create_packet(route, "svc", bytes(200), epoch=0, fmt=fmt)[1] for _ in range(50)]
    packets = itertools.cycle(pool)
    # Replays are dropped after the MAC check, so a cycled pool would time drops: keep no tags.
    core = MixCore(KeyRing.single(KEY), replay_capacity=16, packet_format=fmt)
    core.replay = _NoReplay()  # type: ignore[assignment]
    event = benchmark(lambda: core.process(next(packets), 0.0))
    assert isinstance(event, Forward) and event.next_hop == "mix-b"


@pytest.mark.parametrize("hops", [3, 5])
def test_mix_create_packet(benchmark: Any, hops: int) -> None:
    route = [Hop(f"mix-{i}", PUBLIC) for i in range(hops)]
    first, packet = benchmark(create_packet, route, "svc", bytes(200), 0)
    assert first == "mix-0" and len(packet) == KEM_FORMAT.packet_bytes


def _sphinxmix() -> Any:
    return pytest.importorskip("sphinxmix.SphinxClient", reason="sphinxmix not installed (pip install 'nyx[bench]')")


def test_sphinxmix_hop_reference(benchmark: Any) -> None:
    client = _sphinxmix()
    from sphinxmix.SphinxNode import sphinx_process
    from sphinxmix.SphinxParams import SphinxParams

    params = SphinxParams()
    secret = params.group.gensecret()
    public = params.group.expon(params.group.g, [secret])
    route = [client.Nenc(i) for i in range(3)]
    header, body = client.create_forward_message(params, route, [public] * 3, b"svc", bytes(200))
    benchmark(sphinx_process, params, secret, header, body)


@pytest.mark.parametrize("hops", [3, 5])
def test_sphinxmix_create_reference(benchmark: Any, hops: int) -> None:
    client = _sphinxmix()
    from sphinxmix.SphinxParams import SphinxParams

    params = SphinxParams()
    public = params.group.expon(params.group.g, [params.group.gensecret()])
    route = [client.Nenc(i) for i in range(hops)]
    benchmark(client.create_forward_message, params, route, [public] * hops, b"svc", bytes(200))
