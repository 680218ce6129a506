"""SCL-038 エッジプロキシ接続限界: concurrent client connections at one gateway; success >= 99.9%.

The source names a Traefik ingress ("200k concurrent TLS sess"); nyx has no proxy in front of
its gateways (clients reach an entry gateway directly over QUIC), so the replay asks the same
question of the entry gateway: how many clients it holds at once, whether each one it holds
works, and what it does at its limit.

A whole mixnet in this process (`nyx.bench.mixnet`: 10 gateways, three layers of 5 mixes, real
Sphinx packets over `SimTransport`). Every client (`nyx.Client`) enters through ONE gateway
(`ENTRY`); exits are spread over the other nine. **A connection** succeeds when the client,
within `DEADLINE_S`, opened a session through the mixes and echoed 64 B byte-exact on one stream;
it then stays connected (session and stream open, idle) until the run ends. Clients arrive evenly
over the first `RAMP_SHARE` of the run, at most `MAX_OPENING` opening at once (an arrival finding
them all busy is missed: never started). The value is succeeded / started, in percent. The
achieved load is the clients started (200k x --scale asked: far beyond one core, so a run at
scale 1 is INCONCLUSIVE); the notes give the most connected to the entry at once. A client the
entry refuses was still offered: a limit below the load fails the run, it does not shorten it.

**At the limit.** After the ramp, a probe sets the entry's `max_clients` to the clients it holds
plus `PROBE_ROOM` and connects `PROBE_ROOM + PROBE_OVER` more at once: the first `PROBE_ROOM`
must work, the rest must get the gateway's refusal datagram (`GatewayRefusedError`, reason FULL)
within `REFUSAL_WITHIN_S`, not hang. Those refusals are the limit working and are reported apart;
a probe client that hangs, fails otherwise, or is refused while there was room, is a failure and
counts in the value. The notes list every limit the gateway enforces, read from the objects.
"""

from __future__ import annotations

import asyncio
import collections
import random
import statistics
import time

from nyx.bench.mixnet import MixnetShape, mixnet
from nyx.bench.report import Measurement
from nyx.bench.scenarios import RunOptions
from nyx.bench.scenarios.scl_001 import quiet_client_log
from nyx.stream.client import Client, GatewayRefusedError
from nyx.stream.entry_wire import RefusalReason

CONNECTIONS = 200_000
GATEWAYS = 10
MIXES_PER_LAYER = 5
ENTRY = "gw-01"
ECHO_BYTES = 64
DEADLINE_S = 20.0
MAX_OPENING = 32
RAMP_SHARE = 0.7
PROBE_ROOM = 3
PROBE_OVER = 3
REFUSAL_WITHIN_S = 5.0
FULL = f"refused: {RefusalReason.FULL.name}"
MAX_CLIENTS: int | None = None  # the entry's limit during the run (None: the gateway's own; tests lower it)
DEFAULT_DURATION_S = 30.0
QUICK = (3.0, 0.0001)


async def replay(options: RunOptions) -> Measurement:
    with quiet_client_log():  # refusals are counted, not logged one by one
        return await _replay(options)


