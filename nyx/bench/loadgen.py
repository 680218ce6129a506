"""Open-loop load generation: arrivals on a schedule fixed in advance, whatever the system does.

A closed loop (send the next request when the last one finished) lets a slow system slow its own
load down and hide its queueing ("coordinated omission"). Here arrival i is due at
`start + i / rate` regardless of how the earlier ones went, and latency is measured from that
scheduled time, so time spent waiting behind earlier work counts.

On these 2-core machines the generator shares the process (and the event loop) with the system
under test, so it may fall behind. It then does not pretend: arrivals still not started when the
run's time is up are counted as `missed`, and the achieved rate is completions per second of
run time. Reports compare it with the offered rate and never round it up.
"""

from __future__ import annotations

import asyncio
import collections
import math
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

T = TypeVar("T")

Clock = Callable[[], float]
Tick = Callable[[float], None]  # called with the elapsed seconds, for progress indicators

#: Yield to the event loop at least this often while catching up on late arrivals.
_YIELD_EVERY = 32
#: drive_sync sleeps the last stretch before an arrival with time.sleep, which is precise to
#: about 0.1 ms, instead of on the event loop, whose timers fire up to a millisecond late.
_TIMER_SLACK_S = 0.0015


@dataclass(frozen=True, slots=True)
class Schedule:
    """`rate_per_s` arrivals per second, evenly spaced, for `duration_s` seconds."""

    rate_per_s: float
    duration_s: float

    def __post_init__(self) -> None:
        if self.rate_per_s <= 0 or self.duration_s <= 0:
            raise ValueError(f"a schedule needs a positive rate and duration, got {self.rate_per_s}/s for {self.duration_s} s")

    @property
    def arrivals(self) -> int:
        return max(1, math.floor(self.rate_per_s * self.duration_s))

    def due_s(self, index: int) -> float:
        """When arrival `index` is due, in seconds after the start."""
        return index / self.rate_per_s


@dataclass(slots=True)
class LoadResult:
    """What an open-loop run did. Latencies are seconds from each arrival's scheduled time."""

    scheduled: int
    elapsed_s: float = 0.0
    issue_s: float = 0.0  # from the start until the last arrival was started (or the time was up)
    completed: int = 0
    failed: int = 0
    missed: int = 0  # due, but the generator never got to start them before the time was up
    latencies_s: list[float] = field(default_factory=list)
    indices: list[int] = field(default_factory=list)  # the arrival of each latency sample

    @property
    def started(self) -> int:
        return self.completed + self.failed

    @property
    def achieved_rate(self) -> float:
        """Arrivals started (and then completed or failed) per second of the schedule's span.

        Operations still finishing after the last arrival (async replays) do not dilute it."""
        return self.started / self.issue_s if self.issue_s > 0 else 0.0


async def drive_sync(
    schedule: Schedule,
    operation: Callable[[int], bool | None],
    *,
    clock: Clock = time.perf_counter,
    tick: Tick | None = None,
    grace_s: float = 0.0,
) -> LoadResult:
    """Run `operation(i)` for each arrival at (or, when behind, as soon as possible after) its time.

    For CPU-bound sans-I/O work (encoding, handshakes): the operation runs on the loop's thread.
    It returns False for a failure (counted, no latency), anything else for a success. Arrivals
    not started by `duration_s + grace_s` are missed.
    """
    result = LoadResult(scheduled=schedule.arrivals)
    start = clock()
    stop_at = schedule.duration_s + grace_s
    index = 0
    last_tick = 0.0
    while index < schedule.arrivals:
        now = clock() - start
        if now >= stop_at:
            break
        due = schedule.due_s(index)
        if due > now + _TIMER_SLACK_S:
            await asyncio.sleep(due - now - _TIMER_SLACK_S)
            continue
        if due > now:
            time.sleep(due - now)  # the loop's timers are late by up to 1 ms (epoll waits in whole ms)
        ok = operation(index)
        done = clock() - start
        if ok is False:
            result.failed += 1
        else:
            result.completed += 1
            result.latencies_s.append(done - due)
            result.indices.append(index)
        index += 1
        if index % _YIELD_EVERY == 0:
            await asyncio.sleep(0)
        if tick is not None and done - last_tick >= 0.25:
            last_tick = done
            tick(done)
    result.missed = schedule.arrivals - index
    result.elapsed_s = result.issue_s = max(clock() - start, schedule.duration_s)
    return result


