"""Virtual-clock runs of the cover core: 48 simulated hours in seconds, reproducible by seed.

The runner drives the same `ClientCover` the asyncio `CoverEmitter` drives, event by event: it
jumps the clock to the next deadline instead of sleeping. What the real loop would add is
modelled explicitly:

- **timer lateness**: every wake-up comes `Exp(late_mean_ms)` after its deadline, and with
  probability `stall_p` a further `stall_ms` (a GC pause, a busy loop);
- **real traffic**: a two-state (quiet/busy) Markov-modulated Poisson source, so the adaptive
  controller has steps to follow in both directions;
- **the mix path**: each real packet and each loop crosses `hops` mixes holding it for
  exponential delays of the mean the latency budget gives (`budget.per_hop_mean_delay`); a mix
  may be set to drop a share of packets (`--bad-mix-drop`), which loop success must reveal.

    python -m nyx.cover.simulate drift --hours 48 --seed 1
    python -m nyx.cover.simulate compliance --load 3 --cover-ratio 0.4 --latency-budget-ms 200
    python -m nyx.cover.simulate flat --hours 2 --seed 1      # the wire below the threshold vs idle

See docs/cover.md for the definitions and the measured figures.
"""

from __future__ import annotations

import argparse
import collections
import heapq
import json
import math
import random
import sys
import time
from dataclasses import asdict, dataclass, field

from nyx.cover.budget import LatencyBudget, per_hop_mean_delay
from nyx.cover.client import ClientCover, CoverConfig
from nyx.cover.figures import LoopTracker, ks_two_sample
from nyx.cover.rate import RatePolicy
from nyx.cover.slots import Kind
from nyx.mix.delay import erlang_quantile

NORMAL_BASE_PPS = 5.0
NORMAL_LOOP_PPS = 1.0
NORMAL_DROP_PPS = 1.0


@dataclass(frozen=True, slots=True)
class RealTraffic:
    """Quiet/busy Markov-modulated Poisson arrivals of real packets."""

    quiet_pps: float = 1.0
    busy_pps: float = 12.0
    quiet_s: float = 600.0
    busy_s: float = 60.0


class _Arrivals:
    __slots__ = ("traffic", "rng", "busy", "switch_at")

    def __init__(self, traffic: RealTraffic, rng: random.Random) -> None:
        self.traffic, self.rng, self.busy = traffic, rng, False
        self.switch_at = rng.expovariate(1.0 / traffic.quiet_s)

    def after(self, t: float) -> float:
        """The next arrival after `t` (memoryless in each state, so redraw at a switch)."""
        traffic, rng = self.traffic, self.rng
        while True:
            rate = traffic.busy_pps if self.busy else traffic.quiet_pps
            candidate = t + rng.expovariate(rate) if rate > 0 else math.inf
            if candidate < self.switch_at:
                return candidate
            t = self.switch_at
            self.busy = not self.busy
            self.switch_at = t + rng.expovariate(1.0 / (traffic.busy_s if self.busy else traffic.quiet_s))


@dataclass(frozen=True, slots=True)
class Lateness:
    """How late the event loop wakes: Exp(late_mean_ms), plus stall_ms with probability stall_p."""

    late_mean_ms: float = 1.0
    stall_p: float = 0.001
    stall_ms: float = 100.0

    def sample(self, rng: random.Random) -> float:
        late = rng.expovariate(1000.0 / self.late_mean_ms) if self.late_mean_ms > 0 else 0.0
        if self.stall_p and rng.random() < self.stall_p:
            late += self.stall_ms / 1000.0
        return late


@dataclass(frozen=True, slots=True)
class MixPath:
    """The mixes real and loop packets cross: `layers` x `per_layer` mixes, `hops` of them per
    path, each holding a packet Exp(budget.per_hop_mean_s); mix 0 of layer 1 drops `bad_drop`."""

    budget: LatencyBudget
    layers: int = 3
    per_layer: int = 3
    bad_drop: float = 0.0


