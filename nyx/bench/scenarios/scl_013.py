"""SCL-013 Stream backpressure試験: 1,500 req/s into a consumer 50% slower, queue of 10k; queue time <= 5 s.

A whole mixnet in this process (`nyx.bench.mixnet`: 4 gateways, three layers of 2 mixes, real
Sphinx packets over `SimTransport`). One `nyx.Client` holds one stream through the mixes to an
in-process service at the exit, `slowsink`, registered in the exit's `ServiceRegistry`: the
synthetic slow consumer. It reads at `CONSUMER_SHARE` (2/3) of the offered byte rate, so the
offered load is 50% more than it takes, for good. Requests of 64 B (the load model gives no size;
SCL-001's payload) arrive open-loop, evenly spaced, at 1,500/s x --scale.

**Backpressure, end to end.** The consumer reads only at its pace, so the exit's stream window
(64 KiB) moves only that fast; the client's session takes bytes into its send buffer (64 KiB)
only as the window opens; `writer.drain()` holds the producer while more than 64 KiB wait in the
writer; and in front of the producer a queue holds at most 10,000 requests (scaled with --scale,
so it always holds 10 s of the consumer's work). An arrival that finds the queue full is refused
at the door (counted, never accepted): memory stays bounded and nothing accepted is dropped.

**The value** is `stream_queue_latency`: the p95 over accepted requests of the time from a
request's arrival to the moment the client's session takes its last byte (the writer side's
queue: the queue in front of the producer plus the writer's buffer), read every 5 ms from the
writer's buffer level. After the load the replay keeps the consumer slow and waits until every
accepted request was taken, or `SLO_S` + 1 s: a request still waiting then counts with the
time it had waited (a lower bound already beyond the SLO).

**No accepted byte lost.** Then the consumer stops throttling, the producer ends the stream,
and the consumer checks every request it read against the bytes accepted, in order. A lost,
reordered or altered request makes the value infinite (a failed verdict) and is named in the notes.

**The physics.** A queue fed 1.5x its drain rate grows without bound until it is full: the
dwell time grows by 0.5 s per second once the windows and buffers (2 x 64 KiB: 2,048 requests,
2 s of the consumer's work) are full, and tops out at the full queue's 10 s. So a long run fails
the 5 s SLO with any backpressure; a queue of at most 5 s of the consumer's rate would meet it.
The default run (30 s) reaches that steady state; a short one (quick) does not.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import math
import struct
import time

from nyx.bench.loadgen import percentile
from nyx.bench.mixnet import MixnetShape, mixnet
from nyx.bench.report import Measurement
from nyx.bench.scenarios import RunOptions
from nyx.stream.socks import ByteReader, ByteWriter

REQUESTS_PER_S = 1500.0
REQUEST_BYTES = 64
CONSUMER_SHARE = 2 / 3  # the consumer takes this share of the offered rate ("50% slower")
QUEUE_REQUESTS = 10_000  # at scale 1: 10 s of the consumer's 1,000 req/s
SLO_S = 5.0
MONITOR_S = 0.005
GATEWAYS = 4
MIXES_PER_LAYER = 2
ENTRY, EXIT = "gw-01", "gw-04"
SERVICE = "slowsink"
SETUP_TIMEOUT_S = 30.0
DRAIN_TIMEOUT_S = 60.0  # for the unthrottled consumer to read the rest after the load
DEFAULT_DURATION_S = 30.0
QUICK = (4.0, 1.0)


def request(seq: int) -> bytes:
    """Accepted request number `seq`: its number, then filler that depends on it."""
    return struct.pack(">Q", seq) + bytes([seq & 0xFF]) * (REQUEST_BYTES - 8)


class SlowConsumer:
    """The exit's service: reads at `rate_bytes_per_s` while `throttled`, checks every request."""

    def __init__(self, rate_bytes_per_s: float) -> None:
        self.rate = rate_bytes_per_s
        self.throttled = True
        self.received = 0
        self.requests = 0
        self.bad: list[str] = []
        self.digest = hashlib.sha256()
        self.finished = asyncio.Event()

    async def __call__(self, reader: ByteReader, writer: ByteWriter) -> None:
        start = time.perf_counter()
        paced = 0  # bytes read under the throttle since `start`
        buffer = bytearray()
        try:
            while chunk := await reader.read(4096):
                self.received += len(chunk)
                self.digest.update(chunk)
                buffer += chunk
                while len(buffer) >= REQUEST_BYTES:
                    got = bytes(buffer[:REQUEST_BYTES])
                    del buffer[:REQUEST_BYTES]
                    if got != request(self.requests) and len(self.bad) < 5:
                        self.bad.append(f"request {self.requests} arrived as {got[:12].hex()}...")
                    self.requests += 1
                if self.throttled:
                    paced += len(chunk)
                    wait = start + paced / self.rate - time.perf_counter()
                    if wait > 0:
                        await asyncio.sleep(wait)
                else:
                    start, paced = time.perf_counter(), 0
            if buffer:
                self.bad.append(f"{len(buffer)} bytes after the last whole request")
        finally:
            self.finished.set()
            writer.close()


async def replay(options: RunOptions) -> Measurement:
    rate = REQUESTS_PER_S * options.scale
    consumer_rate = rate * CONSUMER_SHARE
    capacity = max(1, round(QUEUE_REQUESTS * options.scale))
    consumer = SlowConsumer(consumer_rate * REQUEST_BYTES)
    shape = MixnetShape(gateways=GATEWAYS, mixes_per_layer=MIXES_PER_LAYER)
    queue: collections.deque[float] = collections.deque()  # arrival times of requests not yet written
    written: collections.deque[tuple[int, float]] = collections.deque()  # (end offset, arrival), not yet taken
    queue_times: list[float] = []
    accepted = refused = missed = taken = 0
    bytes_written = 0
    digest = hashlib.sha256()
    wakeup = asyncio.Event()
    load_over = False

    async with mixnet(shape, options.seed) as net:
        net.services[EXIT].registry.register(SERVICE, consumer)
        client = net.client(gateway=ENTRY, exit=EXIT)
        async with asyncio.timeout(SETUP_TIMEOUT_S):
            await client.start()
            reader, writer = await client.open_connection(SERVICE)
        pending = writer._state.pending  # the writer's buffer: bytes written, not yet taken by the session

        async def produce() -> None:
            nonlocal bytes_written
            seq = 0
            while True:
                while not queue:
                    if load_over:
                        writer.write_eof()
                        return
                    wakeup.clear()
                    await wakeup.wait()
                arrival = queue.popleft()
                data = request(seq)
                seq += 1
                writer.write(data)
                digest.update(data)
                bytes_written += len(data)
                written.append((bytes_written, arrival))
                await writer.drain()  # backpressure: held while more than 64 KiB wait in the writer

        def observe(now: float) -> None:
            nonlocal taken
            level = bytes_written - len(pending)  # bytes the session has taken
            while written and written[0][0] <= level:
                _, arrival = written.popleft()
                queue_times.append(now - arrival)
                taken += 1

        async def monitor() -> None:
            while True:
                observe(time.perf_counter() - start)
                await asyncio.sleep(MONITOR_S)

        start = time.perf_counter()
        interval = 1.0 / rate
        arrivals = max(1, math.floor(rate * options.duration_s))
        async with asyncio.TaskGroup() as tg:
            producer = tg.create_task(produce())
            watcher = tg.create_task(monitor())
            last_tick = 0.0
            for index in range(arrivals):
                due = index * interval
                now = time.perf_counter() - start
                if now >= options.duration_s:
                    missed = arrivals - index
                    break
                if due > now:
                    await asyncio.sleep(due - now)
                if accepted - taken >= capacity:
                    refused += 1
                    continue
                queue.append(due)
                accepted += 1
                wakeup.set()
                if options.tick is not None and due - last_tick >= 0.25:
                    last_tick = due
                    options.tick(due)
            load_end = time.perf_counter() - start
            wait_until = time.perf_counter() + SLO_S + 1.0  # consumer still slow
            while taken < accepted and time.perf_counter() < wait_until:
                await asyncio.sleep(0.02)
            watcher.cancel()
            stop = time.perf_counter() - start
            observe(stop)
            untaken = accepted - taken
            queue_times += [stop - arrival for arrival in queue]  # lower bounds, beyond the SLO
            queue_times += [stop - arrival for _, arrival in written]
            consumed_in_time = consumer.requests
            consumer.throttled = False  # then every accepted byte must arrive
            load_over = True
            wakeup.set()
            try:
                async with asyncio.timeout(DRAIN_TIMEOUT_S):
                    await producer
                    await consumer.finished.wait()
                drained = True
            except TimeoutError:
                drained = False
            producer.cancel()
        gauge = client.metric_values().get("stream_queue_latency", math.nan)
        await client.close()

    lost = bytes_written - consumer.received
    intact = drained and lost == 0 and not consumer.bad and consumer.digest.digest() == digest.digest()
    p95 = percentile(queue_times, 95) if intact else math.inf
    arrivals_offered = arrivals - missed
    achieved_rate = rate * arrivals_offered / arrivals
    consumed_rate = consumed_in_time / stop if stop > 0 else 0.0
    return Measurement(
        value=p95,
        duration_s=load_end,
        offered_rate=rate,
        achieved_rate=achieved_rate,
        full_rate=REQUESTS_PER_S,
        rate_unit="req/s",
        detail=(
            f"p95 of {len(queue_times):,} accepted requests of {REQUEST_BYTES} B, from arrival to the session taking "
            f"them (queue of {capacity:,} + the writer's buffer), one stream through {GATEWAYS} gateways and "
            f"{3 * MIXES_PER_LAYER} mixes to a consumer at {CONSUMER_SHARE:.0%} of the offered rate"
        ),
        notes=(
            f"offered {arrivals_offered:,} requests ({rate:,.0f} req/s asked, {missed:,} not offered in time): "
            f"accepted {accepted:,}, refused {refused:,} at a full queue (backpressure, never accepted)",
            f"consumer at {consumer_rate:,.0f} req/s: it read {consumer.requests:,} requests; "
            + (
                f"every accepted byte arrived in order ({bytes_written:,} B, digest equal)"
                if intact
                else f"LOST OR ALTERED: {lost:,} of {bytes_written:,} accepted bytes missing, "
                f"drained={drained}, {'; '.join(consumer.bad) or 'digest differs'}"
            ),
            f"queue time p50 {percentile(queue_times, 50):.3f} s, max {max(queue_times, default=math.nan):.3f} s; "
            f"{untaken:,} still queued {SLO_S + 1:g} s after the load count with their wait so far (lower bounds); "
            f"the client's own stream_queue_latency gauge (write() to taken, the writer's buffer only, p95 of its "
            f"last 1,024 writes, the last ones after the load) reads {gauge:.3f} s",
            f"at this load the consumer drains a full queue in {capacity / consumer_rate:.1f} s: a queue fed 1.5x its "
            f"drain rate fills, so the dwell time tops out there; a queue of {SLO_S * consumer_rate:,.0f} would "
            f"hold it "
            f"to the SLO's {SLO_S:g} s; the consumer read {consumed_rate:,.0f} req/s while slow",
        ),
        latencies_s=tuple(queue_times),
        counts={
            "offered": arrivals_offered,
            "accepted": accepted,
            "refused_queue_full": refused,
            "missed": missed,
            "taken_in_time": taken,
            "bytes_accepted": bytes_written,
            "bytes_received": consumer.received,
            "bytes_lost": max(0, lost),
        },
    )
