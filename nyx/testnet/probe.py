"""Echo checks: a `nyx.Client` opens an "echo" stream and gets its bytes back, byte-exact.

A node that printed its record listens, but that does not prove the network carries traffic:
QUIC links between nodes come up on first use, a directory could list a wrong key, an exit could
refuse the handshake. A round trip through every layer is the one check that covers it all, so
the testnet makes one before it says "ready", and the program's self-check is N of them.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nyx.mix.directory import Directory
from nyx.stream.client import Client

__all__ = ["EchoResult", "echo_once", "echo_with_retries", "socks5_connect_reply"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EchoResult:
    """One echo check: which path, how many bytes, how long, and what went wrong if anything."""

    entry: str
    exit: str
    size: int
    seconds: float
    error: str | None = None
    attempts: int = 1

    @property
    def ok(self) -> bool:
        return self.error is None

    def line(self) -> str:
        status = "ok" if self.ok else f"FAILED: {self.error}"
        tries = f" (attempt {self.attempts})" if self.attempts > 1 else ""
        return f"{self.entry} -> {self.exit}: {self.size} bytes echoed in {self.seconds:.2f} s{tries}: {status}"


async def echo_once(directory: Directory | Path | Callable[..., Client], entry: str, exit: str, size: int,
                    timeout_s: float, **client_options: Any) -> EchoResult:
    """Open a `Client` (entry `entry`, exit `exit`, `client_options` such as `cover=None` or a
    transport factory), echo `size` random bytes, compare, close. Never raises for a failure of
    the network: the result says what failed. `directory`: the client's directory, or a function
    that makes the client (`gateway=`, `exit=` and `client_options` as keywords), such as
    `Testnet.client` (on a directory service, it follows the verified document)."""
    payload = os.urandom(size)
    started = time.perf_counter()
    error: str | None = None
    make = directory if callable(directory) else functools.partial(Client, directory)
    try:
        async with asyncio.timeout(timeout_s):
            async with make(gateway=entry, exit=exit, **client_options) as client:
                reader, writer = await client.open_connection("echo")
                writer.write(payload)
                await writer.drain()
                writer.write_eof()
                echoed = await reader.readexactly(size)
                if echoed != payload:
                    error = "the echoed bytes differ from the sent ones"
                writer.close()
    except TimeoutError:
        error = f"no echo within {timeout_s:g} s"
    except (ConnectionError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
        error = f"{type(exc).__name__}: {exc}"
    return EchoResult(entry, exit, size, time.perf_counter() - started, error)


async def echo_with_retries(make: Callable[[], Awaitable[EchoResult]], attempts: int, pause_s: float = 0.5) -> EchoResult:
    """Run `make()` (an `echo_once` coroutine) until it succeeds, at most `attempts` times: the
    first packets of a fresh network may find links still coming up."""
    result: EchoResult | None = None
    for attempt in range(1, attempts + 1):
        result = await make()
        if result.ok:
            break
        log.info("echo %s -> %s, attempt %d: %s", result.entry, result.exit, attempt, result.error)
        if attempt < attempts:
            await asyncio.sleep(pause_s)
    assert result is not None
    return EchoResult(result.entry, result.exit, result.size, result.seconds, result.error, attempt)


async def socks5_connect_reply(socks_host: str, socks_port: int, host: str, port: int, timeout_s: float = 30.0) -> int:
    """The REP byte a SOCKS5 front answers a CONNECT to `host:port` with (0 success, 2 "not
    allowed by ruleset", ...), from a raw handshake: what a SOCKS program sees, without one."""
    async with asyncio.timeout(timeout_s):
        reader, writer = await asyncio.open_connection(socks_host, socks_port)
        try:
            writer.write(b"\x05\x01\x00")  # version 5, one method: no authentication
            if await reader.readexactly(2) != b"\x05\x00":
                raise ConnectionError("the SOCKS5 front refused the no-authentication method")
            name = host.encode("idna")
            writer.write(b"\x05\x01\x00\x03" + bytes((len(name),)) + name + port.to_bytes(2, "big"))
            version, reply = await reader.readexactly(2)
            if version != 5:
                raise ConnectionError(f"not a SOCKS5 reply (version {version})")
            return reply
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass
