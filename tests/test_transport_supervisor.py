"""The link supervisor, driven with plain numbers: times in, decisions out (no sockets, no loop)."""

from __future__ import annotations

import random

import pytest

from nyx.transport.link import Backoff, LinkPhase
from nyx.transport.supervisor import (
    AbandonConnect,
    CloseIdle,
    ClosePeerSilent,
    Connect,
    LinkSupervisor,
    LinkTimers,
    Ping,
)

TIMERS = LinkTimers(connect_timeout_s=5.0, keepalive_s=5.0, idle_close_s=300.0, peer_silence_s=3.0,
                    backoff_initial_s=0.05, backoff_max_s=5.0)


def supervisor(timers: LinkTimers = TIMERS) -> LinkSupervisor:
    return LinkSupervisor(timers, Backoff(timers.backoff_initial_s, timers.backoff_max_s, rng=random.Random(1)))


def up_at(now: float, timers: LinkTimers = TIMERS) -> LinkSupervisor:
    s = supervisor(timers)
    s.want()
    assert s.poll(now) == Connect(1)
    s.handshake_completed(now)
    return s


def test_an_unwanted_link_stays_down_and_asks_for_nothing():
    s = supervisor()
    assert s.poll(100.0) is None
    assert s.phase is LinkPhase.DOWN and s.next_deadline() is None


def test_a_wanted_link_connects_at_once_and_is_up_after_the_handshake():
    s = supervisor()
    s.want()
    assert s.poll(10.0) == Connect(attempt=1)
    assert s.phase is LinkPhase.CONNECTING and s.next_deadline() == 15.0
    assert s.poll(12.0) is None
    s.handshake_completed(12.0)
    assert s.phase is LinkPhase.UP
    assert s.next_deadline() == 12.0 + 1.5  # checked every min(keepalive, silence / 2)


def test_a_handshake_that_takes_too_long_is_abandoned_then_retried_after_a_backoff():
    s = supervisor()
    s.want()
    assert s.poll(0.0) == Connect(1)
    decision = s.poll(5.0)
    assert isinstance(decision, AbandonConnect) and decision.waited_s == 5.0
    assert s.phase is LinkPhase.BACKOFF
    assert 0.025 <= decision.retry_in_s <= 0.05  # full jitter over the upper half of 50 ms
    assert s.poll(5.0 + decision.retry_in_s - 0.001) is None
    assert s.poll(5.0 + decision.retry_in_s) == Connect(2)


def test_backoff_doubles_per_failure_up_to_its_ceiling_and_resets_on_success():
    s = supervisor()
    s.want()
    now, ceilings = 0.0, []
    for attempt in range(1, 10):
        assert s.poll(now) == Connect(attempt)
        delay = s.connect_failed(now)
        ceilings.append(min(5.0, 0.05 * 2 ** (attempt - 1)))
        assert ceilings[-1] / 2 <= delay <= ceilings[-1]
        now += delay
    assert ceilings[-1] == 5.0  # capped at backoff_max_s
    assert s.poll(now) == Connect(10)
    s.handshake_completed(now)
    s.handshake_completed(now)
    assert s.connection_ended(now, queued=False) <= 0.05  # a success reset the schedule


def test_a_quiet_link_is_pinged_after_keepalive_and_closed_after_idle_close():
    s = up_at(0.0)
    assert s.poll(1.5, packets_sent=1) is None  # sending is activity
    assert s.poll(6.0, packets_sent=1) is None  # 4.5 s quiet
    assert s.poll(7.5, packets_sent=1) == Ping()  # 6 s quiet >= keepalive_s
    assert s.poll(7.6, packets_sent=1) is None  # next check 1.5 s later
    assert s.poll(9.0, packets_sent=1) == Ping()
    assert s.poll(301.5, packets_sent=1) == CloseIdle(idle_s=300.0)
    assert s.next_deadline() is None  # waits for the close to finish
    assert s.connection_ended(302.0, queued=False) is None
    assert s.phase is LinkPhase.DOWN and not s.wanted
    s.want()
    assert s.poll(400.0) == Connect(2)


def test_an_idle_close_with_packets_queued_reconnects():
    s = up_at(0.0)
    assert s.poll(301.5) == CloseIdle(idle_s=301.5)
    delay = s.connection_ended(302.0, queued=True)
    assert delay is not None and s.phase is LinkPhase.BACKOFF and s.wanted


def test_a_peer_that_stops_answering_is_declared_silent_and_reconnected():
    s = up_at(0.0)
    # we sent at 1.0 and heard nothing since 0.9: silent for more than 3 s at the check after 3.9
    assert s.poll(3.0, packets_sent=5, last_sent=1.0, last_received=0.9) is None
    decision = s.poll(4.5, packets_sent=5, last_sent=1.0, last_received=0.9)
    assert isinstance(decision, ClosePeerSilent) and decision.silent_s == pytest.approx(3.6)
    assert s.phase is LinkPhase.BACKOFF and s.wanted
    assert s.connection_ended(4.5, queued=False) is None  # the shell's later report changes nothing
    assert s.poll(4.5 + decision.retry_in_s) == Connect(2)


def test_a_peer_that_answers_is_not_silent_however_long_ago_we_sent():
    s = up_at(0.0)
    assert s.poll(1.5, packets_sent=1, last_sent=1.0, last_received=1.01) is None  # answered
    assert s.poll(10.5, packets_sent=1, last_sent=1.0, last_received=1.01) == Ping()  # quiet, not silent


def test_a_connection_lost_while_up_is_reconnected_after_a_backoff():
    s = up_at(0.0)
    delay = s.connection_ended(2.0, queued=False)
    assert delay is not None and 0.025 <= delay <= 0.05
    assert s.next_deadline() == 2.0 + delay
    assert s.poll(2.0 + delay) == Connect(2)


def test_check_interval_follows_the_shorter_of_keepalive_and_half_the_silence():
    assert LinkTimers(keepalive_s=0.05, peer_silence_s=3.0).check_interval_s == 0.05
    assert LinkTimers(keepalive_s=5.0, peer_silence_s=0.4).check_interval_s == 0.2
