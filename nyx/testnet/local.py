"""`Testnet`: a whole mixnet on this machine, as real processes over real QUIC on 127.0.0.1.

    async with Testnet(layers=3, gateways=2, allow=["127.0.0.1:8080"]) as net:
        async with net.client() as client:              # a nyx.Client on net.directory_path
            reader, writer = await client.open_connection("echo")

What runs: `layers` x `mixes_per_layer` `python -m nyx.mix` and `gateways` `python -m nyx.stream
gateway` (each gateway both entry and exit), and on request (`start_socks5`) a `python -m
nyx.stream client --socks5`. They run the programs an operator runs, with the configs an
operator would write, so a testnet exercises the same code paths as a deployment: the node
runtime, TOML parsing, key files, the directory file and its refresh, signals and drain.

The working directory holds everything: `directory.json`, and per node `<id>/` (its data dir:
TLS identity, Sphinx keys, replay state, stream keys), `<id>.toml` and `logs/<id>.log` (its
stderr). Keys, configs and the directory are written before anything starts (`layout`), so all
nodes start at once and the testnet is ready as soon as the slowest interpreter is up and one
echo has crossed every layer (`probe`).

Stopping: SIGTERM to every child (a node drains and exits 0), the edges before the core (the
SOCKS client, then the gateways, then the mixes: see `stop`), SIGKILL to any still running after
`drain_timeout_s` + 5 s; `stop()` returns how each ended and `__aexit__` raises `TestnetError`
if one failed (a crash, a signal, a kill: `ChildExit.failed`), since a node that fails only at
shutdown is a bug too.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import shutil
import signal
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from nyx.mix.directory import Directory, DirectoryError, NodeRecord
from nyx.node.__main__ import EXIT_CANNOT_LISTEN
from nyx.stream.client import Client
from nyx.testnet.layout import (
    DIRECTORY_FILE,
    HOST,
    NodePlan,
    Role,
    TestnetOptions,
    free_udp_ports,
    node_names,
    prepare_keys,
    seal_keys,
    write_config,
    write_directory,
)
from nyx.testnet.probe import EchoResult, echo_once, echo_with_retries
from nyx.testnet.processes import ChildExit, ChildProcess, tail

__all__ = ["Testnet", "TestnetError"]

log = logging.getLogger(__name__)

PORT_RETRIES = 3


class TestnetError(RuntimeError):
    """The testnet did not start (the message names the node and quotes its log), its probe
    failed, or a child failed when stopped (`exits` says how each ended)."""

    __test__ = False

    def __init__(self, message: str, exits: Sequence[ChildExit] = ()) -> None:
        super().__init__(message)
        self.exits = list(exits)


class Testnet:
    """Mixes and gateways as child processes on 127.0.0.1; see the module docstring.

    `layers`, `mixes_per_layer`, `gateways`, `allow` (the gateways' TCP allowlist, e.g.
    "127.0.0.1:8080") and `allow_private` replace those of `options` (all other node settings,
    `TestnetOptions`). `workdir`: where everything lives (default: a new temporary directory,
    removed at exit when every child stopped cleanly, kept otherwise so its logs can be read).
    `probe`: make an echo round trip through every exit before `start` returns.
    """

    __test__ = False

    def __init__(
        self,
        layers: int | None = None,
        mixes_per_layer: int | None = None,
        gateways: int | None = None,
        allow: Sequence[str] | None = None,
        *,
        allow_private: bool | None = None,
        options: TestnetOptions | None = None,
        workdir: Path | str | None = None,
        probe: bool = True,
        start_timeout_s: float = 60.0,
        check_exit: bool = True,
    ) -> None:
        given = {"layers": layers, "mixes_per_layer": mixes_per_layer, "gateways": gateways,
                 "allow": tuple(allow) if allow is not None else None, "allow_private": allow_private}
        self.options = dataclasses.replace(options or TestnetOptions(), **{k: v for k, v in given.items() if v is not None})
        self.temporary = workdir is None
        self.workdir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="nyx-testnet-"))
        self.workdir = self.workdir.resolve()
        self.directory_path = self.workdir / DIRECTORY_FILE
        self.logs_dir = self.workdir / "logs"
        self.probe_enabled = probe
        self.start_timeout_s = start_timeout_s
        self.check_exit = check_exit
        self.plans: dict[str, NodePlan] = {}
        self.records: dict[str, NodeRecord] = {}
        self.nodes: dict[str, ChildProcess] = {}
        self.socks5: ChildProcess | None = None
        self.socks5_address: tuple[str, int] | None = None
        self.probe_results: list[EchoResult] = []
        self.startup_s = 0.0
        self._publish_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopped: list[ChildExit] | None = None

    # -- lifecycle ----------------------------------------------------------------------------------

    async def __aenter__(self) -> Testnet:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        exits = await self.stop()
        failed = [e for e in exits if e.failed]
        if not failed and exc is None and self.temporary:
            shutil.rmtree(self.workdir, ignore_errors=True)
        elif self.temporary:
            log.warning("testnet files kept for inspection in %s", self.workdir)
        if failed and self.check_exit and exc is None:
            raise TestnetError("testnet children failed: " + "; ".join(e.describe() for e in failed), exits)

    @property
    def stop_summary(self) -> list[ChildExit]:
        """How each child ended (empty until `stop`)."""
        return list(self._stopped or [])

    @property
    def gateway_ids(self) -> list[str]:
        return [node_id for node_id, plan in self.plans.items() if plan.role == "gateway"]

    @property
    def mix_ids(self) -> list[str]:
        return [node_id for node_id, plan in self.plans.items() if plan.role == "mix"]

    @property
    def directory(self) -> Directory:
        return Directory.of(self.records.values())

    def log_path(self, node_id: str) -> Path:
        return self.logs_dir / f"{node_id}.log"

    async def start(self) -> None:
        """Lay out every node, start them all, wait until each printed its record, then probe.
        TestnetError (and every child stopped) if any of it fails."""
        started = time.perf_counter()
        try:
            await self._lay_out()
            async with asyncio.TaskGroup() as tg:
                for plan in self.plans.values():
                    tg.create_task(self._start_node(plan))
            if self.probe_enabled:
                await self.probe()
        except BaseException as exc:
            await self.stop(quiet=True)  # children stopped mid-start may die of the signal itself
            if isinstance(exc, BaseExceptionGroup):
                failures = [e for e in exc.exceptions if isinstance(e, (TestnetError, RuntimeError, OSError))]
                if failures and len(failures) == len(exc.exceptions):
                    raise TestnetError("\n".join(str(e) for e in failures)) from exc
            raise
        self.startup_s = time.perf_counter() - started
        log.info("testnet up in %.1f s: %d mixes, %d gateways, directory %s", self.startup_s,
                 len(self.mix_ids), len(self.gateway_ids), self.directory_path)

    async def _lay_out(self) -> None:
        """Keys (in threads: key generation is CPU work), ports, configs, the directory."""
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        names = node_names(self.options)
        now = time.time()
        async with asyncio.TaskGroup() as tg:
            prepared = {
                node_id: tg.create_task(asyncio.to_thread(
                    prepare_keys, self.workdir / node_id, node_id, role, self.options, now))
                for node_id, role, _ in names
            }
        for node_id, _, _ in names:
            await seal_keys(self.workdir / node_id, prepared[node_id].result().ring)
        ports = free_udp_ports(len(names))
        for (node_id, role, layer), port in zip(names, ports, strict=True):
            keys = prepared[node_id].result()
            record = NodeRecord(
                node_id, role, layer, HOST, port, keys.fingerprint,
                {epoch: key.public_key for epoch, key in keys.ring.keys.items()}, stream_keys=keys.stream_keys,
            )
            self.plans[node_id] = self._plan(node_id, role, layer, record)
        self.records = {node_id: plan.record for node_id, plan in self.plans.items()}
        await asyncio.to_thread(self._write_all)

    def _plan(self, node_id: str, role: Role, layer: int, record: NodeRecord) -> NodePlan:
        return NodePlan(node_id, role, layer, self.workdir / node_id, self.workdir / f"{node_id}.toml",
                        self.log_path(node_id), record)

    def _write_all(self) -> None:
        for plan in self.plans.values():
            write_config(plan, self.options, self.directory_path)
        write_directory(self.directory_path, list(self.records.values()))

    async def _start_node(self, plan: NodePlan) -> None:
        """Launch one node and wait for its record; a port taken meanwhile (exit 75) gets a new
        port, config and directory entry, and another try."""
        for attempt in range(1, PORT_RETRIES + 1):
            child = ChildProcess(plan.node_id, plan.command(), plan.log_path,
                                 on_line=lambda doc, node_id=plan.node_id: self._on_record(node_id, doc))
            self.nodes[plan.node_id] = child
            await child.launch()
            try:
                printed = await child.wait_ready(self.start_timeout_s)
            except RuntimeError:
                if child.returncode != EXIT_CANNOT_LISTEN or attempt == PORT_RETRIES:
                    raise
                port = free_udp_ports(1)[0]
                log.info("%s: port %d was taken, retrying on %d", plan.node_id, plan.record.port, port)
                plan = dataclasses.replace(plan, record=dataclasses.replace(plan.record, port=port))
                self.plans[plan.node_id] = plan
                self.records[plan.node_id] = plan.record
                await asyncio.to_thread(write_config, plan, self.options, self.directory_path)
                await self._publish()
                continue
            self._check_record(plan, printed)
            return

    def _check_record(self, plan: NodePlan, printed: dict[str, Any]) -> None:
        """The record a node printed must be the one written for it. Only its Sphinx keys may
        differ, by an epoch rotated in between: then the directory takes the printed record."""
        try:
            record = NodeRecord.from_json(printed, plan.node_id)
        except DirectoryError as exc:
            raise RuntimeError(f"{plan.node_id} printed a malformed record: {exc}") from exc
        if record == plan.record:
            return
        expected = plan.record
        common = set(record.sphinx_keys) & set(expected.sphinx_keys)
        same_node = dataclasses.replace(record, sphinx_keys={}) == dataclasses.replace(expected, sphinx_keys={})
        if not same_node or not common or any(record.sphinx_keys[e] != expected.sphinx_keys[e] for e in common):
            raise RuntimeError(
                f"{plan.node_id} printed a record other than the one written for it:\n"
                f"  written {expected.to_json()}\n  printed {record.to_json()}\n"
                f"the end of {plan.log_path}:\n{tail(plan.log_path)}"
            )
        self._adopt(plan.node_id, record)

    def _on_record(self, node_id: str, document: dict[str, Any]) -> None:
        """A node printed a new record (its keys rotated): the directory must list it."""
        try:
            record = NodeRecord.from_json(document, node_id)
        except DirectoryError as exc:
            log.warning("%s printed a malformed record: %s", node_id, exc)
            return
        self._adopt(node_id, record)

    def _adopt(self, node_id: str, record: NodeRecord) -> None:
        self.records[node_id] = record
        task = asyncio.get_running_loop().create_task(self._publish(), name="testnet directory")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _publish(self) -> None:
        """Rewrite the directory file with the current records (serialised: the last wins)."""
        async with self._publish_lock:
            await asyncio.to_thread(write_directory, self.directory_path, list(self.records.values()))

    # -- use ------------------------------------------------------------------------------------------

    def client(self, *, gateway: str | None = None, exit: str | None = None, **options: Any) -> Client:
        """A `nyx.Client` on this testnet's directory, entering at the first gateway and leaving
        at the last (`options` go to `Client`, e.g. `cover=None`)."""
        gateways = self.gateway_ids
        return Client(self.directory_path, gateway=gateway or gateways[0], exit=exit or gateways[-1], **options)

    async def probe(self, attempts: int = 8, timeout_s: float = 15.0, size: int = 1000) -> list[EchoResult]:
        """An echo through every gateway as the exit (entering at another one), each retried
        while links come up; TestnetError if one never succeeds."""
        gateways = self.gateway_ids
        pairs = [(gateways[(i + 1) % len(gateways)], exit) for i, exit in enumerate(gateways)]
        async with asyncio.TaskGroup() as tg:
            checks = [
                tg.create_task(echo_with_retries(
                    lambda entry=entry, exit=exit: echo_once(self.directory_path, entry, exit, size, timeout_s,
                                                             cover=None),
                    attempts))
                for entry, exit in pairs
            ]
        self.probe_results = [check.result() for check in checks]
        failed = [r for r in self.probe_results if not r.ok]
        if failed:
            raise TestnetError("the testnet carries no traffic: " + "; ".join(r.line() for r in failed)
                               + f" (node logs in {self.logs_dir})")
        return self.probe_results

    async def start_socks5(self, address: str = f"{HOST}:0", *, gateway: str | None = None, exit: str | None = None,
                           cover_rate: float | None = None, cover: bool = True) -> tuple[str, int]:
        """Start `python -m nyx.stream client --socks5 address` on this testnet's directory;
        returns where it listens (port 0 in `address`: a free one). It stops with the testnet."""
        if self.socks5 is not None:
            raise RuntimeError("this testnet already runs a SOCKS5 client")
        args = ["nyx.stream", "client", "--directory", str(self.directory_path), "--socks5", address]
        for flag, value in (("--gateway", gateway), ("--exit", exit)):
            if value is not None:
                args += [flag, value]
        if not cover:
            args.append("--no-cover")
        elif cover_rate is not None:
            args += ["--cover-rate", str(cover_rate)]
        self.socks5 = child = ChildProcess("socks5-client", args, self.log_path("socks5-client"))
        await child.launch()
        try:
            printed = await child.wait_ready(self.start_timeout_s)
            host, _, port = str(printed["socks5"]).rpartition(":")
            self.socks5_address = (host, int(port))
        except (RuntimeError, KeyError, ValueError):
            await child.stop(2.0)
            self.socks5 = None
            raise
        return self.socks5_address

    async def wait_for_exit(self) -> ChildExit:
        """Until a child ends on its own (a crash, most likely): which one and how."""
        children = [c for c in (*self.nodes.values(), self.socks5) if c is not None]
        waits = {asyncio.ensure_future(c.wait()): c for c in children}
        try:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
        child = waits[next(iter(done))]
        return ChildExit(child.name, child.returncode)

    async def stop(self, *, quiet: bool = False) -> list[ChildExit]:
        """SIGTERM every child, SIGKILL those still running after the drain timeout; how each
        ended (each bad end is logged as a warning with its log's tail, unless `quiet`).
        Idempotent.

        The edges stop first, the core last: the SOCKS client, then every gateway at once, then
        every mix at once. A gateway drains by finishing its exit sessions' replies (sent on
        SURBs, through the mixes) and its entry's queue (to the mixes), so the mixes must still
        be there; a mix drains by flushing its delay queue, which holds nothing once no gateway
        feeds it (loop cover stops at the start of a drain). Stopping everything at once makes
        nodes drain into peers already gone, which the nodes report as unclean exits."""
        if self._stopped is not None:
            return self._stopped
        timeout = self.options.drain_timeout_s + 5.0
        exits: list[ChildExit] = []
        try:
            if self.socks5 is not None:
                exits.append(await self.socks5.stop(timeout))
            for role in ("gateway", "mix"):
                async with asyncio.TaskGroup() as tg:
                    stops = [tg.create_task(child.stop(timeout)) for node_id, child in self.nodes.items()
                             if self.plans[node_id].role == role]
                exits += [s.result() for s in stops]
            for task in list(self._tasks):
                with contextlib.suppress(Exception):
                    await task
        finally:
            for child in (*self.nodes.values(), self.socks5):  # cancelled mid-way: leave no orphan
                if child is not None:
                    child.signal(signal.SIGKILL)
        self._stopped = exits
        for child_exit in exits:
            if child_exit.failed and not quiet:
                log_path = self.log_path(child_exit.name)
                log.warning("%s; the end of %s:\n%s", child_exit.describe(), log_path, tail(log_path))
            elif not child_exit.ok and not quiet:
                log.info("%s", child_exit.describe())
        return exits
