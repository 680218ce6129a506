"""SimTransport: statistics match the configured network within stated tolerances."""

from __future__ import annotations

import asyncio

import pytest

from nyx.transport import (
    Fate,
    LinkProfile,
    OversizeError,
    SimModel,
    SimNetwork,
    TransportClosedError,
    UnknownPeerError,
    three_regions,
)
from nyx.transport.link import Backoff
from nyx.transport.queues import SendQueue


async def _pair(net: SimNetwork, a: str = "a", b: str = "b", region_a=None, region_b=None):
    ta, tb = net.transport(a, region_a), net.transport(b, region_b)
    await ta.listen()
    await tb.listen()
    received: list[tuple[str, bytes]] = []
    tb.set_handler(lambda peer, packet: received.append((peer, packet)))
    return ta, tb, received


async def _settle(net: SimNetwork, timeout_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while net.in_flight() and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)


async def test_mean_delay_matches_configured_latency_within_5ms():
    # Tolerance: jitter is symmetric so the mean is the latency; timers fire late by up to a few
    # ms on a busy machine, never early.
    net = SimNetwork(LinkProfile(latency_s=0.050, jitter_s=0.010), seed=1)
    ta, tb, received = await _pair(net)
    for i in range(2000):
        ta.send("b", i.to_bytes(4, "big"))
    await _settle(net)
    assert len(received) == 2000
    mean = tb.mean_delay_s("a")
    assert 0.050 - 0.001 <= mean <= 0.050 + 0.005
    await net.close()


async def test_loss_ratio_matches_configured_loss_within_two_points():
    net = SimNetwork(LinkProfile(latency_s=0.001, loss=0.10), seed=7)
    ta, tb, received = await _pair(net)
    for i in range(5000):
        assert ta.send("b", b"x" * 100)
    await _settle(net)
    ratio = 1 - len(received) / 5000
    assert abs(ratio - 0.10) < 0.02  # binomial sd at n=5000 is 0.4 points
    assert ta.stats("b").lost == 5000 - len(received)
    assert abs(ta.stats("b").loss_ratio - 0.10) < 0.02
    await net.close()


async def test_same_seed_gives_same_fates():
    def run(seed: int) -> list[str]:
        model = SimModel(LinkProfile(latency_s=0.01, jitter_s=0.005, loss=0.3), seed=seed)
        model.add_node("a")
        model.add_node("b")
        return [f"{f.value}:{t:.6f}" for f, t in (model.offer("a", "b", 100, i * 0.001) for i in range(200))]

    assert run(3) == run(3)
    assert run(3) != run(4)


async def test_bandwidth_limits_rate_and_full_queue_is_a_counted_drop():
    # 1 Mbit/s with a 10 kB queue: 100 packets of 1000 B offered at once -> about 10 queued, rest dropped.
    profile = LinkProfile(latency_s=0.0, bandwidth_bps=1_000_000, queue_bytes=10_000)
    net = SimNetwork(profile, seed=1)
    ta, tb, received = await _pair(net)
    accepted = sum(ta.send("b", b"x" * 1000) for _ in range(100))
    assert accepted == 10
    assert ta.stats("b").dropped == 90
    await _settle(net)
    assert len(received) == 10
    # the last of 10 packets leaves after 10 * 8 ms of serialization
    assert tb.mean_delay_s("a") >= 0.040
    await net.close()


async def test_region_matrix_sets_latency_between_regions():
    model = SimModel(LinkProfile(latency_s=0.001), three_regions(0.090), seed=0)
    model.add_node("x", "a")
    model.add_node("y", "b")
    model.add_node("z", "a")
    assert model.offer("x", "y", 100, 0.0) == (Fate.DELIVER, pytest.approx(0.090))
    assert model.offer("x", "z", 100, 0.0) == (Fate.DELIVER, pytest.approx(0.002))


async def test_failed_link_and_failed_node_lose_packets_until_restored():
    net = SimNetwork(LinkProfile(latency_s=0.001), seed=0)
    ta, tb, received = await _pair(net)
    net.model.fail_link("a", "b")
    ta.send("b", b"1")
    net.model.restore_link("a", "b")
    net.model.fail_node("b")
    ta.send("b", b"2")
    net.model.restore_node("b")
    ta.send("b", b"3")
    await _settle(net)
    assert [p for _, p in received] == [b"3"]
    assert ta.stats("b").lost == 2
    assert net.fates[Fate.FAILED] == 2
    await net.close()


async def test_oversize_and_unknown_peer_and_closed_are_clear_errors():
    net = SimNetwork(seed=0)
    ta, tb, _ = await _pair(net)
    with pytest.raises(OversizeError):
        ta.send("b", b"x" * 1171)
    with pytest.raises(UnknownPeerError):
        ta.send("nobody", b"x")
    await ta.close()
    with pytest.raises(TransportClosedError):
        ta.send("b", b"x")
    await net.close()


async def test_a_failing_handler_is_counted_and_delivery_continues():
    net = SimNetwork(LinkProfile(latency_s=0.0), seed=0)
    ta, tb, _ = await _pair(net)
    seen: list[bytes] = []

    def handler(peer: str, packet: bytes) -> None:
        if packet == b"bad":
            raise RuntimeError("boom")
        seen.append(packet)

    tb.set_handler(handler)
    for packet in (b"1", b"bad", b"2"):
        ta.send("b", packet)
    await _settle(net)
    assert seen == [b"1", b"2"]
    assert tb.handler_errors == 1
    await net.close()


async def test_send_wait_applies_backpressure_instead_of_dropping():
    profile = LinkProfile(latency_s=0.0, bandwidth_bps=8_000_000, queue_bytes=5_000)
    net = SimNetwork(profile, seed=0)
    ta, tb, received = await _pair(net)
    for _ in range(50):
        await ta.send_wait("b", b"x" * 1000)
    await _settle(net)
    assert len(received) == 50
    assert ta.stats("b").dropped == 0
    await net.close()


async def test_rtt_is_reported_from_observed_delays():
    net = SimNetwork(LinkProfile(latency_s=0.020), seed=0)
    ta, tb, _ = await _pair(net)
    ta.set_handler(lambda p, d: None)
    ta.send("b", b"x")
    tb.send("a", b"y")
    await _settle(net)
    assert ta.stats("b").rtt_s == pytest.approx(0.040, abs=0.01)
    await net.close()


async def test_closing_the_network_is_awaited_and_closes_its_nodes_and_packets_in_flight():
    net = SimNetwork(LinkProfile(latency_s=0.050), seed=0)
    ta, tb, received = await _pair(net)
    ta.send("b", b"in flight")
    assert net.in_flight() == 1
    closing = net.close()
    assert asyncio.iscoroutine(closing)  # like Transport.close
    await closing
    assert net.in_flight() == 0
    with pytest.raises(TransportClosedError):
        ta.send("b", b"after close")
    await asyncio.sleep(0.08)
    assert received == []  # the packet in flight was forgotten, its timer cancelled
    await net.close()  # idempotent
    await tb.close()


def test_send_queue_counts_overflow_as_drops():
    q = SendQueue(2)
    assert q.offer(b"1") and q.offer(b"2")
    assert not q.offer(b"3")
    assert q.dropped == 1
    assert q.take(5) == [b"1", b"2"]


def test_backoff_grows_is_capped_and_resets():
    b = Backoff(initial_s=0.1, maximum_s=1.0)
    delays = [b.next_delay_s() for _ in range(8)]
    assert delays[0] <= 0.1 and delays[-1] <= 1.0 and delays[-1] >= 0.5
    b.reset()
    assert b.next_delay_s() <= 0.1