async def _replay(options: RunOptions) -> Measurement:
    rng = random.Random(options.seed)
    target = max(1, round(CONNECTIONS * options.scale))
    ramp_s = RAMP_SHARE * options.duration_s
    shape = MixnetShape(gateways=GATEWAYS, mixes_per_layer=MIXES_PER_LAYER)
    outcomes: collections.Counter[str] = collections.Counter()
    probe: collections.Counter[str] = collections.Counter()
    refusal_texts: set[str] = set()
    opening = held = peak = started = missed = 0
    release = asyncio.Event()

    async with mixnet(shape, options.seed) as net:
        entry = net.gateways[ENTRY]
        exits = [g for g in net.gateway_ids if g != ENTRY]
        if MAX_CLIENTS is not None:
            entry.max_clients = MAX_CLIENTS
        limits = (
            f"max_clients {entry.max_clients:,} clients held at once (then FULL); exit max_sessions "
            f"{entry.exit.max_sessions:,} (then sessions_full); {entry.exit.openings.max_openings:,} handshakes "
            f"opening at once per exit (the oldest evicted); {entry.admission.rate_per_s * 60:g} client "
            f"handshakes/min per source address, burst {entry.admission.burst:g} (RATE_LIMITED; each simulated "
            f"client has its own address, so SCL-002 exercises it); DRAINING while it drains"
        )

        async def connect(hold: bool) -> tuple[str, float, Client | None]:
            """One client's connection: 'ok', 'refused: <reason>' or 'failed: <why>', the seconds it
            took, and the client still open when it worked and `hold` (the caller closes it)."""
            client = net.client(gateway=ENTRY, exit=rng.choice(exits))
            payload = rng.randbytes(ECHO_BYTES)
            begun = time.perf_counter()
            try:
                async with asyncio.timeout(DEADLINE_S):
                    await client.start()
                    reader, writer = await client.open_connection("echo")
                    writer.write(payload)
                    echoed = await reader.readexactly(ECHO_BYTES)
                outcome = "ok" if echoed == payload else "failed: echo differs"
            except GatewayRefusedError as refused:
                refusal_texts.add(refused.refusal.text)
                outcome = f"refused: {refused.refusal.reason.name}"
            except TimeoutError:
                outcome = f"failed: nothing within {DEADLINE_S:g} s"
            except Exception as exc:
                outcome = f"failed: {type(exc).__name__}"
            took = time.perf_counter() - begun
            if outcome == "ok" and hold:
                return outcome, took, client
            await client.close()
            return outcome, took, None

        async def arrival() -> None:
            nonlocal opening, held, peak
            try:
                outcome, _, client = await connect(hold=True)
            finally:
                opening -= 1
            outcomes[outcome] += 1
            if client is not None:
                held += 1
                peak = max(peak, opening + held)
                try:
                    await release.wait()  # held: connected and idle until the run ends
                finally:
                    await client.close()

        tasks: list[asyncio.Task[None]] = []
        start = time.perf_counter()
        try:
            interval = ramp_s / target
            last_tick = 0.0
            for index in range(target):
                due = index * interval
                now = time.perf_counter() - start
                if now >= ramp_s:
                    missed += target - index
                    break
                if due > now:
                    await asyncio.sleep(due - now)
                if opening >= MAX_OPENING:
                    missed += 1
                    continue
                opening += 1
                started += 1
                peak = max(peak, opening + held)
                tasks.append(asyncio.create_task(arrival()))
                if options.tick is not None and due - last_tick >= 0.25:
                    last_tick = due
                    options.tick(due)
            await asyncio.sleep(max(0.0, options.duration_s - (time.perf_counter() - start)))
            while opening > 0:
                await asyncio.sleep(0.05)
            elapsed = time.perf_counter() - start
            clients_at_entry = len(entry.clients)

            # The probe: room for PROBE_ROOM more, then PROBE_OVER beyond the limit, all at once.
            limit_before = entry.max_clients
            entry.max_clients = clients_at_entry + PROBE_ROOM
            probe_results = await asyncio.gather(*(connect(hold=False) for _ in range(PROBE_ROOM + PROBE_OVER)))
            entry.max_clients = limit_before
            probe.update(outcome for outcome, _, _ in probe_results)
            refusal_s = [took for outcome, took, _ in probe_results if outcome == FULL]
        finally:
            release.set()
            await asyncio.gather(*tasks, return_exceptions=True)

    succeeded = outcomes["ok"]
    main_failures = started - succeeded
    # A FULL refusal in time is the limit working, up to PROBE_OVER of them; one more was refused
    # while there was room.
    clear = min(PROBE_OVER, sum(1 for took in refusal_s if took <= REFUSAL_WITHIN_S))
    probe_ok = probe["ok"]
    # Expected: PROBE_ROOM work, PROBE_OVER refused clearly. Anything else in the probe is a failure.
    probe_failures = (PROBE_ROOM + PROBE_OVER) - probe_ok - clear
    attempts = started + PROBE_ROOM + PROBE_OVER - clear
    success = 100.0 * (succeeded + probe_ok) / attempts if attempts else float("nan")
    main_breakdown = "; ".join(f"{k}: {n}" for k, n in sorted(outcomes.items()) if k != "ok") or "none"
    probe_breakdown = "; ".join(f"{k}: {n}" for k, n in sorted(probe.items()))
    refusal_ms = f"{1000 * statistics.median(refusal_s):.0f} ms" if refusal_s else "n/a"
    return Measurement(
        value=success,
        duration_s=elapsed,
        offered_rate=float(target),
        achieved_rate=float(started),
        full_rate=float(CONNECTIONS),
        rate_unit="clients",
        detail=(
            f"{succeeded + probe_ok:,} of {attempts:,} client connections to {ENTRY} succeeded (session through "
            f"{3 * MIXES_PER_LAYER} mixes to one of {len(exits)} exits and a {ECHO_BYTES} B echo, within "
            f"{DEADLINE_S:g} s); refusals at the probed limit are not failures"
        ),
        notes=(
            f"held {peak:,} clients connected to {ENTRY} at once (asked {target:,}); {clients_at_entry:,} in its "
            f"client "
            f"table after the ramp; {missed:,} arrivals missed (all {MAX_OPENING} opening slots busy, or the ramp was "
            f"over); failures: {main_breakdown}",
            f"limit probe: max_clients set to {clients_at_entry + PROBE_ROOM:,} ({PROBE_ROOM} free), "
            f"{PROBE_ROOM + PROBE_OVER} clients at once: {probe_breakdown}; refusals {clear} clear (FULL within "
            f"{REFUSAL_WITHIN_S:g} s, median {refusal_ms}), {probe_failures} probe failures; the client reads: "
            + (" | ".join(sorted(refusal_texts)) or "no refusal"),
            f"limits the gateway enforces: {limits}",
        ),
        counts={
            "started": started,
            "succeeded": succeeded,
            "failed": main_failures,
            "peak_connected": peak,
            "missed": missed,
            "probe_ok": probe_ok,
            "probe_refused_full": probe[FULL],
            "probe_refused_clearly": clear,
            "probe_failures": probe_failures,
        },
    )
