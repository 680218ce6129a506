"""HealthTracker: who is up for the next document, and who cannot push whom out of it."""

from __future__ import annotations

import pytest

from nyx.directory.health import HealthTracker, NodeHealth
from nyx.directory.records import DirectoryError


def tracker(*node_ids: str, now: float = 0.0, **settings: float) -> HealthTracker:
    health = HealthTracker(**settings)  # type: ignore[arg-type]
    for node_id in node_ids:
        health.heartbeat(node_id, now)
    return health


# --- heartbeats -------------------------------------------------------------------------------

def test_a_node_never_heard_from_is_unknown_and_not_up() -> None:
    health = HealthTracker()
    assert health.status("mix-1", 0.0) == NodeHealth("unknown", "no heartbeat received")
    assert health.up(0.0) == set()


def test_a_heartbeating_node_is_up() -> None:
    health = tracker("mix-1")
    for t in range(10, 200, 10):
        health.heartbeat("mix-1", float(t))
        assert health.status("mix-1", t + 9.0).state == "up"
    assert health.up(200.0) == {"mix-1"}


def test_a_node_that_stops_heartbeating_goes_down_after_missed_heartbeats_times_interval() -> None:
    health = tracker("mix-1", heartbeat_interval_s=10.0, missed_heartbeats=3)
    assert health.status("mix-1", 30.0).state == "up"
    status = health.status("mix-1", 30.5)
    assert status.state == "down" and "no heartbeat for 30.5 s" in status.reason
    assert health.up(30.5) == set()


def test_a_silent_node_comes_back_up_on_its_next_heartbeat() -> None:
    health = tracker("mix-1")
    assert health.status("mix-1", 100.0).state == "down"
    health.heartbeat("mix-1", 100.0)
    assert health.status("mix-1", 100.0).state == "up"


def test_a_late_delivered_old_heartbeat_does_not_turn_back_the_clock() -> None:
    health = tracker("mix-1")
    health.heartbeat("mix-1", 25.0)
    health.heartbeat("mix-1", 5.0)
    assert health.status("mix-1", 50.0).state == "up"


# --- drain ------------------------------------------------------------------------------------

def test_a_draining_node_is_out_at_once() -> None:
    health = tracker("mix-1")
    assert health.drain("mix-1", 1.0)
    assert health.status("mix-1", 1.0).state == "draining"
    assert health.up(1.0) == set()


def test_a_heartbeat_sent_before_the_drain_and_delivered_after_does_not_undo_it() -> None:
    health = tracker("mix-1", heartbeat_interval_s=10.0)
    health.drain("mix-1", 100.0)
    health.heartbeat("mix-1", 100.2)
    assert health.status("mix-1", 101.0).state == "draining"


def test_a_drained_node_stays_out_while_silent() -> None:
    health = tracker("mix-1")
    health.drain("mix-1", 1.0)
    assert health.status("mix-1", 1_000.0).state == "draining"


def test_a_heartbeat_after_a_restart_brings_a_drained_node_back() -> None:
    health = tracker("mix-1", heartbeat_interval_s=10.0)
    health.drain("mix-1", 100.0)
    health.heartbeat("mix-1", 112.0)
    assert health.status("mix-1", 112.0) == NodeHealth("up", "heartbeating")


def test_a_drain_of_an_unknown_node_is_ignored() -> None:
    health = HealthTracker()
    assert not health.drain("mix-9", 0.0)
    assert "mix-9" not in health


# --- probes -----------------------------------------------------------------------------------

def test_probe_failures_in_a_row_take_a_heartbeating_node_down() -> None:
    health = tracker("mix-1", probe_failures=3)
    health.probe("mix-1", False, 1.0)
    health.probe("mix-1", False, 2.0)
    assert health.status("mix-1", 2.0).state == "up"
    health.probe("mix-1", False, 3.0)
    status = health.status("mix-1", 3.0)
    assert status.state == "down" and status.reason == "3 probe failures in a row"


def test_a_probe_success_resets_the_failure_count() -> None:
    health = tracker("mix-1", probe_failures=3)
    for ok in (False, False, True, False, False):
        health.probe("mix-1", ok, 1.0)
    assert health.status("mix-1", 1.0).state == "up"


def test_a_probe_success_brings_an_unreachable_node_back() -> None:
    health = tracker("mix-1", probe_failures=1)
    health.probe("mix-1", False, 1.0)
    assert health.status("mix-1", 1.0).state == "down"
    health.probe("mix-1", True, 2.0)
    assert health.status("mix-1", 2.0).state == "up"


def test_a_heartbeat_does_not_clear_probe_failures() -> None:
    health = tracker("mix-1", probe_failures=1)
    health.probe("mix-1", False, 1.0)
    health.heartbeat("mix-1", 2.0)
    assert health.status("mix-1", 2.0).state == "down"


def test_a_probe_of_an_unknown_node_is_ignored() -> None:
    health = HealthTracker()
    assert not health.probe("mix-9", False, 0.0)
    assert len(health) == 0


# --- loop-cover failure reports ----------------------------------------------------------------

