"""SCL-002 ハンドシェイク集中負荷: 2,000 session creations/s, 20 gateways, 30/min per address; errors < 0.05%.

A whole mixnet in this process (`nyx.bench.mixnet`): 20 gateways, three layers of 5 mixes, real
Sphinx packets over `SimTransport`. **A session creation** is a new `nyx.Client` (a new random
id, a new link to its entry gateway, which counts it as a client handshake in `ClientAdmission`)
opening a session to an exit (the hybrid post-quantum handshake through the mixes, SURBs
supplied) and one stream to the exit's `echo` service (the target request answered OK). It
succeeds when `open_connection` returns. Creations arrive open-loop (2,000/s x --scale); entry
and exit gateways are drawn at random; at most `MAX_OPENING` are under way at once (an arrival
finding them all busy is missed: not offered).

**The rate limit.** Each gateway rations client handshakes per source address (30 per minute,
a burst of 30). Over `SimTransport` every client has its own stand-in address, so honest clients
never meet the limit. To exercise it, `CROWD_SHARE` of the creations come from one address (a
crowd behind one NAT, or one abusive host) through one entry gateway: the gateway's transport
reports that address for them (`inbound_source`, what QUIC reports for a real connection), so
their first packet takes the real path: `Gateway._admit`, `ClientAdmission.admit`, the refusal
datagram, the connection shed, the client's `GatewayRefusedError(RATE_LIMITED)`. The precondition
"rate limiter warm-up" is met before the clock starts: that address has spent its burst.

**The value** is the error rate in percent: creations that should have succeeded and did not,
over creations attempted. A crowd creation refused as rate limited is the limiter doing its job,
reported separately, never an error; one refused for another reason, or admitted and then
failing, is an error. The gateways' `api_handshake_errors_total` (handshakes the exits refused)
is in the notes.

**Scale.** Each creation costs the hybrid handshake on both sides and about 30 Sphinx packets
(Init fragments, the 24 SURBs a session starts with, the Finish), each several X25519 operations
and hops of Python, all on one core: this machine creates a few sessions per second, far below
2,000/s, so a run at scale 1 is INCONCLUSIVE and says what it reached.
"""

from __future__ import annotations

import asyncio
import collections
import random
import time

from nyx.bench.loadgen import Schedule, drive_async
from nyx.bench.mixnet import MixnetShape, mixnet
from nyx.bench.report import Measurement
from nyx.bench.scenarios import RunOptions
from nyx.bench.scenarios.scl_001 import quiet_client_log
from nyx.stream.client import GatewayRefusedError
from nyx.stream.entry_wire import RefusalReason

CREATES_PER_S = 2000.0
GATEWAYS = 20
MIXES_PER_LAYER = 5
RATE_LIMIT_PER_MIN = 30.0
CROWD_SHARE = 0.2  # of creations (every fifth), from one address through one entry gateway
CROWD_ADDRESS = "198.51.100.7"  # TEST-NET-2
CROWD_ENTRY = "gw-01"
MAX_OPENING = 32  # creations under way at once
CREATE_TIMEOUT_S = 30.0
MAX_CLIENTS_PER_GATEWAY: int | None = None  # None: the gateway's default (tests lower it to inject a fault)
DEFAULT_DURATION_S = 10.0
QUICK = (3.0, 0.002)


