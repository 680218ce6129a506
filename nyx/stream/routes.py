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
- `lost_in_a_row` (default 3) records on it declared lost with none acknowledged in between: a
  failed or overloaded mix. Reordering never causes this (loss is declared by time, from the
  delay distribution's tail: nyx.stream.recovery);
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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

__all__ = ["DEFAULT_WIDTH", "MAX_WIDTH", "Route", "RouteBuildError", "RouteScheduler"]

DEFAULT_WIDTH = 5
MAX_WIDTH = 8
MAX_TRACKED = 4096  # records remembered per session (in flight, or ACK-only and never judged)

#: build(avoid) -> the mixes of one new route, one per layer; raises RouteBuildError when the
#: directory cannot give one that avoids `avoid` (the scheduler then relaxes the avoidance).
RouteBuilder = Callable[[frozenset[str]], tuple[str, ...]]


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

    @property
    def active(self) -> bool:
        return self.suspected_at is None


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
    ) -> None:
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
        self._failed_mixes: dict[str, float] = {}  # mix -> until when new routes avoid it
        self._failures: list[tuple[float, float]] = []  # (began to fail, suspected) per route not yet replaced
        self._suspect_nodes: set[str] = set()
        self.failovers_s: list[float] = []  # first loss (or report) -> first record on the replacement
        self.reconfigurations_s: list[float] = []  # suspicion -> first record on the replacement
        self.replaced = 0
        self.build_failures = 0
        self.maintain(now)

    # -- routes -----------------------------------------------------------------------------------

    def active(self) -> list[Route]:
        return [r for r in self.routes.values() if r.active]

    def maintain(self, now: float) -> None:
        """Retire routes older than `lifetime_s` (a route kept for long lets its mixes link a
        client's traffic over time), drop retired and suspected routes with nothing in flight,
        and build routes up to `width`."""
        for route in self.active():
            if now - route.created_at >= self.lifetime_s:
                route.suspected_at, route.reason = now, "rotated"
        for route_id in [i for i, r in self.routes.items() if not r.active and not r.in_flight]:
            del self.routes[route_id]
        for mix in [m for m, until in self._failed_mixes.items() if until <= now]:
            del self._failed_mixes[mix]
        while len(self.active()) < self.width:
            route = self._new_route(now)
            if route is None:
                break

    def _new_route(self, now: float) -> Route | None:
        kept = {m for r in self.active() for m in r.mixes}
        # Which mix of a route that lost records failed is unknown: avoid all of them for a while.
        failed = {m for m, until in self._failed_mixes.items() if until > now}
        suspects = self._suspect_nodes | failed
        # Disjoint from the kept routes and clear of suspects if the directory allows; then only
        # clear of suspects; then of reported mixes; then anything (a small network still routes).
        for avoid in (kept | suspects, suspects, set(self._suspect_nodes), set()):
            try:
                mixes = self.build(frozenset(avoid))
            except RouteBuildError:
                continue
            if not avoid and len(self.active()) >= 1 and any(mixes == r.mixes for r in self.active()):
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

    def pick(self, now: float) -> Route | None:
        """The route for the next record (smooth weighted round robin); None with no route."""
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

    def on_acked(self, pn: int, rtt_s: float, now: float) -> None:
        route = self._route_of(pn)
        if route is None:
            return
        route.acked += 1
        route.lost_in_a_row = 0
        route.first_loss_at = None
        route.loss += self.loss_gain * (0.0 - route.loss)
        route.srtt_s = rtt_s if route.srtt_s is None else 0.875 * route.srtt_s + 0.125 * rtt_s

    def on_lost(self, pn: int, now: float) -> None:
        route = self._route_of(pn)
        if route is None:
            return
        route.lost += 1
        route.lost_in_a_row += 1
        route.loss += self.loss_gain * (1.0 - route.loss)
        if route.first_loss_at is None:
            route.first_loss_at = now
        if route.active and route.lost_in_a_row >= self.lost_in_a_row:
            self._suspect(route, now, f"{route.lost_in_a_row} records lost in a row")

    def suspect_node(self, node_id: str, now: float, reason: str) -> int:
        """A mix reported failing: every active route through it is suspected. Returns how many."""
        self._suspect_nodes.add(node_id)
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
        self._suspect_nodes.discard(node_id)

    def on_directory(self, listed: Iterable[str], now: float) -> int:
        """A new directory: routes through mixes it no longer lists are suspected."""
        present = set(listed)
        hit = 0
        for route in self.active():
            gone = [m for m in route.mixes if m not in present]
            if gone:
                hit += self.suspect_node(gone[0], now, "left the directory")
        return hit

    def _suspect(self, route: Route, now: float, reason: str) -> None:
        route.suspected_at = now
        route.reason = reason
        self._orphans.extend(sorted(route.in_flight))
        for mix in route.mixes:
            self._failed_mixes[mix] = now + self.avoid_s
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

    def forget(self, pns: Sequence[int]) -> None:
        """pns the session no longer tracks (acked or lost elsewhere)."""
        for pn in pns:
            self._route_of(pn)

    # -- figures ----------------------------------------------------------------------------------

    def summary(self) -> dict[str, float]:
        active = self.active()
        return {
            "routes_active": float(len(active)),
            "routes_replaced_total": float(self.replaced),
            "route_failover_s_last": self.failovers_s[-1] if self.failovers_s else math.nan,
            "route_reconfiguration_s_last": self.reconfigurations_s[-1] if self.reconfigurations_s else math.nan,
        }
