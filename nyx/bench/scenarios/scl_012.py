"""SCL-012 Mixノード障害注入: 300k msgs/min, 10% of 150 mixes killed; failover <= 25 s.

A whole mixnet in this process (`nyx.bench.mixnet`: 10 gateways, three layers of 50 mixes = the
seed's 150, real Sphinx packets over `SimTransport`). The load, 5,000 messages/s x --scale, is
carried by flows (`_failover`) of about `FLOW_RATE_MSGS_S` each: a `nyx.Client` with one session
of 5 routes (the client's default) and one echo stream writing 64 B messages (the load model gives
no size; SCL-001's payload), evenly spaced. A message is one application write: its echo, the
ACKs and the SURBs that carry them are the system's own traffic, not counted as load.

**Chaos kill.** At a quarter of the run, 10% of each layer's mixes (5 of 50, 15 in all), drawn at
random, become unreachable (`Mixnet.fail`: every packet to or from them is lost, as a killed pod's;
nothing tells the clients, no directory update). A route crosses three mixes, so about 27% of
routes and most flows (5 routes each) lose one. The source's "AutoScaling warm pool" has no
counterpart: the surviving 135 mixes are the pool, and no replacement node is started.

**The value** is `mix_failover_duration`: per replacement, from the first record the failed route
lost (declared lost by the session's loss recovery) to the first record sent on its replacement
(`RouteScheduler.failovers_s`: detection and reaction), over every replacement of every flow; the
verdict judges the **maximum** in s. The maximum, not a quantile: a chaos kill is one incident
whose failover is over when the last affected flow runs on a replacement, and the SLO bounds that
incident (a p95 over some tens of events would leave the worst flows out of the very thing it
measures). A flow still routing through a killed mix at the end counts with the time from the
kill to the end, a lower bound. The notes add the wider figure a chaos tool would time: from the
kill to each affected flow's first record on a replacement (the loss timeout before the first
loss is declared included).

**Bytes.** Every echoed byte is checked against what was written, in order; bytes written and not
echoed after the drain make the value infinite (a failed verdict, named in the notes).

**Load.** The achieved rate is the messages actually written on schedule. One core carries about
150 messages/s (about 13 mix packets each, about 60 us of Sphinx per hop) before the loop lags
by seconds, so `run SCL-012` at scale 1 (500 flows) is INCONCLUSIVE; a judged run is a scaled
one: `run SCL-012 --scale 0.024` (120 messages/s over 12 flows).
"""

from __future__ import annotations

import math

from nyx.bench.loadgen import percentile
from nyx.bench.mixnet import MixnetShape
from nyx.bench.report import Measurement
from nyx.bench.scenarios import RunOptions
from nyx.bench.scenarios._failover import FailoverLoad, load_counts, load_notes, run_failover, victims_share

MESSAGES_PER_MIN = 300_000
GATEWAYS = 10
MIXES_PER_LAYER = 50  # 3 x 50 = the seed's 150
KILL_SHARE_OF_MIXES = 0.10
FLOW_RATE_MSGS_S = 10.0  # about: the asked rate is split evenly over round(rate / this) flows
MESSAGE_BYTES = 64
KILL_SHARE = 1 / 4  # of the run, when the mixes die
OPEN_DEADLINE_S = 30.0
DRAIN_S = 20.0
LOST_IN_A_ROW: int | None = None  # a fault injection (tests): suspicion after this many losses (default 3)
DEFAULT_DURATION_S = 60.0
QUICK = (8.0, 0.016)


async def replay(options: RunOptions) -> Measurement:
    full_rate = MESSAGES_PER_MIN / 60.0
    rate = full_rate * options.scale
    flows = max(1, round(rate / FLOW_RATE_MSGS_S))
    load = FailoverLoad(
        shape=MixnetShape(gateways=GATEWAYS, mixes_per_layer=MIXES_PER_LAYER),
        flows=flows,
        flow_rate_msgs_s=rate / flows,
        message_bytes=MESSAGE_BYTES,
        duration_s=options.duration_s,
        kill_at_s=KILL_SHARE * options.duration_s,
        pick_victims=victims_share(KILL_SHARE_OF_MIXES),
        open_deadline_s=OPEN_DEADLINE_S,
        drain_s=DRAIN_S,
        lost_in_a_row=LOST_IN_A_ROW,
    )
    run = await run_failover(load, options.seed, options.tick)
    events = [x for f in run.flows for x in f.failovers_s]
    unhealed = run.unhealed()
    samples = events + [run.censored_s()] * len(unhealed)
    lost, mismatched = run.lost_bytes(), run.mismatched()
    worst = max(samples, default=math.nan)
    value = math.inf if (lost or mismatched) and samples else worst
    scheduled = sum(f.scheduled_msgs for f in run.flows)
    achieved = rate * run.written_msgs() / scheduled if scheduled else 0.0
    from_kill = [f.healed_after_kill_s for f in run.affected() if f.healed_after_kill_s is not None]
    reconfigurations = [x for f in run.flows for x in f.reconfigurations_s]
    notes = [
        f"failover max {worst:.2f} s, p95 {percentile(samples, 95):.2f} s, p50 {percentile(samples, 50):.2f} s "
        f"over {len(events):,} replacements ({sum(f.events_before_kill for f in run.flows)} before the kill)",
        f"{len(unhealed)} of {len(run.affected())} affected flows still had an active route through a killed mix "
        f"at the end (each counted as {run.censored_s():.1f} s, a lower bound)",
        f"from the kill to an affected flow's first record on a replacement (a chaos tool's view, the first loss "
        f"timeout included): p50 {percentile(from_kill, 50):.2f} s, max {max(from_kill, default=math.nan):.2f} s "
        f"over {len(from_kill)} flows; the reaction alone (suspicion -> first record, SCL-004's metric) max "
        f"{1000 * max(reconfigurations, default=math.nan):.0f} ms",
        *load_notes(run, load),
    ]
    if lost or mismatched:
        notes.insert(0, f"FAILED BYTES: {lost:,} bytes never echoed, {mismatched} flows with altered bytes: the "
                        "value is infinite")
    if LOST_IN_A_ROW is not None:
        notes.insert(0, f"fault injected: a route is suspected after {LOST_IN_A_ROW} records lost in a row, not 3")
    return Measurement(
        value=value,
        duration_s=options.duration_s,
        offered_rate=rate,
        achieved_rate=achieved,
        full_rate=full_rate,
        rate_unit="msgs/s",
        detail=(
            f"max of {len(samples):,} mix failovers (first loss -> first record on the replacement, "
            f"RouteScheduler.failovers_s) over {len(run.opened):,} flows, {len(run.victims)} of "
            f"{3 * MIXES_PER_LAYER} mixes killed under load"
        ),
        notes=tuple(notes),
        latencies_s=tuple(samples),
        counts=load_counts(run),
    )
