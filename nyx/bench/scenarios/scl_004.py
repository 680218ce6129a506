"""SCL-004 Multipath集中: 800 flows, 5 paths each, 25 mixes; route reconfiguration <= 400 ms.

A whole mixnet in this process (`nyx.bench.mixnet`: 10 gateways, three layers of 8 mixes, real
Sphinx packets over `SimTransport`; 25 mixes do not split into three equal layers, 24 is the
nearest) and `FLOWS` x --scale flows (`_failover`): each a `nyx.Client` with one session of 5
disjoint routes (`routes=5`, the seed's "5 paths/flow") and one echo stream writing 64 B
messages at `FLOW_RATE_MSGS_S` (the load model gives no per-flow rate: 10/s is ours, an
interactive flow). At a third of the run the two mixes carrying the most active routes (one in
layer 2, one in layer 1) are killed: each sits on most flows' routes.

**The value** is `route_update_latency`: per replacement, from the route's suspicion (3 records
lost in a row) to the first record sent on its replacement (`RouteScheduler.reconfigurations_s`,
the reaction alone; detection is SCL-012's), over every replacement of every flow in the run; the
verdict judges the **p95** in ms. p95 rather than the maximum because the metric is a latency
over many routine events (hundreds here, a fleet's route churn in production) judged like the
catalogue's other latencies (SCL-001, 035, 037, 044), and its tail here is the shared event loop's
stalls, not the scheduler; the maximum is in the notes beside it. A flow still routing through a
killed mix at the end (its failure never detected) counts as one event lasting from the kill to
the end, a lower bound.

**What bounds it.** The replacement is built at the suspicion, but "first record on it" waits for
the flow's next record that smooth weighted round robin gives it: the records in flight on the
failed route are resent at once, and the next messages follow at the flow's rate, so at 10
messages/s the figure is about one to two message periods. A slower flow reads slower: the
figure is the scheduler's reaction at this flow rate, not a property of the route computation.

**Bytes.** Every echoed byte is checked against what was written, in order; bytes written and not
echoed after the drain make the value infinite (a failed verdict, named in the notes).

**Load.** The asked load is flows; the achieved load is the flows' worth of messages actually
written on schedule (flows abandoned at the set-up deadline, or writers held back by a loaded
process, count against it). One core carries about 15 such flows (150 messages/s, about 13 mix
packets each) before the loop lags by more than the 400 ms SLO, so `run SCL-004` at scale 1 is
INCONCLUSIVE (800 flows cannot open within the set-up deadline); a judged run is a scaled one:
`run SCL-004 --scale 0.015` (12 flows).
"""

from __future__ import annotations

import math

from nyx.bench.loadgen import percentile
from nyx.bench.mixnet import MixnetShape
from nyx.bench.report import Measurement
from nyx.bench.scenarios import RunOptions
from nyx.bench.scenarios._failover import FailoverLoad, load_counts, load_notes, run_failover, victims_on_routes

FLOWS = 800
ROUTES = 5
GATEWAYS = 10
MIXES_PER_LAYER = 8  # 3 x 8 = 24: the nearest to the seed's 25 in three equal layers
KILLED = 2
FLOW_RATE_MSGS_S = 10.0
MESSAGE_BYTES = 64
KILL_SHARE = 1 / 3  # of the run, when the mixes die
OPEN_DEADLINE_S = 30.0
DRAIN_S = 20.0
ROUTE_BUILD_DELAY_S = 0.0  # a fault injection (tests): replacements built this late
DEFAULT_DURATION_S = 30.0
QUICK = (5.0, 0.01)


async def replay(options: RunOptions) -> Measurement:
    flows = max(1, round(FLOWS * options.scale))
    load = FailoverLoad(
        shape=MixnetShape(gateways=GATEWAYS, mixes_per_layer=MIXES_PER_LAYER),
        flows=flows,
        flow_rate_msgs_s=FLOW_RATE_MSGS_S,
        message_bytes=MESSAGE_BYTES,
        duration_s=options.duration_s,
        kill_at_s=KILL_SHARE * options.duration_s,
        pick_victims=victims_on_routes(KILLED),
        routes=ROUTES,
        open_deadline_s=OPEN_DEADLINE_S,
        drain_s=DRAIN_S,
        route_build_delay_s=ROUTE_BUILD_DELAY_S,
    )
    run = await run_failover(load, options.seed, options.tick)
    events = [x for f in run.flows for x in f.reconfigurations_s]
    unhealed = run.unhealed()
    samples = events + [run.censored_s()] * len(unhealed)
    lost, mismatched = run.lost_bytes(), run.mismatched()
    p95_ms = 1000 * percentile(samples, 95)
    value = math.inf if (lost or mismatched) and samples else p95_ms
    scheduled = sum(f.scheduled_msgs for f in run.flows)
    achieved = flows * run.written_msgs() / scheduled if scheduled else 0.0
    failovers = [x for f in run.flows for x in f.failovers_s]
    notes = [
        f"reconfiguration p50 {1000 * percentile(samples, 50):.1f} ms, p95 {p95_ms:.1f} ms, max "
        f"{1000 * max(samples, default=math.nan):.1f} ms over {len(events):,} replacements "
        f"({sum(f.events_before_kill for f in run.flows)} before the kill); the flow's message period is "
        f"{1000 / FLOW_RATE_MSGS_S:.0f} ms, which bounds how soon a replacement is picked",
        f"{len(unhealed)} of {len(run.affected())} affected flows still had an active route through a killed mix "
        f"at the end (each counted as {run.censored_s():.1f} s, a lower bound)",
        f"detection, for reference (SCL-012's metric): first loss -> first record on the replacement p50 "
        f"{percentile(failovers, 50):.2f} s, max {max(failovers, default=math.nan):.2f} s",
        *load_notes(run, load),
    ]
    if lost or mismatched:
        notes.insert(0, f"FAILED BYTES: {lost:,} bytes never echoed, {mismatched} flows with altered bytes: the "
                        "value is infinite")
    if ROUTE_BUILD_DELAY_S > 0:
        notes.insert(0, f"fault injected: every replacement route built {ROUTE_BUILD_DELAY_S:g} s late")
    return Measurement(
        value=value,
        duration_s=options.duration_s,
        offered_rate=float(flows),
        achieved_rate=achieved,
        full_rate=float(FLOWS),
        rate_unit="flows",
        detail=(
            f"p95 of {len(samples):,} route reconfigurations (suspicion -> first record on the replacement, "
            f"RouteScheduler.reconfigurations_s) over {len(run.opened):,} flows of {ROUTES} routes, "
            f"{KILLED} busiest mixes of {3 * MIXES_PER_LAYER} killed under load"
        ),
        notes=tuple(notes),
        latencies_s=tuple(samples),
        counts=load_counts(run),
    )
