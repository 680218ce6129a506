"""Gateway section of `python -m nyx.bench micro`: the memory an exit gateway process needs to hold
N idle end-to-end sessions, measured, against the goal "100,000 idle sessions in at most 2 GiB".

    python -m nyx.bench.micro_gateway [--sessions N] [--suite classic|hybrid] [--limit-gib G] [--json]
    python -m nyx.bench micro --only gateway      # DEFAULT_SESSIONS classic, HYBRID_SESSIONS hybrid

**What is measured.** A fresh interpreter (`subprocess`, so the figure is that process's own
memory, not the caller's) builds one `ExitCore(Responder({suite: key}), SessionConfig(surbs=
SurbPolicy()))` and opens N real sessions to it, one after another: for each, a `ClientCore`
with a real `Initiator` (a real handshake), whose envelopes go straight into `ExitCore.receive`
and the exit's `poll` answers straight back into `ClientCore.receive`, until neither side has
anything left to send. That is: Init + 2 SURB envelopes -> Accept; Finish + the client's first
records (carrying the SURBs of `SurbPolicy.initial`, 8) -> the exit's ACK. Each session at the
exit then holds what a real idle one holds: its keys and record layers, recovery and ACK state,
its timer entry, and its SURB pool (8 SURBs: an idle session with no stream open is not topped
up; one that was busy keeps what its last top-up left, which this does not measure). The client side is dropped as soon as its session is open (a gateway holds no clients),
and the exit's events are drained after each session, as the gateway shell does every turn.
SURBs are random bytes of the real size (`SURB_BYTES`); the exit never opens them.

**The clock** is simulated: session i opens at `i * ARRIVAL_GAP_S` (400 openings per second), so
the replay cache of the responder (65,536 Inits per 120 s window) never refuses one, and 100,000
sessions span 250 s, inside the 300 s idle timeout: every session is alive at the end.

**The figure** is VmRSS (`/proc/self/status`) after `gc.collect()`, before the first session and
after the last: bytes per session = (after - before) / N, and the projection for
`GOAL_SESSIONS` = before + GOAL_SESSIONS * bytes per session (the interpreter and the exit's fixed
state count: the goal is about the whole process). PASS when the projection is within the limit
(2 GiB unless told). No tracemalloc: it would slow a 100,000-session run several times over.
Afterwards `on_timer` runs once past every session's idle deadline, which must close them all.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from nyx.bench.timing import MicroRecord

GIB = 1 << 30
#: The goal: this many idle sessions ...
GOAL_SESSIONS = 100_000
#: ... in at most this much memory, for the whole gateway process.
GOAL_BYTES = 2 * GIB
#: Sessions the micro section opens with the CLASSIC suite (the goal's own count: a full run).
DEFAULT_SESSIONS = 100_000
#: Sessions the micro section opens with the HYBRID suite, to check that the suite hardly matters.
HYBRID_SESSIONS = 5_000
#: Simulated time between two openings (see the module docstring).
ARRIVAL_GAP_S = 0.0025
_START = 1_800_000_000.0


@dataclass(frozen=True, slots=True)
class GatewayMemory:
    """One measurement: N idle sessions at one ExitCore, in a fresh process."""

    sessions: int  # len(exit) after the last opening: sessions actually open at the exit
    requested: int  # N asked for
    suite: str
    rss_before: int  # bytes, VmRSS after imports and the exit's construction, before any session
    rss_after: int  # bytes, VmRSS with every session open and idle
    peak_rss: int  # bytes, VmHWM at the end (the build's transient peak)
    open_s: float  # wall seconds to open all N sessions
    handshake_s: float  # wall seconds of one bare handshake (Init, Accept, Finish; mean of a few)
    surbs_held: int  # SURBs in every session's pool, summed
    replay_cache: int  # Init digests the responder remembers at the end
    limit_bytes: int
    goal_sessions: int
    expired_by_timer: int  # sessions `on_timer` closed past their idle deadline (-1: not checked)
    left_after_timer: int  # sessions still at the exit after that (-1: not checked)
    timer_s: float  # wall seconds of that on_timer call

    @property
    def bytes_per_session(self) -> float:
        return (self.rss_after - self.rss_before) / self.sessions

    @property
    def projected_bytes(self) -> float:
        """The process's RSS with `goal_sessions` idle sessions, extrapolated linearly."""
        return self.rss_before + self.bytes_per_session * self.goal_sessions

    @property
    def passed(self) -> bool:
        return self.projected_bytes <= self.limit_bytes

    @property
    def verdict(self) -> str:
        return "PASS" if self.passed else "FAIL"

    def as_json(self) -> dict[str, object]:
        out: dict[str, object] = asdict(self)
        out.update(
            bytes_per_session=self.bytes_per_session, projected_bytes=self.projected_bytes, verdict=self.verdict
        )
        return out

    def report(self) -> str:
        mib = 1 << 20
        lines = [
            f"idle sessions at one ExitCore: {self.sessions:,} open of {self.requested:,} ({self.suite} suite)",
            f"  RSS before {self.rss_before / mib:,.1f} MiB, after {self.rss_after / mib:,.1f} MiB "
            f"(peak {self.peak_rss / mib:,.1f} MiB)",
            f"  {self.bytes_per_session:,.0f} B per session; {self.surbs_held / self.sessions:.1f} SURBs held each "
            f"({self.surbs_held * 552 / self.sessions:,.0f} B of SURB payload)",
            f"  projected for {self.goal_sessions:,} sessions: {self.projected_bytes / GIB:.3f} GiB "
            f"(goal <= {self.limit_bytes / GIB:.3g} GiB): {self.verdict}",
            f"  opened in {self.open_s:,.1f} s ({self.open_s / self.sessions * 1e3:.2f} ms per session, of which "
            f"a bare handshake {self.handshake_s * 1e3:.2f} ms); replay cache {self.replay_cache:,} entries",
        ]
        if self.expired_by_timer >= 0:
            lines.append(
                f"  on_timer past the idle deadlines: {self.expired_by_timer:,} closed, "
                f"{self.left_after_timer:,} left, in {self.timer_s:.2f} s"
            )
        return "\n".join(lines)


