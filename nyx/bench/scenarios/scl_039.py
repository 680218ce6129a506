"""SCL-039 CLI/SDKバージョン差異: two SDK generations against the same gateways; 0 compatibility errors.

A whole mixnet in this process (`nyx.bench.mixnet`: 4 gateways speaking the hybrid and the pq
suites, three layers of 2 mixes, real Sphinx packets over `SimTransport`). Clients arrive
open-loop (5/s x --scale; the load model gives no rate), alternating between two populations
whose offers differ but overlap the gateways':

- **SDK v1** offers protocol version 1 only and the hybrid suite only (the first generation).
- **SDK v2** prefers the pq suite, then hybrid, and offers protocol version 2 first, then 1.
  This build speaks version 1 only (`messages.SUPPORTED_VERSIONS`), so every v2 client's first
  Init is answered with a Reject (UNSUPPORTED_VERSION, listing version 1) and the client retries
  with version 1 through the negotiation (`Initiator.retry`; the retried Init names the
  rejected attempt, which the gateway checks is no downgrade). That is the compatibility path a
  newer SDK takes against older gateways, run for real through the mixes.

Each client opens a session to an exit and echoes 64 B on one stream. The value is
`client_version_errors`: clients of either population that did not get a working session (any
cause, named in the notes), SLO 0. The notes give the versions and suites negotiated per
population and the gateways' own `client_version_errors` gauge, which counts the Rejects the
negotiation recovered from (one per v2 client), not failed clients.

**Probes** of clients the gateways must turn away clearly: one that offers only version 2 (the
gateways answer with a Reject, the client cannot retry and `open_connection` raises
`SessionOpenError` naming "no protocol version in common"), and one that accepts only the classic
suite, which no gateway publishes a key for (`NoRouteError` before anything is sent). Each probe
must fail with its specific error within `PROBE_WITHIN_S`; the notes quote what the client sees.

`nyx.Client` has no parameter for the versions it offers (the `Initiator` it builds offers
`SUPPORTED_VERSIONS`); `VersionedClient` below passes them by swapping the `Initiator` factory
for the one synchronous call that builds it. The small change to make instead: a
`versions: Sequence[int] = SUPPORTED_VERSIONS` parameter of `Client.__init__`, kept as
`self.versions` and passed as `Initiator(keys, preference=..., versions=self.versions)` in
`Client._open_session`.
"""

from __future__ import annotations

import asyncio
import collections
import random
import time
from collections.abc import Sequence
from typing import Any

from nyx.bench.loadgen import Schedule, drive_async
from nyx.bench.mixnet import Mixnet, MixnetShape, mixnet
from nyx.bench.report import Measurement
from nyx.bench.scenarios import RunOptions
from nyx.crypto.suites import Suite
from nyx.stream.client import Client, NoRouteError, SessionOpenError
from nyx.stream.handshake import Initiator

CLIENTS_PER_S = 5.0  # ours: the load model ("mixed client versions") gives no rate; one core carries it
GATEWAYS = 4
MIXES_PER_LAYER = 2
GATEWAY_SUITES = (Suite.HYBRID, Suite.PQ)
RETIRED_SUITES: tuple[Suite, ...] = ()  # suites the gateways stop accepting (tests retire hybrid: a fault)
POPULATIONS: dict[str, tuple[tuple[int, ...], tuple[Suite, ...]]] = {  # name -> (versions, suites), best first
    "SDK v1": ((1,), (Suite.HYBRID,)),
    "SDK v2": ((2, 1), (Suite.PQ, Suite.HYBRID)),
}
UNSPOKEN_VERSION = 2  # the version-only probe's offer
ECHO_BYTES = 64
MAX_OPENING = 32
CLIENT_TIMEOUT_S = 20.0
PROBE_WITHIN_S = 10.0
DEFAULT_DURATION_S = 10.0
QUICK = (2.0, 1.0)


