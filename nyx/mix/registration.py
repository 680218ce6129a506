"""A node's link to the directory service, as `python -m nyx.mix` and the gateway program run it.

Both programs take the same keys in their table (`[mix]`, `[gateway]`) and the same flags:

    directory_url = ["https://dir-1.example:43250", "https://mirror.example"]   # or one string
    directory_authorities = ["<64 hex digits>", ...]   # Ed25519 keys that sign documents
    directory_threshold = 1                            # signatures a document needs (k of n)
    directory_heartbeat_s = 3.3                        # at most the service's --heartbeat-s

    --directory-url URL (repeatable) --authority HEX (repeatable) --threshold K

The keys are named `directory_*` because a node table holds other thresholds and intervals.
A URL without authority keys is refused: a node must not follow documents it cannot verify. A
directory file (`directory`) and a URL together are refused too: one source of peers, so that
nobody wonders which one a node followed (the file stays for tests and offline runs).

`DirectoryLink` is the asyncio shell around `nyx.directory.agent.NodeAgent`: it runs the agent in
the node's task group (register, heartbeat, register again when the record changes, adopt each
newer verified document) and, on SIGTERM, `leave()` stops the agent and posts a drain so that
the node is gone from the next document at once instead of after the missed heartbeats. A
directory that is down is retried by the agent, never fatal: nodes must outlive a directory
restart, and a node started before its directory must come up all the same.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from nyx.directory.agent import DirectoryClient, NodeAgent
from nyx.directory.document import TrustPolicy
from nyx.directory.records import Directory, DirectoryError, NodeRecord
from nyx.node.config import ConfigError
from nyx.transport.certs import NodeIdentity

log = logging.getLogger(__name__)

LINK_KEYS = frozenset({"directory_url", "directory_authorities", "directory_threshold", "directory_heartbeat_s",
                       "directory_linger_s"})
"""The keys of a node table that configure the link (add them to the table's known keys)."""

DEFAULT_HEARTBEAT_S = 10.0 / 3  # a third of the service's default 10 s: 9 chances per 30 s window
DRAIN_POST_S = 2.0  # at most this long for the drain statement; the heartbeat timeout is the fallback


@dataclass(frozen=True, slots=True)
class LinkSettings:
    """Where the directory is and which documents to believe."""

    urls: tuple[str, ...]
    authorities: frozenset[bytes]
    threshold: int = 1
    heartbeat_s: float = DEFAULT_HEARTBEAT_S
    refresh_s: float = 5.0
    # After the drain is posted, keep forwarding this long before the node stops accepting: the
    # time clients need to adopt the document without this node (their refresh interval) so
    # that they move their routes off it before it stops (a rolling restart loses nothing then).
    linger_s: float = 0.0

    @property
    def policy(self) -> TrustPolicy:
        return TrustPolicy(self.authorities, self.threshold)


def add_link_arguments(parser: argparse.ArgumentParser, table: str) -> None:
    """The three flags (they replace the table's values when given)."""
    parser.add_argument("--directory-url", action="append", metavar="URL",
                        help=f"directory service or mirror (repeatable; overrides {table}.directory_url)")
    parser.add_argument("--authority", action="append", metavar="HEX",
                        help=f"trusted directory authority key (repeatable; overrides {table}.directory_authorities)")
    parser.add_argument("--threshold", type=int, help=f"signatures a document needs (overrides {table}.directory_threshold)")


def with_link_flags(table: Mapping[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """`table` with the command line's link flags on top."""
    merged = dict(table)
    for flag, key in (("directory_url", "directory_url"), ("authority", "directory_authorities"),
                      ("threshold", "directory_threshold")):
        value = getattr(args, flag, None)
        if value is not None:
            merged[key] = value
    return merged


def link_settings(table: Mapping[str, Any], where: str, refresh_s: float) -> LinkSettings | None:
    """The validated link keys of `table` (named `where`, e.g. "mix"), or None without a URL.
    Raises ConfigError naming the key."""
    urls = table.get("directory_url")
    if urls is None:
        for key in ("directory_authorities", "directory_threshold", "directory_heartbeat_s", "directory_linger_s"):
            if key in table:
                raise ConfigError(f"{where}.{key}: only with {where}.directory_url (--directory-url)")
        return None
    if isinstance(urls, str):
        urls = [urls]
    if (not isinstance(urls, list) or not urls
            or not all(isinstance(u, str) and u.startswith(("http://", "https://")) for u in urls)):
        raise ConfigError(f"{where}.directory_url: expected an http(s) URL or a list of them, got {urls!r}")
    if table.get("directory") is not None:
        raise ConfigError(f"{where}.directory_url: give a directory file or a directory URL, not both")
    keys = table.get("directory_authorities")
    if not keys:
        raise ConfigError(
            f"{where}.directory_authorities: needed with {where}.directory_url (--authority HEX: the key"
            " `python -m nyx.directory serve` prints); documents nobody can verify are never followed"
        )
    if not isinstance(keys, list):
        raise ConfigError(f"{where}.directory_authorities: expected a list of hex keys, got {keys!r}")
    authorities = frozenset(_authority_key(key, where) for key in keys)
    threshold = table.get("directory_threshold", 1)
    if isinstance(threshold, bool) or not isinstance(threshold, int) or not 1 <= threshold <= len(authorities):
        raise ConfigError(
            f"{where}.directory_threshold: 1 to {len(authorities)} (the distinct authority keys given), got {threshold!r}"
        )
    heartbeat_s = table.get("directory_heartbeat_s", DEFAULT_HEARTBEAT_S)
    if isinstance(heartbeat_s, bool) or not isinstance(heartbeat_s, (int, float)) or not heartbeat_s > 0:
        raise ConfigError(f"{where}.directory_heartbeat_s: a number > 0, got {heartbeat_s!r}")
    linger_s = table.get("directory_linger_s", 0.0)
    if isinstance(linger_s, bool) or not isinstance(linger_s, (int, float)) or not linger_s >= 0:
        raise ConfigError(f"{where}.directory_linger_s: a number >= 0, got {linger_s!r}")
    return LinkSettings(tuple(u.rstrip("/") for u in urls), authorities, threshold, float(heartbeat_s), refresh_s,
                        float(linger_s))


def _authority_key(value: object, where: str) -> bytes:
    try:
        key = bytes.fromhex(value) if isinstance(value, str) else b""
    except ValueError:
        key = b""
    if len(key) != 32:
        raise ConfigError(f"{where}.directory_authorities: {value!r} is not 64 hex digits (an Ed25519 public key)")
    return key


class DirectoryLink:
    """The agent task of one node: `run()` in the node's task group, `leave()` as a drain hook."""

    def __init__(
        self,
        settings: LinkSettings,
        identity: NodeIdentity | None,
        record: Callable[[], NodeRecord],
        on_directory: Callable[[Directory], None],
        drain_post_s: float = DRAIN_POST_S,
    ) -> None:
        if identity is None:
            raise DirectoryError("the directory service needs the node's TLS identity (a QUIC transport)")
        self.settings = settings
        self.identity = identity
        self.record = record
        self.on_directory = on_directory
        self.drain_post_s = drain_post_s
        self.agent: NodeAgent | None = None
        self._leaving = asyncio.Event()
        self._running = False
        self._done = asyncio.Event()

    async def run(self) -> None:
        """Register, heartbeat and follow documents until `leave()` (then post the drain) or
        cancellation (SIGINT: no drain; the node leaves after its missed heartbeats)."""
        if self._leaving.is_set():
            return
        self._running = True
        try:
            async with DirectoryClient(self.settings.urls, self.settings.policy) as client:
                agent = self.agent = NodeAgent(
                    client, self.identity, self.record, self.on_directory,
                    heartbeat_interval_s=self.settings.heartbeat_s, refresh_s=self.settings.refresh_s,
                )
                log.info("directory: registering with %s (%d of %d authority keys)", ", ".join(self.settings.urls),
                         self.settings.threshold, len(self.settings.authorities))
                async with asyncio.TaskGroup() as tg:
                    follow = tg.create_task(agent.run(), name="directory-agent")
                    await self._leaving.wait()
                    follow.cancel()  # before the drain: a later heartbeat would bring the node back
                await self._post_drain(agent)
        finally:
            self._done.set()

    async def _post_drain(self, agent: NodeAgent) -> None:
        try:
            async with asyncio.timeout(self.drain_post_s):
                await agent.drain()
        except (DirectoryError, TimeoutError) as exc:
            log.warning("directory: drain not posted (%s); the node leaves the document once its heartbeats"
                        " are missed", exc or "timed out")
        else:
            log.info("directory: drain posted; the next document leaves this node out")

    async def leave(self) -> None:
        """Stop heartbeating and tell the directory this node is draining (bounded: `drain_post_s`),
        then linger `linger_s` (still forwarding) so that clients move off before it stops."""
        self._leaving.set()
        if self._running:
            await self._done.wait()
        if self.settings.linger_s > 0:
            log.info("directory: lingering %.1f s so that clients move their routes off this node", self.settings.linger_s)
            await asyncio.sleep(self.settings.linger_s)
