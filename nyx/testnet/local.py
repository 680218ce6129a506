"""`Testnet`: a whole mixnet on this machine, as real processes over real QUIC on 127.0.0.1.

    async with Testnet(layers=3, gateways=2, allow=["127.0.0.1:8080"]) as net:
        async with net.client() as client:              # a nyx.Client on net.directory_path
            reader, writer = await client.open_connection("echo")

    async with Testnet(directory_service=True) as net:  # nodes register with a directory service
        async with net.client() as client:              # a nyx.Client on its verified document
            ...

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

With `directory_service=True` there is no directory file: a `python -m nyx.directory serve`
process starts with the nodes (one authority; its key, made here like the nodes' keys, and its
SQLite store in `directory/`; heartbeats every 2 s, a document at least every 30 s; its stderr in
`logs/directory.log`), the configs name its URL and key (`directory_url`,
`directory_authorities`) and every node registers there and follows the signed document. The testnet is ready once the document it verifies itself
lists every node's record (and the nodes had one refresh interval to fetch it); its clients
(`client()`, the probe, the SOCKS client) start on that document and follow newer ones.

Stopping: SIGTERM to every child (a node drains and exits 0), the edges before the core (the
SOCKS client, then the gateways, then the mixes, then the directory service: see `stop`), SIGKILL to any still running after
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

from nyx.directory.agent import DirectoryClient
from nyx.directory.authority import public_bytes
from nyx.directory.document import TrustPolicy
from nyx.directory.keys import load_or_create_authority_key
from nyx.mix.directory import Directory, DirectoryError, NodeRecord
from nyx.node.__main__ import EXIT_CANNOT_LISTEN
from nyx.stream.client import Client
from nyx.testnet.layout import (
    DIRECTORY_FILE,
    HOST,
    DirectoryEndpoint,
    NodePlan,
    Role,
    TestnetOptions,
    free_tcp_port,
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
# The directory service's settings (`python -m nyx.directory serve`): nodes heartbeat a third of
# this (they adopt what the service announces), so a stopped node leaves the document within
# 6 s; a document at least every 30 s (and at once when the set of nodes changes).
DIRECTORY_HEARTBEAT_S = 2.0
DIRECTORY_PERIOD_S = 30.0
DIRECTORY_NAME = "directory"  # its log: logs/directory.log


class TestnetError(RuntimeError):
    """The testnet did not start (the message names the node and quotes its log), its probe
    failed, or a child failed when stopped (`exits` says how each ended)."""

    __test__ = False

    def __init__(self, message: str, exits: Sequence[ChildExit] = ()) -> None:
        super().__init__(message)
        self.exits = list(exits)


class _ServiceClient(Client):
    """A `Client` that follows a directory service through a `DirectoryClient` of its own:
    opened when the client starts, closed after it (each client needs its own: a shared one
    answers "not modified" to the second client that asks for a document the first one got)."""

    async def start(self) -> None:
        assert self.directory_service is not None
        await self.directory_service.__aenter__()
        try:
            await super().start()
        except BaseException:
            await self.directory_service.__aexit__(None, None, None)
            raise

    async def close(self) -> None:
        try:
            await super().close()
        finally:
            if self.directory_service is not None:
                await self.directory_service.__aexit__(None, None, None)


class Testnet:
    """Mixes and gateways as child processes on 127.0.0.1; see the module docstring.

    `layers`, `mixes_per_layer`, `gateways`, `allow` (the gateways' TCP allowlist, e.g.
    "127.0.0.1:8080") and `allow_private` replace those of `options` (all other node settings,
    `TestnetOptions`). `workdir`: where everything lives (default: a new temporary directory,
    removed at exit when every child stopped cleanly, kept otherwise so its logs can be read).
    `probe`: make an echo round trip through every exit before `start` returns.
    `directory_service`: run a `python -m nyx.directory serve` process and have every node
    register with it, instead of writing `directory.json` (then `directory_path` is None and
    `directory_url`, `directory_authority` say where the service is and which key signs).
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
        directory_service: bool = False,
    ) -> None:
        given = {"layers": layers, "mixes_per_layer": mixes_per_layer, "gateways": gateways,
                 "allow": tuple(allow) if allow is not None else None, "allow_private": allow_private}
        self.options = dataclasses.replace(options or TestnetOptions(), **{k: v for k, v in given.items() if v is not None})
        self.temporary = workdir is None
        self.workdir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="nyx-testnet-"))
        self.workdir = self.workdir.resolve()
        self.directory_service = directory_service
        self.directory_path: Path | None = None if directory_service else self.workdir / DIRECTORY_FILE
        self.directory_endpoint: DirectoryEndpoint | None = None
        self.directory_process: ChildProcess | None = None
        self._directory_client: DirectoryClient | None = None  # the testnet's own view of the document
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
        """The nodes' records: with a directory service, those of the latest verified document."""
        if self._directory_client is not None and self._directory_client.holder.current is not None:
            return self._directory_client.holder.current.directory()
        return Directory.of(self.records.values())

    @property
    def directory_url(self) -> str | None:
        return None if self.directory_endpoint is None else self.directory_endpoint.url

    @property
    def directory_authority(self) -> str | None:
        """The hex Ed25519 key the directory service signs documents with."""
        return None if self.directory_endpoint is None else self.directory_endpoint.authority

    def log_path(self, node_id: str) -> Path:
        return self.logs_dir / f"{node_id}.log"

    async def start(self) -> None:
        """Lay out every node, start them all, wait until each printed its record, then probe.
        TestnetError (and every child stopped) if any of it fails."""
        started = time.perf_counter()
        try:
            self.logs_dir.mkdir(parents=True, exist_ok=True)
            if self.directory_service:
                await self._launch_directory()  # its interpreter starts while the nodes' keys are made
            await self._lay_out()
            async with asyncio.TaskGroup() as tg:
                if self.directory_service:
                    tg.create_task(self._directory_ready())
                for plan in self.plans.values():
                    tg.create_task(self._start_node(plan))
            if self.directory_service:
                await self._wait_for_document()
            if self.probe_enabled:
                await self.probe()
        except BaseException as exc:
            await self.stop(quiet=True)  # children stopped mid-start may die of the signal itself
            if isinstance(exc, BaseExceptionGroup):
                failures = [e for e in exc.exceptions if isinstance(e, (TestnetError, RuntimeError, OSError))]
                if failures and len(failures) == len(exc.exceptions):
                    raise TestnetError("\n".join(str(e) for e in failures)) from exc
            elif isinstance(exc, (RuntimeError, OSError)) and not isinstance(exc, TestnetError):
                raise TestnetError(str(exc)) from exc  # the directory service did not start
            raise
        self.startup_s = time.perf_counter() - started
        log.info("testnet up in %.1f s: %d mixes, %d gateways, directory %s", self.startup_s,
                 len(self.mix_ids), len(self.gateway_ids), self.directory_url or self.directory_path)

    async def _launch_directory(self) -> None:
        """Start the directory service on an address and authority key made here, as the nodes'
        keys are (`layout`): the configs can name both before it is up, and the nodes start
        alongside it (each retries its registration until the service answers)."""
        data_dir = self.workdir / DIRECTORY_NAME
        key = await asyncio.to_thread(load_or_create_authority_key, data_dir)
        port = free_tcp_port()
        self.directory_endpoint = DirectoryEndpoint(f"http://{HOST}:{port}",
                                                    public_bytes(key.public_key()).hex(), DIRECTORY_HEARTBEAT_S)
        self.directory_process = ChildProcess(
            DIRECTORY_NAME,
            ["nyx.directory", "serve", "--data-dir", str(data_dir), "--listen", f"{HOST}:{port}",
             "--heartbeat-s", f"{DIRECTORY_HEARTBEAT_S:g}", "--period-s", f"{DIRECTORY_PERIOD_S:g}"],
            self.log_path(DIRECTORY_NAME),
        )
        await self.directory_process.launch()

    async def _directory_ready(self) -> None:
        """Until the service announces itself (at the address and with the key it was given),
        then the testnet's own `DirectoryClient` on it."""
        assert self.directory_process is not None and self.directory_endpoint is not None
        endpoint = self.directory_endpoint
        try:
            printed = await self.directory_process.wait_ready(self.start_timeout_s)
        except RuntimeError as exc:
            if self.directory_process.returncode == EXIT_CANNOT_LISTEN:
                raise RuntimeError(f"the directory service could not listen on {endpoint.url} (another program "
                                   f"took the port since it was drawn): start the testnet again\n{exc}") from exc
            raise
        if (printed.get("url"), printed.get("authority")) != (endpoint.url, endpoint.authority):
            raise RuntimeError(f"the directory service announced {printed!r}, not {endpoint.url} with authority "
                               f"{endpoint.authority}")
        key = bytes.fromhex(endpoint.authority)
        self._directory_client = client = DirectoryClient([endpoint.url], TrustPolicy(frozenset({key}), 1))
        await client.__aenter__()

    async def _wait_for_document(self, poll_s: float = 0.2) -> None:
        """Until a document verified against the authority's key lists every node's record (a
        node registers once it listens; the service issues a document at most once a second),
        then one refresh interval more, for every node to fetch it too."""
        assert self._directory_client is not None
        client = self._directory_client
        deadline = time.monotonic() + self.start_timeout_s
        problem = "no document yet"
        while True:
            try:
                await client.refresh()
            except DirectoryError as exc:
                problem = str(exc)
            body = client.holder.current
            if body is not None:
                listed = body.directory().nodes
                missing = sorted(n for n, record in self.records.items() if listed.get(n) != record)
                if not missing:
                    break
                problem = f"epoch {body.epoch} lacks (or lists another record for) {', '.join(missing)}"
            if time.monotonic() > deadline:
                raise TestnetError(
                    f"the directory service at {self.directory_url} did not list every node in "
                    f"{self.start_timeout_s:g} s: {problem}; the end of {self.log_path(DIRECTORY_NAME)}:\n"
                    f"{tail(self.log_path(DIRECTORY_NAME))}"
                )
            await asyncio.sleep(poll_s)
        log.info("directory epoch %d lists all %d nodes", body.epoch, len(self.records))
        await asyncio.sleep(self.options.directory_refresh_s + poll_s)

    async def _lay_out(self) -> None:
        """Keys (in threads: key generation is CPU work), ports, configs, the directory file (or,
        with a directory service, its address and key in the configs)."""
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

    def _source(self) -> Path | DirectoryEndpoint:
        """What the configs name as the nodes' directory: the file, or the service."""
        if self.directory_path is not None:
            return self.directory_path
        assert self.directory_endpoint is not None, "the directory service announces itself first"
        return self.directory_endpoint

    def _write_all(self) -> None:
        for plan in self.plans.values():
            write_config(plan, self.options, self._source())
        if self.directory_path is not None:
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
                await asyncio.to_thread(write_config, plan, self.options, self._source())
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
        """Rewrite the directory file with the current records (serialised: the last wins). With
        a directory service, nothing: each node registers its own new record there."""
        if self.directory_path is None:
            return
        async with self._publish_lock:
            await asyncio.to_thread(write_directory, self.directory_path, list(self.records.values()))

    # -- use ------------------------------------------------------------------------------------------

    def client(self, *, gateway: str | None = None, exit: str | None = None, **options: Any) -> Client:
        """A `nyx.Client` on this testnet's directory, entering at the first gateway and leaving
        at the last (`options` go to `Client`, e.g. `cover=None`). With a directory service: on
        the latest verified document, following newer ones every `directory_refresh_s` of the
        options (through a `DirectoryClient` of its own, closed with the client)."""
        gateways = self.gateway_ids
        gateway, exit = gateway or gateways[0], exit or gateways[-1]
        if self.directory_path is not None:
            return Client(self.directory_path, gateway=gateway, exit=exit, **options)
        assert self._directory_client is not None and self.directory_endpoint is not None, "start the testnet first"
        service = DirectoryClient([self.directory_endpoint.url], self._directory_client.holder.policy)
        options.setdefault("directory_refresh_s", self.options.directory_refresh_s)
        return _ServiceClient(self.directory, gateway=gateway, exit=exit, directory_service=service, **options)

    async def probe(self, attempts: int = 8, timeout_s: float = 15.0, size: int = 1000) -> list[EchoResult]:
        """An echo through every gateway as the exit (entering at another one), each retried
        while links come up; TestnetError if one never succeeds."""
        gateways = self.gateway_ids
        pairs = [(gateways[(i + 1) % len(gateways)], exit) for i, exit in enumerate(gateways)]
        async with asyncio.TaskGroup() as tg:
            checks = [
                tg.create_task(echo_with_retries(
                    lambda entry=entry, exit=exit: echo_once(self.client, entry, exit, size, timeout_s,
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
        """Start `python -m nyx.stream client --socks5 address` on this testnet's directory (the
        file, or the service: `--directory-url`, `--authority`); returns where it listens (port
        0 in `address`: a free one). It stops with the testnet."""
        if self.socks5 is not None:
            raise RuntimeError("this testnet already runs a SOCKS5 client")
        if self.directory_path is not None:
            source = ["--directory", str(self.directory_path)]
        else:
            assert self.directory_endpoint is not None, "start the testnet first"
            source = ["--directory-url", self.directory_endpoint.url, "--authority", self.directory_endpoint.authority]
        args = ["nyx.stream", "client", *source, "--socks5", address]
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
        children = [c for c in (*self.nodes.values(), self.socks5, self.directory_process) if c is not None]
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
        nodes drain into peers already gone, which the nodes report as unclean exits. The
        directory service stops last: every node posts its drain there as it stops."""
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
            if self._directory_client is not None:
                await self._directory_client.__aexit__(None, None, None)
            if self.directory_process is not None:
                exits.append(await self.directory_process.stop(timeout))
            for task in list(self._tasks):
                with contextlib.suppress(Exception):
                    await task
        finally:
            for child in (*self.nodes.values(), self.socks5, self.directory_process):  # cancelled mid-way: no orphan
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
