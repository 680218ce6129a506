"""The multipath route scheduler (nyx.stream.routes), driven with plain numbers."""

from __future__ import annotations

import collections
import random

import pytest

from nyx.stream.routes import RouteBuildError, RouteScheduler, disjoint_first

LAYERS = [[f"m{layer}-{i}" for i in range(6)] for layer in (1, 2, 3)]


def builder(layers: list[list[str]] = LAYERS, seed: int = 1):  # type: ignore[no-untyped-def]
    rng = random.Random(seed)

    def pick(avoid: frozenset[str]) -> tuple[str, ...]:
        route = []
        for layer in layers:
            usable = [m for m in layer if m not in avoid]
            if not usable:
                raise RouteBuildError("layer empty")
            route.append(rng.choice(usable))
        return tuple(route)

    return disjoint_first(pick)


def test_routes_are_disjoint_at_every_layer_when_the_directory_allows() -> None:
    scheduler = RouteScheduler(builder(), 0.0, width=5)
    routes = scheduler.active()
    assert len(routes) == 5
    for layer in range(3):
        assert len({r.mixes[layer] for r in routes}) == 5


def test_a_small_directory_still_gets_routes_that_overlap() -> None:
    small = [[f"m{layer}-{i}" for i in range(2)] for layer in (1, 2, 3)]
    scheduler = RouteScheduler(builder(small), 0.0, width=5)
    assert 2 <= len(scheduler.active()) <= 5


def test_picks_follow_delivery_weights() -> None:
    scheduler = RouteScheduler(builder(), 0.0, width=2)
    fast, slow = scheduler.active()
    fast.srtt_s, slow.srtt_s = 0.1, 0.3  # the fast route delivers 3x as often per second
    counts = collections.Counter(scheduler.pick(0.0).route_id for _ in range(400))  # type: ignore[union-attr]
    assert counts[fast.route_id] == 300 and counts[slow.route_id] == 100
    slow.srtt_s, slow.loss = 0.1, 0.5
    counts = collections.Counter(scheduler.pick(0.0).route_id for _ in range(300))  # type: ignore[union-attr]
    assert counts[fast.route_id] == 200


def test_three_losses_in_a_row_suspect_a_route_hand_back_its_records_and_replace_it() -> None:
    scheduler = RouteScheduler(builder(), 0.0, width=3)
    bad = scheduler.active()[0]
    for pn in range(10):
        scheduler.on_sent(bad, pn, 1.0)
    scheduler.on_lost(0, 5.0)
    scheduler.on_acked(1, 0.5, 5.1)  # an ACK between losses resets the run
    scheduler.on_lost(2, 5.2)
    scheduler.on_lost(3, 5.3)
    assert bad.active
    scheduler.on_lost(4, 5.4)
    assert bad.active  # a grace of about its round trip (0.5 s) for a late ACK
    scheduler.maintain(5.8)
    assert bad.active
    scheduler.maintain(5.95)
    assert not bad.active and "3 records lost" in bad.reason
    assert scheduler.take_orphans() == [5, 6, 7, 8, 9]
    assert scheduler.take_orphans() == []
    assert len(scheduler.active()) == 3
    new = [r for r in scheduler.active() if r.created_at == 5.95]
    assert len(new) == 1 and not set(new[0].mixes) & set(bad.mixes)
    assert all(r.route_id != bad.route_id for r in [scheduler.pick(6.0) for _ in range(30)])  # type: ignore[union-attr]
    scheduler.on_sent(new[0], 100, 6.1)
    assert scheduler.failovers_s == [pytest.approx(6.1 - 5.2)]  # from the first loss of the run
    assert scheduler.reconfigurations_s == [pytest.approx(6.1 - 5.95)]  # from the suspicion


def test_a_route_that_is_only_slow_is_cleared_by_a_late_ack_within_its_grace() -> None:
    scheduler = RouteScheduler(builder(), 0.0, width=2)
    slow = scheduler.active()[0]
    for pn in range(5):
        scheduler.on_sent(slow, pn, 1.0)
    for pn in range(3):
        scheduler.on_lost(pn, 2.0)  # the session's timer gave up on them...
    scheduler.on_acked(1, 1.3, 2.2)  # ... and an ACK for one arrives late
    scheduler.maintain(10.0)
    assert slow.active and slow.lost_in_a_row == 0