def _rss() -> tuple[int, int]:
    """(VmRSS, VmHWM) of this process in bytes."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:  # not Linux: the peak is all getrusage knows (kilobytes on Linux, bytes on macOS)
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak *= 1 if sys.platform == "darwin" else 1024
        return peak, peak
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024


def _settled_rss() -> int:
    gc.collect()
    return _rss()[0]


def _bare_handshake_s(suite_name: str, count: int = 20) -> float:
    """Mean wall seconds of one handshake alone (both sides' crypto, no envelopes, no session)."""
    from nyx.crypto.suites import Suite
    from nyx.stream.handshake import Initiator, Responder

    suite = Suite[suite_name]
    private, public = suite.kem().generate()
    responder = Responder({suite: private})
    start = time.perf_counter()
    for i in range(count):
        initiator = Initiator({suite: public})
        accept, pending = responder.respond(initiator.start(_START + i), _START + i)
        finish, _ = initiator.receive(accept)
        pending.finish(finish)
    return (time.perf_counter() - start) / count


def measure_here(
    sessions: int, suite_name: str = "CLASSIC", limit_bytes: int = GOAL_BYTES, check_timer: bool = True
) -> GatewayMemory:
    """Open `sessions` idle sessions at one ExitCore in *this* process and measure its RSS.

    Use `measure` (a fresh process) for a figure; this is what that process runs."""
    from nyx.crypto.suites import Suite
    from nyx.stream.client_core import ClientCore
    from nyx.stream.events import SessionClosed
    from nyx.stream.exit import ExitCore
    from nyx.stream.handshake import Initiator, Responder
    from nyx.stream.session import SessionConfig
    from nyx.stream.surbs import SURB_BYTES, SurbPolicy

    if sessions < 1:
        raise ValueError("measure at least one session")
    suite = Suite[suite_name.upper().replace("-", "_")]
    private, public = suite.kem().generate()
    config = SessionConfig(surbs=SurbPolicy())
    exit_core = ExitCore(Responder({suite: private}), config, max_sessions=sessions + 16)

    def make_surbs(count: int) -> list[bytes]:
        return [os.urandom(SURB_BYTES) for _ in range(count)]

    rss_before = _settled_rss()
    started = time.perf_counter()
    now = _START
    for i in range(sessions):
        now = _START + i * ARRIVAL_GAP_S
        client = ClientCore(Initiator({suite: public}), config, make_surbs, now)
        forward = client.start(now)
        while forward:
            for envelope in forward:
                exit_core.receive(envelope, now)
            for _surb, message in exit_core.poll(now):
                client.receive(message, now)
            forward = client.poll(now)
        exit_core.events()  # the gateway shell drains these every turn (SessionOpened, SurbsReceived)
        session = exit_core.session(client.session_id)
        if session is None or session.records_received < 1 or client.opening is not None or client.failed:
            raise RuntimeError(
                f"session {i} did not open and settle at the exit: exit drops {dict(exit_core.all_drops())}, "
                f"client drops {dict(client.all_drops())}, failed={client.failed}"
            )
        exit_core.poll(now)  # `session()` marked it active; an idle session has nothing to send
    open_s = time.perf_counter() - started
    del client, session, forward
    rss_after = _settled_rss()
    peak = _rss()[1]
    opened = len(exit_core)
    surbs_held = 0
    for sid in list(exit_core._sessions):  # noqa: SLF001  (a read-only look at the pools)
        pool = exit_core._sessions[sid].surb_pool  # noqa: SLF001
        surbs_held += len(pool) if pool is not None else 0
    replay_cache = len(exit_core.openings.responder.replay_cache)

    expired = left = -1
    timer_s = 0.0
    if check_timer:
        deadline = exit_core.deadline()
        assert deadline is not None, "every open session has an idle deadline"
        if deadline > now:  # always, unless N * ARRIVAL_GAP_S exceeds the idle timeout
            exit_core.on_timer(now)  # nothing is due yet: a no-op
            assert len(exit_core) == opened, "on_timer closed a session before its idle deadline"
        after_idle = now + config.idle_timeout_s + 1.0
        timer_started = time.perf_counter()
        exit_core.on_timer(after_idle)
        expired = sum(1 for _, event in exit_core.events() if isinstance(event, SessionClosed))
        exit_core.poll(after_idle)
        timer_s = time.perf_counter() - timer_started
        left = len(exit_core)
    return GatewayMemory(
        sessions=opened,
        requested=sessions,
        suite=suite.name,
        rss_before=rss_before,
        rss_after=rss_after,
        peak_rss=peak,
        open_s=open_s,
        handshake_s=_bare_handshake_s(suite.name),
        surbs_held=surbs_held,
        replay_cache=replay_cache,
        limit_bytes=limit_bytes,
        goal_sessions=GOAL_SESSIONS,
        expired_by_timer=expired,
        left_after_timer=left,
        timer_s=timer_s,
    )


def measure(
    sessions: int, suite_name: str = "CLASSIC", limit_bytes: int = GOAL_BYTES, check_timer: bool = True
) -> GatewayMemory:
    """`measure_here` in a fresh interpreter (`python -m nyx.bench.micro_gateway --worker`), so the
    RSS is that process's own: nothing the caller allocated counts."""
    root = str(Path(__file__).resolve().parents[2])  # the nyx being run, not an installed copy
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, (root, os.environ.get("PYTHONPATH")))))
    args = [sys.executable, "-m", "nyx.bench.micro_gateway", "--worker", "--sessions", str(sessions)]
    args += ["--suite", suite_name, "--limit-bytes", str(limit_bytes)]
    if not check_timer:
        args.append("--no-timer")
    done = subprocess.run(args, cwd=root, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the measuring process failed ({done.returncode}):\n{done.stderr.strip()}")
    fields = json.loads(done.stdout.strip().splitlines()[-1])
    return GatewayMemory(**{name: fields[name] for name in GatewayMemory.__dataclass_fields__})


def _record(result: GatewayMemory) -> MicroRecord:
    """Sessions per GiB of the whole process at the goal's count, beside the goal's 50,000 per GiB:
    ratio >= 1 is PASS."""
    return MicroRecord(
        f"gateway {result.sessions:,} idle {result.suite.lower()} sessions: {result.bytes_per_session:,.0f} B each, "
        f"{result.projected_bytes / GIB:.2f} GiB at {result.goal_sessions // 1000}k: {result.verdict}",
        result.goal_sessions / (result.projected_bytes / GIB),
        f"{result.goal_sessions:,} sessions in {result.limit_bytes / GIB:.3g} GiB",
        result.goal_sessions / (result.limit_bytes / GIB),
    )


def records(budget_s: float) -> list[MicroRecord]:
    """Memory, not speed: `budget_s` does not apply (the run takes minutes at DEFAULT_SESSIONS)."""
    del budget_s
    return [_record(measure(DEFAULT_SESSIONS, "CLASSIC")), _record(measure(HYBRID_SESSIONS, "HYBRID"))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nyx.bench.micro_gateway", description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=DEFAULT_SESSIONS, help=f"default {DEFAULT_SESSIONS:,}")
    parser.add_argument("--suite", default="CLASSIC", help="classic (default), hybrid, pq, pq-alt")
    parser.add_argument("--limit-gib", type=float, help="the goal's memory limit in GiB (default 2)")
    parser.add_argument("--limit-bytes", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--no-timer", action="store_true", help="skip the on_timer check at the end")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON line")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # measure in this process
    args = parser.parse_args(argv)
    limit = args.limit_bytes or (int(args.limit_gib * GIB) if args.limit_gib else GOAL_BYTES)
    suite = args.suite.upper().replace("-", "_")
    if args.worker:
        result = measure_here(args.sessions, suite, limit, not args.no_timer)
    else:
        result = measure(args.sessions, suite, limit, not args.no_timer)
    print(json.dumps(result.as_json()) if args.json or args.worker else result.report())
    return 0


if __name__ == "__main__":
    sys.exit(main())
