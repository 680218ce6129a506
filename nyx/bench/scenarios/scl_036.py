"""SCL-036 PQ暗号バージョン切替: switch the PQ parameters under live traffic; success >= 99.8%.

Live traffic: clients arrive open-loop (200 handshakes/s at scale 1; the load model gives no
rate) and run the real handshake (`Initiator` / `Responder`) with one of 10 gateways. Each
message takes a one-way delay of 20 ms (an asyncio sleep: handshake messages are larger than
one transport datagram and the stream layer that carries them is not built yet), so handshakes
are in flight when the parameters change. The staged rollout of the procedure:

1. 0-20% of the run: gateways hold hybrid (X-Wing) keys only; the directory lists them.
2. at 20%: every gateway adds an ML-KEM-1024 key (`Responder.add_key`) and accepts both
   suites; the directory's next version lists both keys.
3. 20-60%: clients move to the new directory in stages (a client starting at time t has it with
   probability growing linearly to 1). Half of the clients with it run new software that prefers
   `pq`; the other half still prefer `hybrid` (old software: it offers the old suite first).
4. at 60%, as the rollout completes: gateways retire the hybrid parameters (`suites = (pq,)`,
   `remove_key`) while those clients still offer hybrid first. From then on each of their
   handshakes gets a Reject (UNSUPPORTED_SUITE) and retries with `pq` through the negotiation
   (`Initiator.retry`, the retried Init naming the rejected attempt so the responder can check it
   is no downgrade). Hybrid handshakes in flight at the switch take the same path.

The value is `pq_handshake_success`: handshakes completed / started, in percent. Every suite
used (hybrid, pq) is post-quantum. The JSON's `counts` has the handshakes that went through a
Reject and a retry, those that completed after one, and every failure by cause. Retiring the old
suite before the rollout completes (`RETIRE_AT` < `ROLLOUT_END`) strands clients whose directory
lists no pq key; the tests run that fault and the verdict fails.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter

from nyx.bench.loadgen import Schedule, drive_async
from nyx.bench.report import Measurement
from nyx.bench.scenarios import RunOptions
from nyx.crypto.kem import PrivateKey
from nyx.crypto.suites import Suite
from nyx.stream.handshake import HandshakeError, HandshakeRejected, Initiator, InitReplayCache, Responder

HANDSHAKES_PER_S = 200.0
GATEWAYS = 10
ONE_WAY_S = 0.020
UPDATE_AT, ROLLOUT_END = 0.2, 0.6  # shares of the run
RETIRE_AT = ROLLOUT_END  # when gateways stop accepting hybrid
OLD_PREFERENCE_SHARE = 0.5  # clients with the new directory that still prefer hybrid
DEFAULT_DURATION_S = 10.0
QUICK = (4.0, 1.0)


class _Gateway:
    def __init__(self) -> None:
        self.keys: dict[Suite, tuple[PrivateKey, bytes]] = {Suite.HYBRID: Suite.HYBRID.kem().generate()}
        self.responder = Responder(
            {Suite.HYBRID: self.keys[Suite.HYBRID][0]}, replay_cache=InitReplayCache(capacity=1 << 16)
        )

    def add_pq(self) -> None:
        self.keys[Suite.PQ] = Suite.PQ.kem().generate()
        self.responder.add_key(Suite.PQ, self.keys[Suite.PQ][0])
        self.responder.suites = (Suite.HYBRID, Suite.PQ)

    def retire_hybrid(self) -> None:
        self.responder.suites = (Suite.PQ,)
        self.responder.remove_key(self.keys[Suite.HYBRID][1])

    def directory(self, version: int) -> dict[Suite, bytes]:
        """The gateway's public keys as directory version 1 (hybrid) or 2 (hybrid and pq) lists them."""
        suites = (Suite.HYBRID,) if version == 1 else (Suite.HYBRID, Suite.PQ)
        return {suite: self.keys[suite][1] for suite in suites}


