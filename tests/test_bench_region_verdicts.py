"""The region replays, SCL-014 (cross-region latency) and SCL-030 (a whole region fails), each run
briefly through a three-region mixnet in this process (real gateways, mixes, handshakes and
Sphinx packets over `SimTransport`, 90 ms one way between regions), and each driven to FAIL by
an injected fault and to INCONCLUSIVE when it cannot see what it measures.

No speed assertions: the value is really measured, the load is reported honestly, and the
verdict turns to FAIL against an SLO just beyond the value and under the fault.
"""

from __future__ import annotations

import asyncio
import math
import time

import pytest

from tests.test_bench_stream_verdicts import brief, check_shape

# -- SCL-014: median latency of requests whose streams cross regions --------------------------------


def test_scl_014_low_latency_streams_cross_regions_only_to_reach_an_exit_abroad() -> None:
    result = brief("SCL-014", duration_s=2.0, scale=0.01)  # 8 req/s per region over 12 clients
    record = check_shape(result)
    counts = record["counts"]
    assert counts["clients"] == 12 and counts["unanswered"] == 0 and counts["mismatched"] == 0
    assert counts["judged_requests"] > 0
    # A crossing round trip leaves its region and comes back: at least 2 x 90 ms of links.
    assert result.measurement.value > 180.0
    notes = result.notes()
    assert any(n.startswith("low-latency, in region:") for n in notes)
    assert any(n.startswith("default routes, crossing:") and "the SLO" in n for n in notes)


def test_scl_014_fails_when_the_links_between_regions_slow_to_300_ms(monkeypatch: pytest.MonkeyPatch) -> None:
    from nyx.bench.scenarios import scl_014

    real_make_clients, real_route_nodes = scl_014.make_clients, scl_014.route_nodes
    nets = []

    def make_clients(net, per_region):  # type: ignore[no-untyped-def]
        nets.append(net)
        monkeypatch.setattr(scl_014, "CROSS_REGION_S", 0.300)  # the allowance for answers, from here on
        return real_make_clients(net, per_region)

    def route_nodes(client):  # type: ignore[no-untyped-def]
        matrix = nets[0].network.model.region_latency_s  # once the load starts (set-up stays quick)
        for pair in matrix:
            if pair[0] != pair[1]:
                matrix[pair] = 0.300
        return real_route_nodes(client)

    monkeypatch.setattr(scl_014, "make_clients", make_clients)
    monkeypatch.setattr(scl_014, "route_nodes", route_nodes)
    # The slowdown lands after warm-up, so sessions first resend on round trips learned at 90 ms and
    # a default route's echo (8 crossings, p95 2.6 s on a busy host) may come after the usual 0.25 s
    # processing allowance; of only 27 requests two such would read as a shortfall (INCONCLUSIVE,
    # seen once in CI). The load is not what this test drives, so late answers still count.
    monkeypatch.setattr(scl_014, "PROCESSING_ALLOWANCE_S", 3.0)
    monkeypatch.setattr(scl_014, "GRACE_S", 8.0)
    result = brief("SCL-014", duration_s=1.0, scale=0.01)
    assert result.verdict == "FAIL" and result.measurement.value > 600.0  # two crossings at least


def test_scl_014_is_inconclusive_when_the_process_cannot_carry_the_load(monkeypatch: pytest.MonkeyPatch) -> None:
    from nyx.bench.scenarios import scl_014

    real_route_nodes = scl_014.route_nodes
    hogs: list[asyncio.Task[None]] = []

    async def hog() -> None:  # another tenant holding the one core: 200 ms of every 201
        while True:
            time.sleep(0.2)
            await asyncio.sleep(0.001)

    def route_nodes(client):  # type: ignore[no-untyped-def]
        if not hogs:  # the load has started (the replay samples routes from then on)
            hogs.append(asyncio.get_running_loop().create_task(hog()))
        return real_route_nodes(client)

    monkeypatch.setattr(scl_014, "route_nodes", route_nodes)
    monkeypatch.setattr(scl_014, "GRACE_S", 1.0)
    try:
        result = brief("SCL-014", duration_s=1.5, scale=0.05)  # 120 req/s asked
    finally:
        for task in hogs:
            task.cancel()
    assert result.verdict == "INCONCLUSIVE" and result.shortfall
    assert any("could not offer the load" in n for n in result.notes())


# -- SCL-030: every mix and gateway of one region fails ---------------------------------------------


@pytest.fixture
def few_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    """4 clients on routes across every region and 1 low-latency client: a shorter set-up."""
    from nyx.bench.scenarios import scl_030

    monkeypatch.setattr(scl_030, "DEFAULT_CLIENTS", 4)
    monkeypatch.setattr(scl_030, "HOME_CLIENTS", 1)


@pytest.mark.usefixtures("few_clients")
def test_scl_030_clients_leave_a_failed_region_and_lose_no_accepted_byte() -> None:
    result = brief("SCL-030", duration_s=12.0, scale=1.0)  # directory intervals compressed by 0.2
    record = check_shape(result)
    counts = record["counts"]
    assert counts["affected"] > 0 and counts["completed"] == counts["affected"]
    assert counts["lost_streams"] == 0 and counts["never"] == 0 and counts["unresolved"] == 0
    # The directory needs 3 heartbeat intervals of silence (30 s, scaled back) before the document changes.
    assert 0.4 < result.measurement.value < math.inf
    assert any("byte-exact on every stream" in n for n in result.notes())


@pytest.mark.usefixtures("few_clients")
def test_scl_030_fails_when_the_route_scheduler_never_suspects_a_route(monkeypatch: pytest.MonkeyPatch) -> None:
    from nyx.stream.routes import RouteScheduler

    from nyx.bench.scenarios import scl_030

    monkeypatch.setattr(RouteScheduler, "_suspect", lambda self, route, now, reason: None)
    monkeypatch.setattr(scl_030, "GRACE_S", 2.0)  # what never moved is known by the end of the run
    result = brief("SCL-030", duration_s=10.0, scale=1.0)
    assert result.verdict == "FAIL" and result.measurement.value == math.inf
    assert result.measurement.counts["never"] > 0


@pytest.mark.usefixtures("few_clients")
def test_scl_030_is_inconclusive_when_streams_asked_for_do_not_run(monkeypatch: pytest.MonkeyPatch) -> None:
    from nyx.bench.scenarios import scl_030

    def unreachable_client(net, entry, exit_id):  # type: ignore[no-untyped-def]
        client = net.client(gateway=entry, exit=exit_id, connect_timeout_s=0.5, max_tries=1)
        net.network.model.fail_link(client.client_id, entry)  # its link to the entry is down
        return client

    monkeypatch.setattr(scl_030, "low_latency_client", unreachable_client)
    monkeypatch.setattr(scl_030, "GRACE_S", 1.0)
    result = brief("SCL-030", duration_s=2.0, scale=1.0)
    assert result.verdict == "INCONCLUSIVE" and result.shortfall
    assert result.measurement.counts["streams"] == 4