class VersionedClient(Client):
    """`nyx.Client` (offering its `versions`) that keeps the `Initiator` of its last session
    (whose `version` and `suite` are the negotiated ones once the session opened)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.initiator: Initiator | None = None

    def _open_session(self, exit_id: str):  # type: ignore[no-untyped-def]
        session = super()._open_session(exit_id)
        opening = session.core.opening
        self.initiator = opening.initiator if opening is not None else None
        return session


def make_client(net: Mixnet, index: int, entry: str, exit_id: str, versions: Sequence[int],
                suites: Sequence[Suite]) -> VersionedClient:
    """A VersionedClient on its own simulated link, as `Mixnet.client` makes a `Client`."""
    client_id = f"v{index:07d}{net.rng.getrandbits(32):08x}"
    return VersionedClient(net.directory, gateway=entry, exit=exit_id, transport=net.network.transport(client_id),
                           client_id=client_id, cover=None, rng=random.Random(net.rng.random()),
                           suites=tuple(suites), versions=versions)


async def replay(options: RunOptions) -> Measurement:
    rng = random.Random(options.seed)
    shape = MixnetShape(gateways=GATEWAYS, mixes_per_layer=MIXES_PER_LAYER, suites=GATEWAY_SUITES)
    names = list(POPULATIONS)
    started: collections.Counter[str] = collections.Counter()
    worked: collections.Counter[str] = collections.Counter()
    errors: collections.Counter[str] = collections.Counter()
    negotiated: dict[str, collections.Counter[str]] = {name: collections.Counter() for name in names}

    async with mixnet(shape, options.seed) as net:
        ids = net.gateway_ids
        for gateway in net.gateways.values():
            responder = gateway.exit.openings.responder
            responder.suites = tuple(s for s in responder.suites if s not in RETIRED_SUITES)

        async def arrival(index: int) -> bool:
            name = names[index % len(names)]
            versions, suites = POPULATIONS[name]
            entry = rng.choice(ids)
            client = make_client(net, index, entry, rng.choice([g for g in ids if g != entry]), versions, suites)
            started[name] += 1
            payload = rng.randbytes(ECHO_BYTES)
            try:
                await client.start()
                reader, writer = await client.open_connection("echo")
                writer.write(payload)
                if await reader.readexactly(ECHO_BYTES) != payload:
                    errors[f"{name}: echo differs"] += 1
                    return False
                initiator = client.initiator
                assert initiator is not None
                negotiated[name][f"v{initiator.version} {initiator.suite.label}"] += 1
                worked[name] += 1
                return True
            except asyncio.CancelledError:
                errors[f"{name}: no session within {CLIENT_TIMEOUT_S:g} s"] += 1
                raise
            except Exception as exc:
                errors[f"{name}: {type(exc).__name__}: {exc}"[:160]] += 1
                return False
            finally:
                await client.close()

        schedule = Schedule(CLIENTS_PER_S * options.scale, options.duration_s)
        result = await drive_async(schedule, arrival, max_outstanding=MAX_OPENING, timeout_s=CLIENT_TIMEOUT_S,
                                   tick=options.tick)
        gauge = sum(g.metric_values()["client_version_errors"] for g in net.gateways.values())

        async def probe(label: str, versions: Sequence[int], suites: Sequence[Suite],
                        expected: type[Exception], words: str) -> tuple[bool, str]:
            entry, exit_id = ids[0], ids[1]
            client = make_client(net, 9_000_000 + len(label), entry, exit_id, versions, suites)
            begun = time.perf_counter()
            try:
                async with asyncio.timeout(PROBE_WITHIN_S):
                    await client.start()
                    await client.open_connection("echo")
                return False, f"{label}: connected (it should have been turned away)"
            except TimeoutError:
                return False, f"{label}: no answer within {PROBE_WITHIN_S:g} s (a hang, not a refusal)"
            except Exception as exc:
                took = time.perf_counter() - begun
                clear = isinstance(exc, expected) and words in str(exc)
                return clear, f"{label}: {type(exc).__name__} after {took * 1000:.0f} ms: {exc}"
            finally:
                await client.close()

        probes = [
            await probe(f"versions [{UNSPOKEN_VERSION}] only", (UNSPOKEN_VERSION,), (Suite.HYBRID, Suite.PQ),
                        SessionOpenError, "no protocol version in common"),
            await probe("suite classic only", (1,), (Suite.CLASSIC,), NoRouteError, "no handshake key"),
        ]

    unclear = sum(1 for clear, _ in probes if not clear)
    failed = result.failed + unclear  # a probe not turned away clearly is a compatibility error too
    per_population = "; ".join(
        f"{name} ({'/'.join(f'v{v}' for v in POPULATIONS[name][0])}, "
        f"{'/'.join(s.label for s in POPULATIONS[name][1])}): {worked[name]} of {started[name]} worked, "
        f"negotiated {dict(negotiated[name]) or 'nothing'}"
        for name in names
    )
    breakdown = "; ".join(f"{k}: {n}" for k, n in sorted(errors.items())) or "none"
    return Measurement(
        value=float(failed),
        duration_s=result.elapsed_s,
        offered_rate=schedule.rate_per_s,
        achieved_rate=result.achieved_rate,
        full_rate=CLIENTS_PER_S,
        rate_unit="clients/s",
        detail=(
            f"{result.failed} of {result.started} clients of two SDK generations got no working session (session "
            f"through "
            f"{3 * MIXES_PER_LAYER} mixes and a {ECHO_BYTES} B echo) from {GATEWAYS} gateways speaking "
            f"v1 with {'/'.join(s.label for s in GATEWAY_SUITES if s not in RETIRED_SUITES)}, "
            f"plus {unclear} of {len(probes)} unsupported-client probes not turned away clearly"
        ),
        notes=(
            per_population,
            f"errors: {breakdown}; {result.missed} arrivals missed; gateways' client_version_errors gauge "
            f"{gauge:g} (Rejects the negotiation recovered from: v2 clients' first Inits)",
            f"probes ({'all turned away clearly' if not unclear else f'{unclear} NOT clear'}): "
            + " | ".join(text for _, text in probes),
            f"the load model gives no rate: {CLIENTS_PER_S:g} clients/s is ours; version 2 does not exist in this "
            "build, a v2 SDK offers it first to exercise the version negotiation",
        ),
        counts={
            "started": result.started,
            "errors": failed,
            "clients_failed": result.failed,
            **{f"worked_{name.replace(' ', '_').lower()}": worked[name] for name in names},
            "gateway_version_rejects": int(gauge),
            "probes_unclear": unclear,
            "missed": result.missed,
        },
    )
