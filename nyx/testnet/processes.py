"""The testnet's child processes: launched with asyncio, watched through their stdout, stopped
with SIGTERM and, when they do not stop in time, SIGKILL.

Every node program prints its directory record as one JSON line on stdout once it listens (and
again when its keys rotate); the SOCKS client prints `{"socks5": ...}`. So stdout is the one
channel a child reports on, and a child's first JSON line is its "ready". Its stderr (the logs)
goes to a file, so that nothing fills a pipe nobody reads, and a failure can quote its tail.

Each child has its own process group: a Ctrl-C in the terminal reaches only the testnet, which
then stops its children with SIGTERM, so they drain and exit 0 instead of dying mid-packet.

Children run this very checkout of nyx: `PYTHONPATH` is set to the directory that holds the
imported `nyx` package, ahead of anything installed (a stale installed copy would otherwise run).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nyx
from nyx.node.runtime import EXIT_DRAIN_INCOMPLETE, EXIT_OK

__all__ = ["ChildExit", "ChildProcess", "child_env", "tail"]

log = logging.getLogger(__name__)

CODE_ROOT = Path(nyx.__file__).resolve().parent.parent


def child_env() -> dict[str, str]:
    """The environment of every child: ours, with this nyx first on the path and unbuffered
    output (a record line must arrive when it is printed, not when a buffer fills)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(CODE_ROOT), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def tail(path: Path, lines: int = 15) -> str:
    """The last `lines` lines of a log file ("" if there is none yet)."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


@dataclass(frozen=True, slots=True)
class ChildExit:
    """How one child ended: its exit code (negative: the signal that ended it), and whether it
    had to be killed because SIGTERM did not stop it in time.

    `ok`: exit 0. `failed`: anything worse than a drain that ran out of time (exit 3,
    `EXIT_DRAIN_INCOMPLETE`). A node whose last packets were queued for a peer that had already
    stopped exits 3 when its drain deadline passes: when a whole network stops, some node is
    always the last to have sent to another, so that is reported, not counted as a failure. A
    crash (70), a signal, a kill after the timeout, or a node that never started is a failure.
    """

    name: str
    returncode: int | None
    killed: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.killed

    @property
    def failed(self) -> bool:
        return self.killed or self.returncode not in (EXIT_OK, EXIT_DRAIN_INCOMPLETE)

    def describe(self) -> str:
        if self.killed:
            return f"{self.name}: killed after the drain timeout"
        if self.returncode is None:
            return f"{self.name}: never started"
        if self.returncode == EXIT_DRAIN_INCOMPLETE:
            return f"{self.name}: exit code 3 (drain incomplete: packets still queued for peers already stopped)"
        if self.returncode < 0:
            return f"{self.name}: ended by signal {-self.returncode}"
        return f"{self.name}: exit code {self.returncode}"


class ChildProcess:
    """One child (`python -m <args>`), its stdout lines parsed as JSON and its stderr in `log_path`.

    `on_line` gets every JSON object the child prints after the first (a rotated record); the
    first is `first_line`, which `wait_ready` waits for.
    """

    def __init__(self, name: str, module_args: Sequence[str], log_path: Path,
                 on_line: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.name = name
        self.args = [sys.executable, "-m", *module_args]
        self.log_path = log_path
        self.on_line = on_line
        self.process: asyncio.subprocess.Process | None = None
        self.first_line: asyncio.Future[dict[str, Any]] | None = None
        self._reader: asyncio.Task[None] | None = None

    async def launch(self) -> None:
        self.first_line = asyncio.get_running_loop().create_future()
        with self.log_path.open("ab") as stderr:  # the child holds its own descriptor
            self.process = await asyncio.create_subprocess_exec(
                *self.args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=stderr,
                env=child_env(), cwd=str(CODE_ROOT), process_group=0, limit=1 << 20,
            )
        self._reader = asyncio.create_task(self._read(self.process), name=f"testnet stdout {self.name}")

    async def _read(self, process: asyncio.subprocess.Process) -> None:
        """Read stdout to its end: a child whose pipe fills would block on its next print."""
        assert process.stdout is not None and self.first_line is not None
        while line := await process.stdout.readline():
            try:
                document = json.loads(line)
            except ValueError:
                continue
            if not isinstance(document, dict):
                continue
            if not self.first_line.done():
                self.first_line.set_result(document)
            elif self.on_line is not None:
                try:
                    self.on_line(document)
                except Exception:  # a bad line must not end the reading (the pipe would fill)
                    log.exception("%s: printed line not handled", self.name)

    async def wait_ready(self, timeout_s: float) -> dict[str, Any]:
        """The child's first JSON line; RuntimeError naming the child and quoting its log if it
        exits first or prints nothing in `timeout_s`."""
        assert self.process is not None and self.first_line is not None
        exited = asyncio.create_task(self.process.wait())
        try:
            done, _ = await asyncio.wait([self.first_line, exited], timeout=timeout_s,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            exited.cancel()
        if self.first_line.done():
            return self.first_line.result()
        why = (f"exited with code {self.process.returncode} before it was ready" if exited in done
               else f"printed no ready line in {timeout_s:g} s")
        raise RuntimeError(f"{self.name} {why}; the end of {self.log_path}:\n{tail(self.log_path)}")

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.returncode

    async def wait(self) -> int:
        assert self.process is not None
        return await self.process.wait()

    def signal(self, signum: signal.Signals) -> None:
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signum)

    async def stop(self, timeout_s: float) -> ChildExit:
        """SIGTERM (a node drains and exits 0), then SIGKILL after `timeout_s`."""
        if self.process is None:
            return ChildExit(self.name, None)
        self.signal(signal.SIGTERM)
        killed = False
        try:
            await asyncio.wait_for(asyncio.shield(self.process.wait()), timeout_s)
        except TimeoutError:
            killed = True
            self.signal(signal.SIGKILL)
            await self.process.wait()
        if self._reader is not None:
            with contextlib.suppress(Exception):  # stdout is at EOF once the process is gone
                await asyncio.wait_for(self._reader, 2.0)
            self._reader.cancel()
        return ChildExit(self.name, self.process.returncode, killed)
