"""Client slots: the wire does not reveal real traffic; real packets ride payload slots in order;
a full queue pushes back instead of dropping."""

from __future__ import annotations

import math
import random

from nyx.cover import ClientCover, ClientSlots, CoverConfig, Kind, RatePolicy

CONFIG = CoverConfig(RatePolicy(base_pps=5.0, cover_ratio=0.4), loop_pps=1.0, drop_pps=1.0)


def wire(real_every_s: float | None, seconds: float, seed: int = 3) -> tuple[list[float], list[Kind]]:
    """Send times and kinds of one client; real packets offered every `real_every_s`."""
    cover: ClientCover[int] = ClientCover(CONFIG, random.Random(seed), 0.0)
    times: list[float] = []
    kinds: list[Kind] = []
    next_real = real_every_s / 2 if real_every_s else math.inf
    while True:
        deadline = cover.next_deadline()
        if next_real <= deadline:
            assert cover.offer(len(times), next_real)
            next_real += real_every_s or math.inf
            continue
        if deadline > seconds:
            return times, kinds
        for send in cover.poll(deadline):
            times.append(deadline)
            kinds.append(send.kind)


def test_the_wire_is_identical_with_and_without_real_traffic() -> None:
    # 1 pps of real traffic is below (1 - r) * base = 3 pps: the slots absorb it
    idle_times, idle_kinds = wire(None, 3600.0)
    busy_times, busy_kinds = wire(1.0, 3600.0)
    assert busy_times == idle_times
    assert Kind.REAL not in idle_kinds
    assert busy_kinds.count(Kind.REAL) == 3600  # every real packet left in a payload slot
    # the only difference is what a slot carries: a real packet instead of a fill
    for idle, busy in zip(idle_kinds, busy_kinds):
        assert idle == busy or (idle is Kind.FILL and busy is Kind.REAL)


def test_the_wire_rate_is_the_same_with_and_without_poisson_real_traffic() -> None:
    rng = random.Random(9)
    cover: ClientCover[int] = ClientCover(CONFIG, random.Random(4), 0.0)
    next_real, sent, hours = rng.expovariate(2.0), 0, 2.0
    while True:
        deadline = cover.next_deadline()
        if next_real <= deadline:
            cover.offer(0, next_real)
            next_real += rng.expovariate(2.0)
            continue
        if deadline > hours * 3600:
            break
        sent += len(cover.poll(deadline))
    expected = 7.0 * hours * 3600  # base 5 + loop 1 + drop 1, as without real traffic
    assert abs(sent - expected) < 4 * math.sqrt(expected)
    assert cover.sent[Kind.REAL] > 0.95 * 2.0 * hours * 3600


def test_queued_real_packets_leave_in_order_in_payload_slots_only() -> None:
    slots: ClientSlots[str] = ClientSlots(10.0, 10.0, 10.0, random.Random(1), 0.0)
    for name in ("a", "b", "c"):
        assert slots.offer(name)
    real = []
    now = 0.0
    while len(real) < 3:
        now = slots.next_due()
        for send in slots.poll(now):
            if send.kind is Kind.REAL:
                real.append(send.packet)
            else:
                assert send.packet is None and send.kind in (Kind.LOOP, Kind.DROP)
    assert real == ["a", "b", "c"]


def test_a_full_queue_refuses_and_the_packet_is_not_counted_as_demand() -> None:
    config = CoverConfig(RatePolicy(base_pps=1.0), queue_limit=2)
    cover: ClientCover[int] = ClientCover(config, random.Random(2), 0.0)
    assert cover.offer(1, 0.0) and cover.offer(2, 0.0)
    assert not cover.has_room()
    assert not cover.offer(3, 0.0)
    assert cover.slots.queued() == 2
    cover.controller.tick(1.0)
    assert math.isclose(cover.controller.real_pps(), 2 / 5)  # two accepted packets in a 5 s window


def test_low_power_scales_loop_and_drop_streams_at_once() -> None:
    cover: ClientCover[int] = ClientCover(CONFIG, random.Random(2), 0.0)
    cover.set_low_power(True, 0.0)
    assert math.isclose(cover.slots.loop.rate_pps, 0.1)
    assert math.isclose(cover.slots.drop.rate_pps, 0.1)
