"""Which nodes are up: what the authority uses to decide who is in the next directory document.

Four kinds of evidence, each with its own rule and each cleared only by its own kind:

- Heartbeats (the node agent, every `heartbeat_interval_s`). A node that has not heartbeated for
  more than `missed_heartbeats * heartbeat_interval_s` is down ("silent"); its next heartbeat
  brings it back. Heartbeats are what make a node known: a node that never heartbeated is
  "unknown", and probes, drains and reports about it are ignored, so that nobody can grow the
  tracker's state by naming nodes that do not exist.
- Probes (the authority connects to the node's advertised address). `probe_failures` failures in a
  row take it down: it heartbeats but cannot be reached where the document would send traffic. One
  success resets the count; a heartbeat does not (it proves the node runs, not that it is
  reachable).
- Loop-cover failure reports (a mix whose loop cover through a node did not come back). A single
  reporter cannot tell which hop of its loop failed, and a malicious mix could report honest ones
  to evict them, so a report alone counts for little: the node is down only while at least
  `report_quorum` distinct reporters, each itself a known node and never the node itself, have
  reported it within the last `report_window_s`. One reporter repeating itself counts once. The
  quorum is thus the size of the coalition needed to evict a node: set it above the number of
  colluding mixes the deployment must survive. Reports expire with the window (and are pruned then),
  not on a heartbeat or a probe: a node that answers probes may still drop packets it forwards.
- Drain (the node leaving, on SIGTERM). It is out at once. A heartbeat brings it back, as the
  first heartbeat of the restarted node, but only one at least `heartbeat_interval_s` after the
  drain: one sent just before the drain and delivered after it must not undo it. The agent
  therefore stops heartbeating when it drains; a restart that heartbeats again within one interval
  is back one interval later, well within an epoch.

State is bounded by the known nodes: at most one heartbeat time, one probe count, one drain time
and one report per (reporter, node) pair, with reports pruned as they expire. `forget` drops a node
(and the reports it made), `forget_silent` every node silent for longer than a limit.

Plain numbers in, answers out: `now` is in seconds (any clock, used consistently); no asyncio.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from nyx.directory.records import DirectoryError

HealthState = Literal["up", "down", "draining", "unknown"]


@dataclass(frozen=True, slots=True)
class NodeHealth:
    """A node's state and why: the reason goes to logs and the authority's status page."""

    state: HealthState
    reason: str


@dataclass(slots=True)
class _Node:
    last_heartbeat: float
    probe_failures: int = 0
    drained_at: float | None = None
    reports: dict[str, float] = field(default_factory=dict)  # reporter -> latest report time


class HealthTracker:
    """Heartbeats, probes, loop-cover reports and drains in; each node's health out."""

    def __init__(self, heartbeat_interval_s: float = 10.0, missed_heartbeats: int = 3,
                 probe_failures: int = 3, report_quorum: int = 2,
                 report_window_s: float = 60.0) -> None:
        if heartbeat_interval_s <= 0 or report_window_s <= 0:
            raise DirectoryError("heartbeat interval and report window must be positive")
        if missed_heartbeats < 1 or probe_failures < 1 or report_quorum < 1:
            raise DirectoryError("missed heartbeats, probe failures and report quorum must be >= 1")
        self.heartbeat_interval_s = heartbeat_interval_s
        self.missed_heartbeats = missed_heartbeats
        self.probe_failures = probe_failures
        self.report_quorum = report_quorum
        self.report_window_s = report_window_s
        self._nodes: dict[str, _Node] = {}

    @property
    def silence_limit_s(self) -> float:
        """How long a node may go without a heartbeat and still be up."""
        return self.missed_heartbeats * self.heartbeat_interval_s

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._nodes

    def __len__(self) -> int:
        return len(self._nodes)

    def heartbeat(self, node_id: str, now: float) -> None:
        """The node is running: it becomes known, and silence (or a drain, after a restart) ends."""
        node = self._nodes.get(node_id)
        if node is None:
            self._nodes[node_id] = _Node(last_heartbeat=now)
            return
        if node.drained_at is not None:
            if now < node.drained_at + self.heartbeat_interval_s:
                return  # sent before the drain, or a restart too fast to tell apart: wait for the next
            node.drained_at = None
        node.last_heartbeat = max(node.last_heartbeat, now)

    def probe(self, node_id: str, ok: bool, now: float) -> bool:
        """The authority's probe of the node's address; False if the node is unknown (ignored)."""
        node = self._nodes.get(node_id)
        if node is None:
            return False
        node.probe_failures = 0 if ok else node.probe_failures + 1
        return True

    def report_loop_failure(self, reporter_id: str, node_id: str, now: float) -> bool:
        """`reporter_id` lost loop cover through `node_id`. Returns whether the report counts: not
        when the reporter names itself, or either node is unknown."""
        node = self._nodes.get(node_id)
        if node is None or reporter_id == node_id or reporter_id not in self._nodes:
            return False
        self._prune_reports(node, now)
        node.reports[reporter_id] = max(now, node.reports.get(reporter_id, now))
        return True

    def drain(self, node_id: str, now: float) -> bool:
        """The node is leaving: out of the next document at once. False if it is unknown."""
        node = self._nodes.get(node_id)
        if node is None:
            return False
        node.drained_at = now
        return True

    def forget(self, node_id: str) -> None:
        """Drop everything about `node_id`, including the reports it made about others."""
        self._nodes.pop(node_id, None)
        for node in self._nodes.values():
            node.reports.pop(node_id, None)

    def forget_silent(self, now: float, after_s: float) -> list[str]:
        """Forget every node with no heartbeat for more than `after_s`; returns their ids, sorted."""
        gone = sorted(node_id for node_id, node in self._nodes.items()
                      if now - node.last_heartbeat > after_s)
        for node_id in gone:
            self.forget(node_id)
        return gone

    def prune(self, now: float) -> None:
        """Drop reports older than the window (also done as reports arrive and in `up`)."""
        for node in self._nodes.values():
            self._prune_reports(node, now)

    def held_reports(self) -> int:
        """How many (reporter, node) reports are held: bounded by the window and the known nodes."""
        return sum(len(node.reports) for node in self._nodes.values())

    def _prune_reports(self, node: _Node, now: float) -> None:
        expired = [r for r, at in node.reports.items() if now - at > self.report_window_s]
        for reporter in expired:
            del node.reports[reporter]

    def _recent_reporters(self, node: _Node, now: float) -> list[str]:
        return sorted(r for r, at in node.reports.items() if now - at <= self.report_window_s)

    def status(self, node_id: str, now: float) -> NodeHealth:
        """The node's health at `now`: unknown, draining, down (with the first rule that holds,
        in the order silence, probes, reports) or up."""
        node = self._nodes.get(node_id)
        if node is None:
            return NodeHealth("unknown", "no heartbeat received")
        if node.drained_at is not None:
            return NodeHealth("draining", f"drained at {node.drained_at:g}")
        silent_s = now - node.last_heartbeat
        if silent_s > self.silence_limit_s:
            return NodeHealth("down", f"no heartbeat for {silent_s:g} s "
                                      f"(down after {self.silence_limit_s:g} s)")
        if node.probe_failures >= self.probe_failures:
            return NodeHealth("down", f"{node.probe_failures} probe failures in a row")
        reporters = self._recent_reporters(node, now)
        if len(reporters) >= self.report_quorum:
            return NodeHealth("down", f"loop failures reported by {len(reporters)} nodes within "
                                      f"{self.report_window_s:g} s: {', '.join(reporters)}")
        return NodeHealth("up", "heartbeating")

    def up(self, now: float) -> set[str]:
        """The nodes to list in the next document."""
        self.prune(now)
        return {node_id for node_id in self._nodes if self.status(node_id, now).state == "up"}