@dataclass(slots=True)
class Report:
    """What one run measured (printed, or written as JSON)."""

    duration_h: float
    seed: int
    wall_s: float = 0.0
    sent: dict[str, int] = field(default_factory=dict)
    target_packets: float = 0.0
    drift_pct: float = 0.0
    max_period_drift_pct: float = 0.0
    max_period_z: float = 0.0
    compliance: float = 0.0
    ideal_compliance: float = 0.0
    windows: int = 0
    count_failures: int = 0
    share_failures: int = 0
    cover_share: float = 0.0
    mean_wire_pps: float = 0.0
    skipped: int = 0
    real_slot_wait_p95_ms: float = 0.0
    mixing_p95_ms: float = 0.0
    end_to_end_p95_ms: float = 0.0
    mixing_within_budget: float = 0.0
    per_hop_mean_ms: float = 0.0
    loop_success: float = 1.0
    loops_lost: int = 0
    suspect_mixes: dict[str, float] = field(default_factory=dict)


def _p95(values: list[float]) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]


def run_client(
    config: CoverConfig,
    duration_s: float,
    seed: int,
    traffic: RealTraffic | None = RealTraffic(),
    lateness: Lateness = Lateness(),
    path: MixPath | None = None,
) -> Report:
    """One client for `duration_s` virtual seconds; returns its figures."""
    started = time.perf_counter()
    cover_rng, world_rng = random.Random(seed), random.Random(seed ^ 0x5EED)
    cover: ClientCover[float] = ClientCover(config, cover_rng, 0.0)
    arrivals = _Arrivals(traffic, world_rng) if traffic is not None else None
    next_real = arrivals.after(0.0) if arrivals is not None else math.inf
    backlog: collections.deque[float] = collections.deque()
    slot_waits: list[float] = []
    mixing: list[float] = []
    end_to_end: list[float] = []

    mixes = [[f"mix-{layer}-{i}" for i in range(path.per_layer)] for layer in range(1, path.layers + 1)] if path else []
    tracker: LoopTracker | None = None
    returns: list[tuple[float, int]] = []
    if path is not None:
        hop_mean = path.budget.per_hop_mean_s
        tracker = LoopTracker(hop_mean * erlang_quantile(path.layers, 1 - 1e-6) + 1.0)
    loop_seq = 0

    deadline = cover.next_deadline()
    wake = deadline + lateness.sample(world_rng)
    while True:
        if next_real <= wake:
            t = next_real
            if t >= duration_s:
                break
            if backlog or not cover.offer(t, t):
                backlog.append(t)
            next_real = arrivals.after(t) if arrivals is not None else math.inf
            continue
        now = wake
        if now >= duration_s:
            break
        for send in cover.poll(now):
            kind = send.kind
            if kind is Kind.REAL:
                offered_at = send.packet
                assert offered_at is not None
                slot_waits.append(now - offered_at)
                if path is not None:
                    held = sum(world_rng.expovariate(1.0 / path.budget.per_hop_mean_s) for _ in range(path.layers))
                    mixing.append(held)
                    end_to_end.append(now - offered_at + held)
            elif kind is Kind.LOOP and tracker is not None and path is not None:
                route = tuple(world_rng.choice(layer) for layer in mixes)
                loop_seq += 1
                loop_id = loop_seq.to_bytes(8, "big")
                tracker.sent(loop_id, now, route)
                if not (route[0] == mixes[0][0] and world_rng.random() < path.bad_drop):
                    held = sum(world_rng.expovariate(1.0 / path.budget.per_hop_mean_s) for _ in route)
                    heapq.heappush(returns, (now + held, loop_seq))
        while backlog and cover.has_room():
            cover.offer(backlog.popleft(), now)
        if tracker is not None:
            while returns and returns[0][0] <= now:
                back_at, seq = heapq.heappop(returns)
                tracker.came_back(seq.to_bytes(8, "big"), back_at)
            tracker.expire(now)
        deadline = cover.next_deadline()
        wake = max(deadline, now) + lateness.sample(world_rng)

    end = duration_s
    cover.compliance.advance(end)
    cover.drift.advance(end)
    sent = {kind.name.lower(): count for kind, count in cover.sent.items()}
    total = sum(sent.values())
    report = Report(duration_s / 3600.0, seed)
    report.sent = sent
    report.target_packets = cover.drift.expected(end)
    report.drift_pct = 100.0 * cover.drift.drift(end)
    report.max_period_drift_pct = 100.0 * max(cover.drift.period_drifts, default=0.0)
    report.max_period_z = max(cover.drift.period_z, default=0.0)
    report.compliance = cover.compliance.compliance
    report.ideal_compliance = cover.compliance.ideal_compliance
    report.windows = cover.compliance.windows
    report.count_failures = cover.compliance.count_failures
    report.share_failures = cover.compliance.share_failures
    report.cover_share = 1.0 - sent["real"] / total if total else 0.0
    report.mean_wire_pps = total / duration_s
    report.skipped = cover.slots.skipped()
    report.real_slot_wait_p95_ms = 1e3 * _p95(slot_waits)
    if path is not None:
        report.per_hop_mean_ms = 1e3 * path.budget.per_hop_mean_s
        report.mixing_p95_ms = 1e3 * _p95(mixing)
        report.end_to_end_p95_ms = 1e3 * _p95(end_to_end)
        report.mixing_within_budget = sum(d <= path.budget.budget_s for d in mixing) / len(mixing) if mixing else 1.0
    if tracker is not None:
        tracker.expire(end)  # loops still in flight at the end are not judged
        report.loop_success = tracker.success
        report.loops_lost = tracker.lost
        report.suspect_mixes = {node: round(share, 4) for node, share in tracker.suspects().items()}
    report.wall_s = time.perf_counter() - started
    return report