def test_a_mix_reported_failing_takes_down_every_route_through_it() -> None:
    scheduler = RouteScheduler(builder(), 0.0, width=5)
    victim = scheduler.active()[2].mixes[1]
    assert scheduler.suspect_node(victim, 1.0, "loop cover lost through it") == 1
    scheduler.maintain(1.0)
    assert all(victim not in r.mixes for r in scheduler.active())
    assert len(scheduler.active()) == 5


def test_a_new_directory_without_a_mix_replaces_its_routes() -> None:
    scheduler = RouteScheduler(builder(), 0.0, width=5)
    gone = scheduler.active()[0].mixes[0]
    listed = [m for layer in LAYERS for m in layer if m != gone]
    assert scheduler.on_directory(listed, 2.0) == 1
    assert scheduler.on_directory(listed, 2.1) == 0


def test_width_one_is_a_single_route_replaced_when_it_fails() -> None:
    scheduler = RouteScheduler(builder(), 0.0, width=1)
    only = scheduler.active()[0]
    assert {scheduler.pick(0.0).route_id for _ in range(20)} == {only.route_id}  # type: ignore[union-attr]
    scheduler.suspect_node(only.mixes[0], 1.0, "down")
    replacement = scheduler.pick(1.0)
    assert replacement is not None and replacement.route_id != only.route_id


def test_routes_are_rotated_after_their_lifetime_without_counting_a_failure() -> None:
    scheduler = RouteScheduler(builder(), 0.0, width=2, lifetime_s=60.0)
    first = {r.route_id for r in scheduler.active()}
    scheduler.maintain(61.0)
    assert not first & {r.route_id for r in scheduler.active()}
    assert scheduler.failovers_s == [] and scheduler.replaced == 0


def test_with_no_route_possible_pick_returns_none() -> None:
    def nothing(avoid: frozenset[str], spread: frozenset[str]) -> tuple[str, ...]:
        raise RouteBuildError("no mixes")

    scheduler = RouteScheduler(nothing, 0.0)
    assert scheduler.pick(0.0) is None and scheduler.build_failures >= 1


def test_records_never_judged_are_forgotten_beyond_a_bound() -> None:
    scheduler = RouteScheduler(builder(), 0.0, width=1)
    route = scheduler.active()[0]
    for pn in range(10_000):  # ACK-only records: never acked as eliciting, never declared lost
        scheduler.on_sent(route, pn, 0.0)
    assert len(route.in_flight) <= 4096


def test_a_surb_overtaken_by_many_later_ones_is_declared_lost_and_reordering_is_not() -> None:
    from nyx.stream.routes import SurbWatch

    watch = SurbWatch(overtaken=4)
    for seq in range(10):
        watch.issued(seq)
    assert watch.returned(2) == [] and watch.returned(1) == []  # reordering: overtaken by one
    lost: list[int] = []
    for seq in (3, 4, 5, 6):
        lost += watch.returned(seq)
    assert lost == [0]  # overtaken by 2, 3, 4 and 5 (1 came back); 7..9 still pending
    assert watch.returned(9) == []


def test_a_mix_that_left_the_directory_is_usable_again_once_listed() -> None:
    scheduler = RouteScheduler(builder(), 0.0, width=5, avoid_s=0.0)
    gone = scheduler.active()[0].mixes[0]
    everyone = [m for layer in LAYERS for m in layer]
    scheduler.on_directory([m for m in everyone if m != gone], 1.0)
    assert gone in scheduler._suspect_nodes
    scheduler.on_directory(everyone, 2.0)  # restarted and listed again
    assert gone not in scheduler._suspect_nodes
    scheduler.suspect_node("m2-5", 3.0, "loop cover lost through it")
    scheduler.on_directory(everyone, 4.0)  # a listed mix named by loop cover stays avoided
    assert "m2-5" in scheduler._suspect_nodes
