"""The adversary's link tap (`SimNetwork.add_tap`) and the virtual clock the bench runs on."""

from __future__ import annotations

import asyncio

import pytest

from nyx.bench.anonymity.observer import LinkObserver
from nyx.bench.anonymity.virtual_time import VirtualClockError, run_virtual
from nyx.transport import Fate, LinkProfile, SimNetwork
from nyx.transport.sim import Transmission


async def test_tap_sees_every_packet_with_its_link_times_and_fate_but_not_its_bytes():
    net = SimNetwork(LinkProfile(latency_s=0.010), seed=1)
    a, b = net.transport("a"), net.transport("b")
    await a.listen()
    await b.listen()
    seen: list[Transmission] = []
    net.add_tap(seen.append)
    net.model.fail_link("a", "b")
    a.send("b", b"lost")
    net.model.restore_link("a", "b")
    a.send("b", b"x" * 100)
    b.send("a", b"yy")
    assert [(t.src, t.dst, t.size_bytes, t.fate) for t in seen] == [
        ("a", "b", 4, Fate.FAILED), ("a", "b", 100, Fate.DELIVER), ("b", "a", 2, Fate.DELIVER)]
    assert seen[1].arrives_at == pytest.approx(seen[1].sent_at + 0.010)
    assert seen[0].arrives_at == seen[0].sent_at
    assert not hasattr(seen[1], "packet")
    net.remove_tap(seen.append)
    a.send("b", b"after")
    assert len(seen) == 3
    await net.close()


async def test_link_observer_records_only_packets_that_arrive():
    net = SimNetwork(LinkProfile(latency_s=0.001), seed=1)
    a, b = net.transport("a"), net.transport("b")
    await a.listen()
    await b.listen()
    observer = LinkObserver()
    observer.attach(net)
    net.model.fail_node("b")
    a.send("b", b"gone")
    net.model.restore_node("b")
    a.send("b", b"here")
    observer.detach()
    a.send("b", b"unseen")
    assert [(e.src, e.dst) for e in observer.events] == [("a", "b")]
    await net.close()


def test_virtual_clock_runs_an_hour_of_timers_without_waiting_for_them():
    async def main() -> tuple[float, list[float]]:
        loop = asyncio.get_running_loop()
        fired: list[float] = []
        for at in (3600.0, 0.5, 10.0):
            loop.call_at(at, lambda at=at: fired.append(loop.time()))
        await asyncio.sleep(3600.0)
        await asyncio.sleep(0)
        return loop.time(), fired

    now, fired = run_virtual(main())
    assert now == pytest.approx(3600.0)
    assert fired == pytest.approx([0.5, 10.0, 3600.0])


def test_virtual_clock_reports_a_deadlock_instead_of_hanging():
    async def main() -> None:
        await asyncio.get_running_loop().create_future()  # nobody will ever set it

    with pytest.raises(VirtualClockError):
        run_virtual(main())