def test_one_reporter_alone_cannot_take_a_node_down_however_often_it_reports() -> None:
    health = tracker("victim", "liar", report_quorum=2)
    for t in range(1_000):
        health.report_loop_failure("liar", "victim", t / 100)
    assert health.status("victim", 10.0).state == "up"
    assert health.held_reports() == 1


def test_a_node_reporting_itself_does_not_count() -> None:
    health = tracker("mix-1", "mix-2", report_quorum=2)
    assert not health.report_loop_failure("mix-1", "mix-1", 1.0)
    health.report_loop_failure("mix-2", "mix-1", 1.0)
    assert health.status("mix-1", 1.0).state == "up"


def test_a_reporter_that_is_not_a_known_node_does_not_count() -> None:
    health = tracker("mix-1", "mix-2", report_quorum=2)
    assert not health.report_loop_failure("sybil-1", "mix-1", 1.0)
    health.report_loop_failure("mix-2", "mix-1", 1.0)
    assert health.status("mix-1", 1.0).state == "up"


def test_a_quorum_of_distinct_reporters_within_the_window_takes_a_node_down() -> None:
    health = tracker("mix-1", "mix-2", "mix-3", report_quorum=2, report_window_s=60.0)
    health.report_loop_failure("mix-2", "mix-1", 1.0)
    health.report_loop_failure("mix-3", "mix-1", 50.0)
    for node_id in ("mix-1", "mix-2", "mix-3"):
        health.heartbeat(node_id, 50.0)
    status = health.status("mix-1", 50.0)
    assert status.state == "down" and status.reason.endswith("mix-2, mix-3")
    assert health.up(50.0) == {"mix-2", "mix-3"}


def test_reports_further_apart_than_the_window_do_not_make_a_quorum() -> None:
    health = tracker("mix-1", "mix-2", "mix-3", report_quorum=2, report_window_s=60.0)
    health.report_loop_failure("mix-2", "mix-1", 0.0)
    for t in range(10, 100, 10):
        for node_id in ("mix-1", "mix-2", "mix-3"):
            health.heartbeat(node_id, float(t))
    health.report_loop_failure("mix-3", "mix-1", 90.0)
    assert health.status("mix-1", 90.0).state == "up"


def test_a_node_taken_down_by_reports_comes_back_when_they_expire() -> None:
    health = tracker("mix-1", "mix-2", "mix-3", report_window_s=60.0)
    health.report_loop_failure("mix-2", "mix-1", 0.0)
    health.report_loop_failure("mix-3", "mix-1", 0.0)
    for t in range(10, 80, 10):
        health.heartbeat("mix-1", float(t))
        health.probe("mix-1", True, float(t))
    assert health.status("mix-1", 60.0).state == "down"  # heartbeats and probes do not clear reports
    assert health.status("mix-1", 61.0).state == "up"


def test_expired_reports_are_pruned() -> None:
    health = tracker("mix-1", "mix-2", "mix-3", report_window_s=60.0)
    health.report_loop_failure("mix-2", "mix-1", 0.0)
    health.report_loop_failure("mix-3", "mix-2", 0.0)
    assert health.held_reports() == 2
    health.up(61.0)
    assert health.held_reports() == 0


# --- bounded state ----------------------------------------------------------------------------

def test_forget_drops_a_node_and_the_reports_it_made() -> None:
    health = tracker("mix-1", "mix-2", "mix-3")
    health.report_loop_failure("mix-2", "mix-1", 1.0)
    health.report_loop_failure("mix-3", "mix-1", 1.0)
    health.forget("mix-3")
    assert "mix-3" not in health and health.status("mix-3", 1.0).state == "unknown"
    assert health.status("mix-1", 1.0).state == "up"
    health.forget("mix-9")  # forgetting an unknown node is harmless


def test_forget_silent_drops_only_nodes_silent_past_the_limit() -> None:
    health = tracker("old", now=0.0)
    health.heartbeat("fresh", 500.0)
    assert health.forget_silent(600.0, after_s=300.0) == ["old"]
    assert len(health) == 1 and "fresh" in health


def test_held_reports_stay_bounded_by_known_pairs_whatever_the_report_rate() -> None:
    nodes = [f"mix-{i}" for i in range(5)]
    health = tracker(*nodes, report_quorum=10)
    for t in range(2_000):
        for reporter in nodes:
            for target in nodes:
                health.report_loop_failure(reporter, target, t / 10)
        health.report_loop_failure("sybil", nodes[0], t / 10)
    assert health.held_reports() == 5 * 4
    assert len(health) == 5


# --- settings ---------------------------------------------------------------------------------

@pytest.mark.parametrize("settings", [{"heartbeat_interval_s": 0.0}, {"missed_heartbeats": 0},
                                      {"probe_failures": 0}, {"report_quorum": 0},
                                      {"report_window_s": -1.0}])
def test_nonsensical_settings_are_refused(settings: dict[str, float]) -> None:
    with pytest.raises(DirectoryError):
        HealthTracker(**settings)  # type: ignore[arg-type]