async def replay(options: RunOptions) -> Measurement:
    gateways = [_Gateway() for _ in range(GATEWAYS)]
    rng = random.Random(options.seed)
    duration = options.duration_s
    start = time.perf_counter()
    published = 1  # the newest directory version
    outcomes: Counter[str] = Counter()
    suites_used: Counter[str] = Counter()

    def directory_version(elapsed: float) -> int:
        if published == 1:
            return 1
        rollout = (elapsed - UPDATE_AT * duration) / ((ROLLOUT_END - UPDATE_AT) * duration)
        return 2 if rng.random() < rollout else 1

    async def respond(gateway: _Gateway, message: bytes) -> tuple[bytes, object | None]:
        await asyncio.sleep(ONE_WAY_S)
        try:
            return gateway.responder.respond(message, time.time())
        except HandshakeError as error:
            return gateway.responder.reject(error) or b"", None

    async def handshake(index: int) -> bool:
        gateway = gateways[index % GATEWAYS]
        version = directory_version(time.perf_counter() - start)
        old_software = version == 1 or rng.random() < OLD_PREFERENCE_SHARE
        preference = (Suite.HYBRID, Suite.PQ) if old_software else (Suite.PQ, Suite.HYBRID)
        initiator = Initiator(gateway.directory(version), preference=preference)
        message = initiator.start(time.time())
        retried = False
        for attempt in range(2):
            answer, pending = await respond(gateway, message)
            await asyncio.sleep(ONE_WAY_S)
            try:
                finish, client_keys = initiator.receive(answer)
            except HandshakeRejected as rejected:
                if attempt == 1:
                    outcomes[f"rejected twice ({rejected.code.name})"] += 1
                    return False
                try:
                    message = initiator.retry(rejected, time.time())
                except HandshakeError as error:
                    outcomes[f"no retry: {error.code.name} (directory v{version})"] += 1
                    return False
                outcomes["retried after a Reject"] += 1
                retried = True
                continue
            except HandshakeError as error:
                outcomes[f"failed: {error.code.name}"] += 1
                return False
            await asyncio.sleep(ONE_WAY_S)
            assert pending is not None
            gateway_keys = pending.finish(finish)  # type: ignore[attr-defined]
            suites_used[client_keys.suite.label] += 1
            if retried:
                outcomes["completed after a retry"] += 1
            return bool(gateway_keys.session_id == client_keys.session_id)
        return False

    async def operator() -> None:
        nonlocal published
        await asyncio.sleep(max(0.0, UPDATE_AT * duration - (time.perf_counter() - start)))
        for gateway in gateways:
            gateway.add_pq()
        published = 2
        await asyncio.sleep(max(0.0, RETIRE_AT * duration - (time.perf_counter() - start)))
        for gateway in gateways:
            gateway.retire_hybrid()

    schedule = Schedule(HANDSHAKES_PER_S * options.scale, duration)
    async with asyncio.TaskGroup() as group:
        group.create_task(operator())
        result = await drive_async(schedule, handshake, tick=options.tick)
    started = result.completed + result.failed
    success = 100.0 * result.completed / started if started else float("nan")
    events = "; ".join(f"{reason}: {n}" for reason, n in sorted(outcomes.items())) or "no Reject, no failure"
    return Measurement(
        value=success,
        duration_s=result.elapsed_s,
        offered_rate=schedule.rate_per_s,
        achieved_rate=result.achieved_rate,
        full_rate=HANDSHAKES_PER_S,
        rate_unit="handshakes/s",
        detail=f"{result.completed:,} of {started:,} handshakes completed across the switch hybrid -> pq on {GATEWAYS} gateways",
        notes=(
            "the load model gives no rate: 200 handshakes/s is ours; messages take 20 ms each way",
            f"suites of completed handshakes: {dict(suites_used)}; {events}; {result.missed} missed",
        ),
        counts={
            "started": started,
            "completed": result.completed,
            **{f"completed_{suite}": n for suite, n in sorted(suites_used.items())},
            "retried_after_reject": outcomes["retried after a Reject"],
            "completed_after_retry": outcomes["completed after a retry"],
            "failed": result.failed,
            **{_key(reason): n for reason, n in sorted(outcomes.items()) if reason not in _COUNTED},
        },
    )


_COUNTED = ("retried after a Reject", "completed after a retry")


def _key(reason: str) -> str:
    """A JSON key for a failure cause: 'no retry: UNSUPPORTED_SUITE (directory v1)' ->
    'failed_no_retry_unsupported_suite_directory_v1'."""
    words = "".join(ch if ch.isalnum() else " " for ch in reason.lower()).split()
    return "failed_" + "_".join(words)