async def drive_async(
    schedule: Schedule,
    operation: Callable[[int], Awaitable[bool | None]],
    *,
    max_outstanding: int = 1024,
    timeout_s: float = 10.0,
    clock: Clock = time.perf_counter,
    tick: Tick | None = None,
) -> LoadResult:
    """Start `operation(i)` as its own task at each arrival's time, without waiting for earlier ones.

    For I/O work (QUIC handshakes). At most `max_outstanding` run at once: an arrival finding
    them all busy is missed, as is one never started in time; an operation still running after
    `timeout_s` fails. The run ends when every started operation has finished.
    """
    result = LoadResult(scheduled=schedule.arrivals)
    start = clock()
    outstanding = 0
    last_tick = 0.0

    async def one(index: int, due: float) -> None:
        nonlocal outstanding
        try:
            async with asyncio.timeout(timeout_s):
                ok = await operation(index)
        except TimeoutError:
            ok = False
        finally:
            outstanding -= 1
        if ok is False:
            result.failed += 1
        else:
            result.completed += 1
            result.latencies_s.append(clock() - start - due)
            result.indices.append(index)

    async with asyncio.TaskGroup() as group:
        index = 0
        while index < schedule.arrivals:
            now = clock() - start
            if now >= schedule.duration_s:
                break
            due = schedule.due_s(index)
            if due > now:
                await asyncio.sleep(due - now)
                continue
            if outstanding >= max_outstanding:
                result.missed += 1
            else:
                outstanding += 1
                group.create_task(one(index, due))
            index += 1
            if tick is not None and now - last_tick >= 0.25:
                last_tick = now
                tick(now)
        result.missed += schedule.arrivals - index
        result.issue_s = max(clock() - start, schedule.duration_s)
    result.elapsed_s = max(clock() - start, schedule.duration_s)
    return result


def percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]) of `samples`; NaN when there are none."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


async def open_all(
    items: Sequence[T],
    open_one: Callable[[T], Awaitable[None]],
    failures: collections.Counter[str],
    at_once: int,
    deadline_s: float,
) -> tuple[list[T], float]:
    """Open (start, connect, warm) every item, `at_once` at a time, all within `deadline_s`:
    returns the items that opened and the seconds it took. A failure is counted in `failures` by
    exception type ("set-up deadline" for the deadline) and the load runs on the rest."""
    started = time.perf_counter()
    gate = asyncio.Semaphore(at_once)

    async def one(item: T) -> bool:
        async with gate:
            try:
                await asyncio.wait_for(open_one(item), deadline_s - (time.perf_counter() - started))
                return True
            except TimeoutError:
                failures["set-up deadline"] += 1
            except Exception as exc:  # counted; the load runs on the items that opened
                failures[type(exc).__name__] += 1
            return False

    ok = await asyncio.gather(*(one(item) for item in items))
    return [item for item, good in zip(items, ok, strict=True) if good], time.perf_counter() - started


class RequestStream(Protocol):
    """An echo stream a request load writes to: answers are matched to `waiting` in order."""

    waiting: collections.deque[tuple[float, bytes]]
    writer: Any


async def write_requests(
    arrivals: Sequence[float],
    streams: Sequence[RequestStream],
    rng: random.Random,
    start: float,
    duration_s: float,
    payload_bytes: int,
    tick: Callable[[float], None] | None = None,
) -> tuple[int, int]:
    """Open loop: at each arrival (seconds after `start`, perf_counter) a random payload goes to a
    random stream, remembered with its due time in the stream's `waiting`; arrivals falling after
    `duration_s` are missed. Returns (issued, missed)."""
    issued = missed = 0
    last_tick = 0.0
    for due in arrivals:
        now = time.perf_counter() - start
        if now >= duration_s:
            missed += 1
            continue
        if due > now:
            await asyncio.sleep(due - now)
        stream = streams[rng.randrange(len(streams))]
        payload = rng.randbytes(payload_bytes)
        stream.waiting.append((due, payload))
        stream.writer.write(payload)
        issued += 1
        if tick is not None and due - last_tick >= 0.25:
            last_tick = due
            tick(due)
    return issued, missed


async def await_answers(streams: Sequence[RequestStream], readers: Sequence[asyncio.Task[Any]], grace_s: float) -> None:
    """Until every stream's requests are answered, a reader ends (its stream failed: what it
    waits for stays unanswered) or `grace_s` passes."""
    grace_until = time.perf_counter() + grace_s
    while any(s.waiting for s in streams) and time.perf_counter() < grace_until:
        if any(r.done() for r in readers):
            break
        await asyncio.sleep(0.01)
