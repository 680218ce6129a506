"""Routes and the multipath scheduler, sans-I/O: which mixes each record crosses, and when a
route is given up and replaced.

A session keeps `width` routes (default 5, at most 8), each one mix per layer, disjoint at every
layer where the directory has enough mixes. Records go out on the routes by smooth weighted round
robin (nginx's SWRR: each pick adds every route's weight to its credit and takes the route with the
most, which then pays the total; the picks interleave evenly in proportion to the weights). A
route's weight is what it delivers:

    weight = (1 - loss) / srtt

with `loss` an exponentially weighted loss ratio from the session's ACKs (acked counts 0, declared
lost counts 1) and `srtt` the smoothed time to acknowledgement of the records it carried. (NyxNet's
scheduler uses 1/rtt x quality x (1 - loss); here quality is the loss term itself.) A new route
starts at the mean of the others, so it is neither starved nor flooded.

**Suspicion** (a route stops receiving new records at once):
- `lost_in_a_row` (default 3) records on it declared lost with none acknowledged in between, and
  no ACK for any of its records (a late one included) within a grace of about its round trip: a
  failed or overloaded mix. Reordering never causes this (loss is declared by time, from the
  delay distribution's tail: nyx.stream.recovery); a route merely slower than the session's
  timer expects gets its late ACKs within the grace;
- a mix on it reported failing: loop cover that did not return through it, or a directory document
  that no longer lists it (`suspect_node`).

A suspected route's records still in flight are handed back (`take_orphans`) so the session
retransmits them on the others at once, without waiting for their loss timeout, and a replacement
is built on the next `maintain` (disjoint from the routes kept, avoiding every suspected mix).
Two times are recorded per replacement: from the first loss that led to suspicion (or the report)
to the first record sent on the replacement (`failovers_s`: detection included, SCL-012's
`mix_failover_duration`), and from the suspicion itself to that record (`reconfigurations_s`:
the reaction alone, SCL-004's `route_update_latency`).

Routes are also rotated after `lifetime_s` (default 10 minutes) without any failure: a route kept
for long lets the mixes on it link a client's traffic over time (Loopix and Nym draw a route per
packet for this reason; multipath trades some of that for delivery that can be measured per route).

`width = 1` is single-route behaviour: one route, replaced when it fails; the session's
retransmission recovers what it lost.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

__all__ = ["DEFAULT_WIDTH", "MAX_WIDTH", "MixEvidence", "Route", "RouteBuildError", "RouteScheduler", "SurbWatch",
           "disjoint_first"]

DEFAULT_WIDTH = 5
MAX_WIDTH = 8
LEFT_DIRECTORY = "left the directory"
MAX_TRACKED = 4096  # records remembered per session (in flight, or ACK-only and never judged)

#: build(avoid, spread) -> the mixes of one new route, one per layer, none in `avoid` (suspected
#: mixes) and, where the directory allows, none in `spread` (the mixes of the routes kept: routes
#: disjoint at every layer); raises RouteBuildError when no route avoids `avoid` (the scheduler then
#: relaxes it). The builder decides what to give up first (a low-latency client gives up
#: disjointness before it leaves its region).
RouteBuilder = Callable[[frozenset[str], frozenset[str]], tuple[str, ...]]


def disjoint_first(pick: Callable[[frozenset[str]], tuple[str, ...]]) -> RouteBuilder:
    """A RouteBuilder from `pick(avoid)`: disjoint if it can be, else only clear of `avoid`."""

    def build(avoid: frozenset[str], spread: frozenset[str]) -> tuple[str, ...]:
        if spread:
            try:
                return pick(avoid | spread)
            except RouteBuildError:
                pass
        return pick(avoid)

    return build


class RouteBuildError(Exception):
    """No route can be built (a layer has no usable mix)."""


@dataclass(slots=True)
class Route:
    route_id: int
    mixes: tuple[str, ...]
    created_at: float
    srtt_s: float | None = None
    loss: float = 0.0
    sent: int = 0
    acked: int = 0
    lost: int = 0
    lost_in_a_row: int = 0
    first_loss_at: float | None = None  # the first loss of the current run of losses
    suspected_at: float | None = None
    reason: str = ""
    credit: float = 0.0
    in_flight: set[int] = field(default_factory=set)
    replaces_failure_at: float | None = None  # set on a replacement until its first send:
    replaces_suspected_at: float | None = None  # when the route it replaces began to fail, was suspected
    pending_at: float | None = None  # lost_in_a_row reached: suspected unless an ACK comes by then

    @property
    def active(self) -> bool:
        return self.suspected_at is None


class MixEvidence:
    """What routes have shown about each mix: the failed routes it was on and when a route through
    it last delivered. Which mix of a failed route failed is unknown; a dead mix is on every failed
    route through it and on no route that delivers. One instance may serve every route scheduler
    of a client (forward and reply, every session): a mix dead for one is dead for all."""

    __slots__ = ("avoid_s", "_failures", "_ok")

    def __init__(self, avoid_s: float = 60.0) -> None:
        self.avoid_s = avoid_s
        self._failures: dict[str, tuple[int, float]] = {}  # mix -> (failed routes, last failure)
        self._ok: dict[str, float] = {}  # mix -> last time a record through it left and arrived

    def failed(self, mixes: Iterable[str], now: float) -> None:
        for mix in mixes:
            count, at = self._failures.get(mix, (0, now))
            self._failures[mix] = (count + 1 if now - at < self.avoid_s else 1, now)

    def delivered(self, mixes: Iterable[str], sent_at: float) -> None:
        """A record sent at `sent_at` through these mixes arrived: they worked then."""
        for mix in mixes:
            self._ok[mix] = max(self._ok.get(mix, sent_at), sent_at)

    def forget(self, mix: str) -> None:
        self._failures.pop(mix, None)

    def blame(self, now: float) -> dict[str, int]:
        """Mixes with evidence against them: failed routes they were on, since a record through
        them last got through, within `avoid_s`."""
        for mix in [m for m, (_, at) in self._failures.items() if now - at >= self.avoid_s]:
            del self._failures[mix]
        return {mix: count for mix, (count, at) in self._failures.items() if at > self._ok.get(mix, -math.inf)}


class RouteScheduler:
    """The routes of one session and the choice of route for each record."""

    def __init__(
        self,
        build: RouteBuilder,
        now: float,
        *,
        width: int = DEFAULT_WIDTH,
        lost_in_a_row: int = 3,
        loss_gain: float = 0.1,
        initial_rtt_s: float = 1.0,
        lifetime_s: float = 600.0,
        avoid_s: float = 60.0,
        evidence: MixEvidence | None = None,
    ) -> None:
        """`evidence`: shared with the client's other schedulers (default: this one's own)."""
        if not 1 <= width <= MAX_WIDTH:
            raise ValueError(f"width: 1..{MAX_WIDTH}, got {width}")
        self.build = build
        self.width = width
        self.lost_in_a_row = lost_in_a_row
        self.loss_gain = loss_gain
        self.initial_rtt_s = initial_rtt_s
        self.lifetime_s = lifetime_s
        self.avoid_s = avoid_s
        self.routes: dict[int, Route] = {}
        self._by_pn: dict[int, int] = {}  # pn in flight -> route id
        self._next_id = 0
        self._orphans: list[int] = []
        self.evidence = evidence if evidence is not None else MixEvidence(avoid_s)
        self._failures: list[tuple[float, float]] = []  # (began to fail, suspected) per route not yet replaced
        self._suspect_nodes: dict[str, str] = {}  # mix -> why new routes avoid it
        self.failovers_s: list[float] = []  # first loss (or report) -> first record on the replacement
        self.reconfigurations_s: list[float] = []  # suspicion -> first record on the replacement
        self.replaced = 0
        self.build_failures = 0
        self.silent_suspicions = 0  # routes given up for losses since the last ACK on any route
        self.maintain(now)

    # -- routes -----------------------------------------------------------------------------------

    def active(self) -> list[Route]:
        return [r for r in self.routes.values() if r.active]

    def maintain(self, now: float) -> None:
        """Retire routes older than `lifetime_s` (a route kept for long lets its mixes link a
        client's traffic over time), drop retired and suspected routes with nothing in flight,
        and build routes up to `width`."""
        self.check(now)
        for route in self.active():
            if now - route.created_at >= self.lifetime_s:
                route.suspected_at, route.reason = now, "rotated"
        for route_id in [i for i, r in self.routes.items() if not r.active and not r.in_flight]:
            del self.routes[route_id]
        while len(self.active()) < self.width:
            route = self._new_route(now)
            if route is None:
                break

    def _new_route(self, now: float) -> Route | None:
        kept = {m for r in self.active() for m in r.mixes}
        reported = set(self._suspect_nodes)
        blame = self.evidence.blame(now)
        # Clear of every mix with evidence against it (and disjoint from the kept routes, as far
        # as the builder can); then only of mixes with more evidence (a dead mix is on every failed
        # route through it, an innocent one on a few); then of reported mixes; then anything.
        thresholds = sorted(set(blame.values()))
        attempts = [reported | {m for m, n in blame.items() if n >= k} for k in thresholds] + [reported, set()]
        for avoid in attempts:
            try:
                mixes = self.build(frozenset(avoid), frozenset(kept))
            except RouteBuildError:
                continue
            if any(mixes == r.mixes for r in self.active()):
                return None  # nothing new to add: fewer routes than `width`, not duplicates
            break
        else:
            self.build_failures += 1
            return None
        route = Route(self._next_id, mixes, now)
        self._next_id += 1
        others = [r.srtt_s for r in self.active() if r.srtt_s is not None]
        if others:
            route.srtt_s = sum(others) / len(others)
        if self._failures:
            route.replaces_failure_at, route.replaces_suspected_at = self._failures.pop(0)
            self.replaced += 1
        self.routes[route.route_id] = route
        return route

    # -- choosing -----------------------------------------------------------------------------------

    def weight(self, route: Route) -> float:
        srtt = route.srtt_s if route.srtt_s is not None else self.initial_rtt_s
        return max(1.0 - route.loss, 0.01) / max(srtt, 1e-3)

    def grace_s(self, route: Route) -> float:
        """How long a route whose records were declared lost in a row gets for a late ACK: losses
        are declared by one timer per session, so a slower route (another region, a busy mix)
        can look lost while its ACKs are still on their way."""
        return max(0.05, route.srtt_s if route.srtt_s is not None else self.initial_rtt_s)

    def check(self, now: float) -> None:
        """Suspect the routes whose grace ran out with no ACK."""
        for route in self.active():
            if route.pending_at is not None and now >= route.pending_at:
                self._suspect(route, now, f"{route.lost_in_a_row} records lost in a row")

    def pick(self, now: float) -> Route | None:
        """The route for the next record (smooth weighted round robin); None with no route."""
        self.check(now)
        active = self.active()
        if not active:
            self.maintain(now)
            active = self.active()
            if not active:
                return None
        total = 0.0
        best: Route | None = None
        for route in active:
            w = self.weight(route)
            route.credit += w
            total += w
            if best is None or route.credit > best.credit:
                best = route
        assert best is not None
        best.credit -= total
        return best

    def on_sent(self, route: Route, pn: int | None, now: float) -> None:
        """A record (pn) or an unnumbered message went out on `route`."""
        route.sent += 1
        if route.replaces_failure_at is not None:
            self.failovers_s.append(now - route.replaces_failure_at)
            self.reconfigurations_s.append(now - (route.replaces_suspected_at or route.replaces_failure_at))
            route.replaces_failure_at = route.replaces_suspected_at = None
        if pn is not None:
            route.in_flight.add(pn)
            self._by_pn[pn] = route.route_id
            if len(self._by_pn) > MAX_TRACKED:  # ACK-only records are never declared lost: forget the oldest
                self._route_of(next(iter(self._by_pn)))

    # -- feedback -------------------------------------------------------------------------------------

    def on_acked(self, pn: int, rtt_s: float, now: float) -> Route | None:
        """A record (or a late ACK for one declared lost) was acknowledged: its route delivers."""
        route = self._route_of(pn)
        if route is None:
            return None
        route.acked += 1
        self.silent_suspicions = 0
        self.evidence.delivered(route.mixes, now - rtt_s)  # it worked when the record left
        route.lost_in_a_row = 0
        route.pending_at = None
        route.first_loss_at = None
        route.loss += self.loss_gain * (0.0 - route.loss)
        route.srtt_s = rtt_s if route.srtt_s is None else 0.875 * route.srtt_s + 0.125 * rtt_s
        return route

    def on_lost(self, pn: int, now: float) -> None:
        # The pn stays mapped to its route (a late ACK clears the route), but leaves its in-flight
        # set: the session has already queued its frames again.
        route_id = self._by_pn.get(pn)
        route = self.routes.get(route_id) if route_id is not None else None
        if route is None:
            return
        route.in_flight.discard(pn)
        route.lost += 1
        route.lost_in_a_row += 1
        route.loss += self.loss_gain * (1.0 - route.loss)
        if route.first_loss_at is None:
            route.first_loss_at = now
        if route.active and route.lost_in_a_row >= self.lost_in_a_row and route.pending_at is None:
            route.pending_at = now + self.grace_s(route)

    def suspect_node(self, node_id: str, now: float, reason: str) -> int:
        """A mix reported failing: every active route through it is suspected. Returns how many."""
        self._suspect_nodes.setdefault(node_id, reason)
        hit = 0
        for route in self.active():
            if node_id in route.mixes:
                if route.first_loss_at is None:
                    route.first_loss_at = now
                self._suspect(route, now, f"{node_id}: {reason}")
                hit += 1
        return hit

    def clear_node(self, node_id: str) -> None:
        """A mix is back (listed and healthy again): new routes may use it."""
        self._suspect_nodes.pop(node_id, None)
        self.evidence.forget(node_id)

    def on_directory(self, listed: Iterable[str], now: float) -> int:
        """A new directory: routes through mixes it no longer lists are suspected, and mixes that
        were avoided only for being unlisted are usable again once listed (a restarted mix)."""
        present = set(listed)
        for node in [n for n, why in self._suspect_nodes.items() if why == LEFT_DIRECTORY and n in present]:
            self.clear_node(node)
        hit = 0
        for route in self.active():
            gone = [m for m in route.mixes if m not in present]
            if gone:
                hit += self.suspect_node(gone[0], now, LEFT_DIRECTORY)
        for node in self._suspect_nodes.keys() - present:
            self._suspect_nodes[node] = LEFT_DIRECTORY  # back in a later document: usable again
        return hit

    def suspect_route(self, route: Route, now: float, reason: str, blame: bool = True) -> None:
        """Give up one route (e.g. a reply route the client has other evidence against).
        `blame=False`: the evidence is circumstantial (no mix of it is known to have failed), so
        its mixes are not avoided by the replacement beyond disjointness."""
        if route.active:
            if route.first_loss_at is None:
                route.first_loss_at = now
            self._suspect(route, now, reason, blame)

    def _suspect(self, route: Route, now: float, reason: str, blame: bool = True) -> None:
        if route.lost_in_a_row:
            self.silent_suspicions += 1  # given up for losses: reset by the next ACK on any route
        route.pending_at = None
        route.suspected_at = now
        route.reason = reason
        self._orphans.extend(sorted(route.in_flight))
        if reason != "rotated":
            if blame:
                self.evidence.failed(route.mixes, now)
        self._failures.append((route.first_loss_at if route.first_loss_at is not None else now, now))

    def take_orphans(self) -> list[int]:
        """pns in flight on routes suspected since the last call: retransmit them now."""
        orphans, self._orphans = self._orphans, []
        return orphans

    def _route_of(self, pn: int) -> Route | None:
        route_id = self._by_pn.pop(pn, None)
        if route_id is None:
            return None
        route = self.routes.get(route_id)
        if route is not None:
            route.in_flight.discard(pn)
        return route


class SurbWatch:
    """Loss on reply routes, seen from the client: which SURBs will never come back.

    The exit cannot tell us which replies it lost (it does not know our routes), but it spends its
    SURBs oldest first (`SurbPool`). So when SURBs we issued *later* keep coming back while an
    earlier one does not, the earlier one (or the reply it carried) was lost: a SURB overtaken by
    `overtaken` later ones is declared lost. Reordering alone (SURBs reach the exit over routes of
    different delays, replies return over others) overtakes a SURB by a few, not by several times
    the number of routes. Sequence numbers are the client's own, per session.
    """

    __slots__ = ("overtaken", "_outstanding")

    def __init__(self, overtaken: int = 16) -> None:
        self.overtaken = overtaken
        self._outstanding: dict[int, int] = {}  # seq -> how many later SURBs came back

    def issued(self, seq: int) -> None:
        self._outstanding[seq] = 0
        if len(self._outstanding) > MAX_TRACKED:
            del self._outstanding[next(iter(self._outstanding))]

    def returned(self, seq: int) -> list[int]:
        """SURB `seq` came back; returns the seqs now declared lost (ascending)."""
        self._outstanding.pop(seq, None)
        lost = []
        for earlier in list(self._outstanding):
            if earlier >= seq:
                break
            self._outstanding[earlier] += 1
            if self._outstanding[earlier] >= self.overtaken:
                del self._outstanding[earlier]
                lost.append(earlier)
        return lost
