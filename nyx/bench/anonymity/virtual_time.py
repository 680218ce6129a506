"""Run asyncio code on a virtual clock: the loop's time jumps to the next timer instead of
waiting for it.

The anonymity bench runs the real node classes (`MixNode`, `CoverEmitter`, `SimNetwork`), which
schedule everything with `loop.time()`, `loop.call_at` and `asyncio.sleep`. On the real clock a
minute of mixing takes a minute; here it takes as long as the work in it (the Sphinx hops), and
the times every node and the adversary see are exact and independent of how busy the machine
is: two runs with one seed see the same times.

Only public asyncio surface is used: `SelectorEventLoop` accepts a selector, and `time()` is a
method a loop subclass may override. The selector never blocks: when the loop would wait
`timeout` seconds for I/O, the clock moves on by `timeout`. A loop that would wait for ever
(no timer, nothing ready) is a deadlock in a simulation: `VirtualClockError`.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class VirtualClockError(RuntimeError):
    """The simulated network has nothing left to do and no timer: it would wait for ever."""


class _JumpingSelector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
    """Polls without blocking and advances the owner's clock by the time it would have slept."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = super().select(0)
        if ready:
            return ready
        if timeout is None:
            raise VirtualClockError("the virtual-clock loop has no timer and nothing ready: deadlock")
        if timeout > 0:
            self.now += timeout
        return []


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """An event loop whose `time()` starts at `start_s` and advances only to the next due timer."""

    def __init__(self, start_s: float = 0.0) -> None:
        self._jumping = _JumpingSelector()
        self._jumping.now = start_s
        super().__init__(self._jumping)

    def time(self) -> float:
        return self._jumping.now


def run_virtual(main: Coroutine[Any, Any, T], start_s: float = 0.0) -> T:
    """`asyncio.run(main)` on a `VirtualClockLoop`: returns main's result, closes the loop."""
    loop = VirtualClockLoop(start_s)
    try:
        return loop.run_until_complete(main)
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()
