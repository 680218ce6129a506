"""SCL-037 Stream暗号キー再ロード: key rotation at 100/s under live traffic; reload latency <= 5 s.

100 gateways each hold a hybrid (X-Wing) static key, and clients keep handshaking with them
(200 handshakes/s at scale 1). Key rotations arrive open-loop at 100 per second, round robin over
the gateways (one rotation per gateway per second). A rotation is what the gateway does when its
secret store hands it a new key:

1. load the new key pair (generated here: there is no Vault in-process),
2. `Responder.add_key` and publish the new public key in the directory,
3. prove it serves: a probe handshake to the new key completes,
4. retire the old key (`Responder.remove_key`) after a 1 s overlap, so clients that fetched the
   directory just before still succeed.

Reload latency runs from the rotation's scheduled time to the end of step 3 (so queueing behind
other work counts); the value is its p95. Live handshakes that fail because of a rotation are
counted in the notes. The rotations and the live handshakes share one open-loop schedule
(300 arrivals/s, every third a rotation).
"""

from __future__ import annotations

import collections
import time

from nyx.bench.loadgen import Schedule, drive_sync, percentile
from nyx.bench.report import Measurement
from nyx.bench.scenarios import RunOptions
from nyx.crypto.kem import PrivateKey
from nyx.crypto.suites import Suite
from nyx.stream.handshake import HandshakeError, Initiator, InitReplayCache, Responder

ROTATIONS_PER_S = 100.0
LIVE_PER_S = 200.0
GATEWAYS = 100
OVERLAP_S = 1.0
SUITE = Suite.HYBRID
DEFAULT_DURATION_S = 10.0
QUICK = (3.0, 1.0)


def load_key() -> tuple[PrivateKey, bytes]:
    """Step 1: the new key pair the secret store hands over (generated here: no Vault in-process)."""
    return SUITE.kem().generate()


class _Gateway:
    def __init__(self) -> None:
        private, public = SUITE.kem().generate()
        self.responder = Responder({SUITE: private}, replay_cache=InitReplayCache(capacity=1 << 16))
        self.public = public  # what the directory lists

    def handshake(self, public: bytes) -> bool:
        initiator = Initiator({SUITE: public}, preference=(SUITE,))
        now = time.time()
        try:
            accept, pending = self.responder.respond(initiator.start(now), now)
            finish, client_keys = initiator.receive(accept)
            return pending.finish(finish).session_id == client_keys.session_id
        except HandshakeError:
            return False


async def replay(options: RunOptions) -> Measurement:
    gateways = [_Gateway() for _ in range(GATEWAYS)]
    retiring: collections.deque[tuple[float, _Gateway, bytes]] = collections.deque()
    live = collections.Counter[str]()
    rotations = 0

    def rotate(gateway: _Gateway) -> bool:
        private, public = load_key()
        gateway.responder.add_key(SUITE, private)
        old, gateway.public = gateway.public, public
        if not gateway.handshake(public):
            return False
        retiring.append((time.perf_counter() + OVERLAP_S, gateway, old))
        return True

    def arrival(index: int) -> bool:
        nonlocal rotations
        now = time.perf_counter()
        while retiring and retiring[0][0] <= now:
            _, gateway, old = retiring.popleft()
            gateway.responder.remove_key(old)
        if index % 3 == 0:
            rotations += 1
            return rotate(gateways[(index // 3) % GATEWAYS])
        gateway = gateways[index % GATEWAYS]
        ok = gateway.handshake(gateway.public)
        live["ok" if ok else "failed"] += 1
        return None if ok else False  # a live handshake is not a reload: no latency sample

    schedule = Schedule((ROTATIONS_PER_S + LIVE_PER_S) * options.scale, options.duration_s)
    result = await drive_sync(schedule, arrival, tick=options.tick)
    reloads = [lat for lat, index in zip(result.latencies_s, result.indices) if index % 3 == 0]
    achieved_rotations = len(reloads) / result.elapsed_s
    failed_rotations = rotations - len(reloads)
    return Measurement(
        value=percentile(reloads, 95),
        duration_s=result.elapsed_s,
        offered_rate=schedule.rate_per_s / 3,
        achieved_rate=achieved_rotations,
        full_rate=ROTATIONS_PER_S,
        rate_unit="rotations/s",
        detail=f"p95 over {len(reloads):,} rotations on {GATEWAYS} gateways, from each rotation's scheduled time to a served handshake",
        notes=(
            f"reload p50 {1000 * percentile(reloads, 50):.2f} ms, max {1000 * max(reloads, default=float('nan')):.2f} ms; "
            f"{failed_rotations} rotations failed",
            f"live handshakes alongside: {live['ok']:,} ok, {live['failed']} failed; {result.missed} arrivals missed",
        ),
        latencies_s=tuple(reloads),
    )