def wire_send_times(config: CoverConfig, real_pps: float, duration_s: float, seed: int) -> tuple[list[float], ClientCover[float]]:
    """Send times of one client whose real packets arrive Poisson at `real_pps` (no lateness: the
    wire's shape is the question). The cover draws from `seed`, the arrivals from another stream;
    writers wait while the queue is full, as `CoverEmitter.send` does."""
    cover: ClientCover[float] = ClientCover(config, random.Random(seed), 0.0)
    arrivals = random.Random(seed ^ 0x5EED)
    next_real = arrivals.expovariate(real_pps) if real_pps > 0 else math.inf
    backlog: collections.deque[float] = collections.deque()
    times: list[float] = []
    while True:
        deadline = cover.next_deadline()
        if next_real <= deadline:
            if backlog or not cover.offer(next_real, next_real):
                backlog.append(next_real)
            next_real += arrivals.expovariate(real_pps)
            continue
        if deadline >= duration_s:
            return times, cover
        sends = cover.poll(deadline)
        times.extend(deadline for _ in sends)
        while backlog and cover.has_room():
            cover.offer(backlog.popleft(), deadline)


def flat(config: CoverConfig, rates_pps: list[float], duration_s: float, seed: int) -> list[dict[str, float]]:
    """The wire at each real rate against the idle wire: rate, engagements of the rise test, and
    the two-sample KS of inter-send gaps (idle from `seed`, busy from `seed + 1`: independent)."""
    idle, _ = wire_send_times(config, 0.0, duration_s, seed)
    idle_gaps = [b - a for a, b in zip(idle, idle[1:])]
    rows = [{"real_pps": 0.0, "wire_pps": len(idle) / duration_s, "engagements": 0, "ks_d": 0.0, "ks_p": 1.0}]
    for real_pps in rates_pps:
        times, cover = wire_send_times(config, real_pps, duration_s, seed + 1)
        d, p = ks_two_sample([b - a for a, b in zip(times, times[1:])], idle_gaps)
        rows.append({"real_pps": real_pps, "wire_pps": len(times) / duration_s,
                     "engagements": cover.controller.engagements, "ks_d": d, "ks_p": p})
    return rows


def _config(args: argparse.Namespace, load: float) -> CoverConfig:
    policy = RatePolicy(
        base_pps=NORMAL_BASE_PPS * load,
        cover_ratio=args.cover_ratio,
        tick_s=args.adjust_s,
        window_s=max(args.window_rate_s, args.adjust_s),
        confirm_window_s=max(args.confirm_window_s, args.window_rate_s, args.adjust_s),
        false_alarm_p=args.false_alarm_p,
    )
    return CoverConfig(
        policy=policy,
        loop_pps=NORMAL_LOOP_PPS * load,
        drop_pps=NORMAL_DROP_PPS * load,
        window_s=args.compliance_window_s,
        tolerance=args.tolerance,
        drift_period_s=args.drift_period_s,
    )


def _traffic(args: argparse.Namespace) -> RealTraffic | None:
    if args.real == "none":
        return None
    return RealTraffic(args.quiet_pps, args.busy_pps, args.quiet_s, args.busy_s)