async def replay(options: RunOptions) -> Measurement:
    rng = random.Random(options.seed)
    shape = MixnetShape(gateways=GATEWAYS, mixes_per_layer=MIXES_PER_LAYER, client_rate_per_min=RATE_LIMIT_PER_MIN)
    outcomes: collections.Counter[str] = collections.Counter()
    crowd_ids: set[str] = set()

    async with mixnet(shape, options.seed) as net:
        ids = net.gateway_ids
        if MAX_CLIENTS_PER_GATEWAY is not None:
            for gateway in net.gateways.values():
                gateway.max_clients = MAX_CLIENTS_PER_GATEWAY
        crowd_gateway = net.gateways[CROWD_ENTRY]
        transport = crowd_gateway.transport
        real_source = transport.inbound_source

        def inbound_source(peer: str) -> tuple[str, int] | None:
            return (CROWD_ADDRESS, 40_000) if peer in crowd_ids else real_source(peer)

        transport.inbound_source = inbound_source  # type: ignore[method-assign]
        admission = crowd_gateway.admission
        for _ in range(int(admission.burst)):  # warm-up: the crowd's address has spent its burst
            admission.admit(CROWD_ADDRESS, crowd_gateway.monotonic())
        decisions: collections.Counter[bool] = collections.Counter()  # the limiter's, for the crowd's address
        real_admit = admission.admit

        def admit(source: str, now: float) -> bool:
            allowed = real_admit(source, now)
            if source == CROWD_ADDRESS:
                decisions[allowed] += 1
            return allowed

        admission.admit = admit  # type: ignore[method-assign]
        crowd_started = time.monotonic()

        async def create(index: int) -> bool:
            crowd = index % round(1 / CROWD_SHARE) == 0  # every fifth, the first included
            entry = CROWD_ENTRY if crowd else rng.choice(ids)
            exit_id = rng.choice([g for g in ids if g != entry])
            client = net.client(gateway=entry, exit=exit_id)
            if crowd:
                crowd_ids.add(client.client_id)
            who = "crowd" if crowd else "own"
            try:
                await client.start()
                await client.open_connection("echo")
                outcomes[f"{who}: created"] += 1
                return True
            except GatewayRefusedError as refused:
                if crowd and refused.refusal.reason is RefusalReason.RATE_LIMITED:
                    outcomes["crowd: refused (rate limited)"] += 1
                    return True  # the limiter's answer, on time: not an error
                outcomes[f"{who}: error: refused ({refused.refusal.reason.name.lower()})"] += 1
                return False
            except asyncio.CancelledError:
                outcomes[f"{who}: error: timed out"] += 1
                raise
            except Exception as exc:
                outcomes[f"{who}: error: {type(exc).__name__}"] += 1
                return False
            finally:
                await client.close()

        schedule = Schedule(CREATES_PER_S * options.scale, options.duration_s)
        with quiet_client_log():  # one warning per refused client: counted here instead
            result = await drive_async(schedule, create, max_outstanding=MAX_OPENING, timeout_s=CREATE_TIMEOUT_S,
                                       tick=options.tick)
        crowd_span = time.monotonic() - crowd_started
        handshake_errors = sum(g.metric_values()["api_handshake_errors_total"] for g in net.gateways.values())
        refused_full = sum(g.counts["clients_refused_full"] for g in net.gateways.values())
        crowd_admitted, crowd_limited = decisions[True], decisions[False]

    attempted = result.started
    errors = result.failed  # every False return and every timeout; a rate-limited refusal returns True
    refused = outcomes["crowd: refused (rate limited)"]
    crowd_total = sum(n for k, n in outcomes.items() if k.startswith("crowd"))
    allowed = int(crowd_span * admission.rate_per_s) + 1
    error_rate = 100.0 * errors / attempted if attempted else float("nan")
    breakdown = "; ".join(f"{k}: {n}" for k, n in sorted(outcomes.items()))
    return Measurement(
        value=error_rate,
        duration_s=result.elapsed_s,
        offered_rate=schedule.rate_per_s,
        achieved_rate=result.achieved_rate,
        full_rate=CREATES_PER_S,
        rate_unit="creates/s",
        detail=(
            f"{errors} errors in {attempted:,} session creations (new client, session to an exit, one echo stream) "
            f"over {GATEWAYS} gateways and {3 * MIXES_PER_LAYER} mixes; rate-limited refusals are not errors"
        ),
        notes=(
            f"rate limit {RATE_LIMIT_PER_MIN:g}/min per address (burst {admission.burst:g}): {refused} of "
            f"{crowd_total} creations from one address ({CROWD_ADDRESS} via {CROWD_ENTRY}, burst spent before the "
            f"clock) correctly refused; the limiter admitted {crowd_admitted} and refused {crowd_limited} from it in "
            f"{crowd_span:.1f} s (its refill allows {allowed})",
            f"outcomes: {breakdown or 'none'}; {result.missed:,} arrivals missed (all {MAX_OPENING} slots busy, "
            f"or not started in time)",
            f"error-rate resolution: one error in {attempted:,} is {100.0 / max(1, attempted):.3g}% "
            f"(the SLO's 0.05% needs 2,000 creations to resolve)",
            f"gateways: api_handshake_errors_total {handshake_errors:g}, clients refused as full {refused_full}",
        ),
        counts={
            "attempted": attempted,
            "errors": errors,
            "created": outcomes["own: created"] + outcomes["crowd: created"],
            "refused_rate_limited": refused,
            "crowd": crowd_total,
            "crowd_admitted_by_limiter": crowd_admitted,
            "crowd_refused_by_limiter": crowd_limited,
            "missed": result.missed,
            "timed_out": outcomes["own: error: timed out"] + outcomes["crowd: error: timed out"],
        },
    )