def _print(report: Report, keys: list[str]) -> None:
    print(f"simulated {report.duration_h:g} h (seed {report.seed}) in {report.wall_s:.1f} s wall")
    for key in keys:
        value = getattr(report, key)
        print(f"  {key:24} {value:.4f}" if isinstance(value, float) else f"  {key:24} {value}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nyx.cover.simulate", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("drift", "compliance", "flat"):
        p = sub.add_parser(name)
        if name == "flat":
            p.add_argument("--real-pps", default="1,2,2.5,2.9,3.5,6", help="comma-separated Poisson real rates")
        p.add_argument("--hours", type=float, default=48.0)
        p.add_argument("--seed", type=int, default=1)
        p.add_argument("--load", type=float, default=1.0, help="cover load, x the normal base/loop/drop rates")
        p.add_argument("--cover-ratio", type=float, default=0.4)
        p.add_argument("--latency-budget-ms", type=float, default=200.0)
        p.add_argument("--hops", type=int, default=3)
        p.add_argument("--adjust-s", type=float, default=1.0, help="controller tick (SCL-032's loop: 900)")
        p.add_argument("--window-rate-s", type=float, default=5.0, help="real-rate estimation window")
        p.add_argument("--confirm-window-s", type=float, default=30.0, help="the rise test's long window")
        p.add_argument("--false-alarm-p", type=float, default=1e-6,
                       help="the rise test's false-alarm probability per tick at the threshold")
        p.add_argument("--compliance-window-s", type=float, default=10.0)
        p.add_argument("--tolerance", type=float, default=0.1, help="cover share tolerance below the ratio")
        p.add_argument("--drift-period-s", type=float, default=900.0)
        p.add_argument("--real", choices=("bursty", "none"), default="bursty")
        p.add_argument("--quiet-pps", type=float, default=1.0)
        p.add_argument("--busy-pps", type=float, default=12.0)
        p.add_argument("--quiet-s", type=float, default=600.0)
        p.add_argument("--busy-s", type=float, default=60.0)
        p.add_argument("--late-ms", type=float, default=1.0, help="mean timer lateness")
        p.add_argument("--stall-p", type=float, default=0.001)
        p.add_argument("--stall-ms", type=float, default=100.0)
        p.add_argument("--bad-mix-drop", type=float, default=0.0)
        p.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    args = parser.parse_args(argv)
    if args.command == "flat":
        rows = flat(_config(args, args.load), [float(x) for x in args.real_pps.split(",")], args.hours * 3600.0, args.seed)
        print(f"wire against the idle wire, {args.hours:g} h per rate (seed {args.seed}); "
              f"threshold {_config(args, args.load).policy.threshold_pps():g} pps real")
        for row in rows:
            print(f"  real {row['real_pps']:5g} pps  wire {row['wire_pps']:.3f} pps  rises {row['engagements']:4d}"
                  f"  KS D {row['ks_d']:.4f}  p {row['ks_p']:.3g}")
        if args.json:
            with open(args.json, "w") as out:
                json.dump({"command": "flat", "args": vars(args), "rows": rows}, out, indent=2)
        return 0
    budget = per_hop_mean_delay(args.latency_budget_ms / 1e3, args.hops)
    path = MixPath(budget, layers=args.hops, bad_drop=args.bad_mix_drop)
    report = run_client(
        _config(args, args.load),
        args.hours * 3600.0,
        args.seed,
        _traffic(args),
        Lateness(args.late_ms, args.stall_p, args.stall_ms),
        path,
    )
    if args.command == "drift":
        keys = ["drift_pct", "max_period_drift_pct", "max_period_z", "target_packets", "sent", "mean_wire_pps", "skipped",
                "cover_share"]
    else:
        keys = ["compliance", "ideal_compliance", "windows", "count_failures", "share_failures", "cover_share",
                "mean_wire_pps", "per_hop_mean_ms", "mixing_p95_ms", "mixing_within_budget",
                "real_slot_wait_p95_ms", "end_to_end_p95_ms", "loop_success", "loops_lost", "suspect_mixes",
                "drift_pct", "sent"]
    _print(report, keys)
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"command": args.command, "args": vars(args), "report": asdict(report)}, out, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
