"""A real `python -m nyx.directory serve` process with real `python -m nyx.mix` and
`python -m nyx.stream gateway` processes registering to it over HTTP on 127.0.0.1.

The test reads documents as a client does (`DirectoryClient`, pinned authority key) and checks
that every node is listed with the Sphinx keys and certificate fingerprint it printed itself,
that the mixes take their peers from the documents (loop cover through the other two layers comes
back), that SIGTERM takes a mix out of the next document at once (its drain) and kill -9 after
the missed heartbeats, and that a mix started before its directory registers once it is up.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from nyx.directory.agent import DirectoryClient, DirectoryUnavailable
from nyx.directory.authority import public_bytes
from nyx.directory.document import DocumentBody, TrustPolicy
from nyx.directory.keys import load_or_create_authority_key
from nyx.directory.records import NodeRecord

REPO = Path(__file__).resolve().parents[1]
HEARTBEAT_S = 1.5  # the service's: a silent node is down after 3 x 1.5 s
NODE_HEARTBEAT_S = 0.3
METRICS = re.compile(r"metrics on http://[\d.]+:(\d+)/metrics")

pytestmark = pytest.mark.slow


class Process:
    """A child process whose stderr is collected and whose stdout lines are JSON."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process) -> None:
        self.name, self.proc = name, proc
        self.logs: list[str] = []
        self._collect = asyncio.ensure_future(self._collect_stderr())

    @classmethod
    async def start(cls, name: str, *args: str) -> Process:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env=dict(os.environ, PYTHONPATH=str(REPO)), cwd=REPO,
        )
        return cls(name, proc)

    async def _collect_stderr(self) -> None:
        assert self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            self.logs.append(line.decode())

    async def json_line(self) -> dict:
        assert self.proc.stdout is not None
        async with asyncio.timeout(30):
            line = await self.proc.stdout.readline()
        assert line, f"{self.name} exited before printing its line: {''.join(self.logs[-20:])}"
        return json.loads(line)

    def logged(self, text: str) -> bool:
        return any(text in line for line in self.logs)

    def metrics_port(self) -> int:
        for line in self.logs:
            match = METRICS.search(line)
            if match:
                return int(match[1])
        raise AssertionError(f"{self.name} logged no metrics address")

    async def stop(self, signum: signal.Signals = signal.SIGTERM) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(signum)
        async with asyncio.timeout(20):
            code = await self.proc.wait()
        await self._collect
        return code


class Directory:
    """The directory process and a client that follows its documents."""

    def __init__(self, process: Process, url: str, authority: str) -> None:
        self.process, self.url, self.authority = process, url, authority
        self.client = DirectoryClient([url], TrustPolicy(frozenset({bytes.fromhex(authority)}), 1))

    async def document(self) -> DocumentBody | None:
        try:
            await self.client.refresh()
        except DirectoryUnavailable:  # no document yet
            return None
        return self.client.holder.current

    async def listed(self) -> dict[str, NodeRecord]:
        body = await self.document()
        return {} if body is None else {record.node_id: record for record in body.nodes}

    async def until(self, check: Callable[[dict[str, NodeRecord]], bool], timeout_s: float = 15.0) -> dict[str, NodeRecord]:
        deadline = time.monotonic() + timeout_s
        while True:
            listed = await self.listed()
            if check(listed):
                return listed
            assert time.monotonic() < deadline, f"the document never got there: {sorted(listed)}"
            await asyncio.sleep(0.1)


async def start_directory(tmp_path: Path, listen: str = "127.0.0.1:0") -> Directory:
    process = await Process.start(
        "directory", "-m", "nyx.directory", "serve", "--listen", listen, "--data-dir", str(tmp_path / "directory"),
        "--heartbeat-s", str(HEARTBEAT_S), "--period-s", "5", "--validity-s", "60", "--cache-ttl-s", "0",
    )
    line = await process.json_line()
    return Directory(process, line["url"], line["authority"])


@pytest.fixture
async def processes() -> AsyncIterator[list[Process]]:
    """Every process a test starts; whatever is still running at the end is killed."""
    started: list[Process] = []
    yield started
    for process in started:
        if process.proc.returncode is None:
            process.proc.kill()
            await process.proc.wait()


def node_config(tmp_path: Path, node_id: str, role: str, table: str, body: str) -> Path:
    path = tmp_path / f"{node_id}.toml"
    path.write_text(
        f'node_id = "{node_id}"\nrole = "{role}"\ndata_dir = "{tmp_path / node_id}"\n'
        '[transport]\nport = 0\n[metrics]\nport = 0\n'
        f"[{table}]\ndirectory_heartbeat_s = {NODE_HEARTBEAT_S}\ndirectory_refresh_s = 0.2\n" + body
    )
    return path


async def start_mix(tmp_path: Path, layer: int, url: str, authority: str) -> tuple[Process, NodeRecord]:
    config = node_config(tmp_path, f"mix-{layer}", "mix", "mix",
                         f"layer = {layer}\nmean_delay_s = 0.001\nloop_rate_pps = 5\nreplay_capacity = 65536\n")
    process = await Process.start(f"mix-{layer}", "-m", "nyx.mix", "--config", str(config), "--no-uvloop",
                                  "--directory-url", url, "--authority", authority)
    return process, NodeRecord.from_json(await process.json_line())


async def loops_returned(process: Process) -> float:
    reader, writer = await asyncio.open_connection("127.0.0.1", process.metrics_port())
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    body = (await reader.read()).partition(b"\r\n\r\n")[2].decode()
    writer.close()
    for family in text_string_to_metric_families(body):
        if family.name == "cover_loops_returned":
            return sum(sample.value for sample in family.samples if sample.name.endswith("_total"))
    return 0.0


async def test_three_mixes_register_follow_documents_and_leave_by_drain_and_by_silence(
    tmp_path: Path, processes: list[Process]
) -> None:
    directory = await start_directory(tmp_path)
    processes.append(directory.process)
    async with directory.client:
        started = await asyncio.gather(*(start_mix(tmp_path, layer, directory.url, directory.authority)
                                         for layer in (1, 2, 3)))
        processes.extend(process for process, _ in started)
        printed = {record.node_id: record for _, record in started}

        listed = await directory.until(lambda listed: set(printed) <= set(listed))
        for node_id, record in printed.items():
            assert listed[node_id].sphinx_keys == record.sphinx_keys
            assert listed[node_id].fingerprint == record.fingerprint
            assert (listed[node_id].layer, listed[node_id].port) == (record.layer, record.port)

        # Peers and loop routes come from the documents: a loop through the other two layers returns.
        mix_1, _, mix_3 = (process for process, _ in started)
        deadline = time.monotonic() + 15
        while await loops_returned(mix_1) == 0:
            assert time.monotonic() < deadline, "no loop came back: peers not taken from the document"
            await asyncio.sleep(0.2)

        # SIGTERM: the drain is posted and the next document leaves the mix out, long before its
        # heartbeats would be missed (3 x HEARTBEAT_S).
        signalled = time.monotonic()
        assert await mix_1.stop() in (0, 3)
        assert mix_1.logged("drain posted")
        listed = await directory.until(lambda listed: "mix-1" not in listed, timeout_s=3 * HEARTBEAT_S)
        assert time.monotonic() - signalled < 3 * HEARTBEAT_S
        assert {"mix-2", "mix-3"} <= set(listed)

        # kill -9: no drain; the mix leaves once its heartbeats are missed.
        mix_3.proc.kill()
        await mix_3.stop()
        listed = await directory.until(lambda listed: "mix-3" not in listed, timeout_s=3 * HEARTBEAT_S + 10)
        assert "mix-2" in listed  # (mix-2 is killed at the end: its drain would wait for loops to dead peers)
    assert await directory.process.stop() == 0


async def test_a_gateway_registers_its_record_with_its_stream_keys(tmp_path: Path, processes: list[Process]) -> None:
    directory = await start_directory(tmp_path)
    processes.append(directory.process)
    config = node_config(tmp_path, "gw-1", "gateway", "gateway",
                         f'directory_url = "{directory.url}"\ndirectory_authorities = ["{directory.authority}"]\n')
    gateway = await Process.start("gw-1", "-m", "nyx.stream", "gateway", "--config", str(config), "--no-uvloop")
    processes.append(gateway)
    printed = NodeRecord.from_json(await gateway.json_line())
    async with directory.client:
        listed = await directory.until(lambda listed: "gw-1" in listed)
        record = listed["gw-1"]
        assert (record.role, record.layer) == ("gateway", 0)
        assert record.stream_keys == printed.stream_keys and record.sphinx_keys == printed.sphinx_keys
        assert record.fingerprint == printed.fingerprint
        assert await gateway.stop() == 0
        assert gateway.logged("drain posted")
        await directory.until(lambda listed: "gw-1" not in listed, timeout_s=3 * HEARTBEAT_S)
    assert await directory.process.stop() == 0


async def test_a_mix_started_before_its_directory_registers_once_it_is_up(
    tmp_path: Path, processes: list[Process]
) -> None:
    # The authority key exists before the service does, so the mix can pin it; the port is free now.
    authority = public_bytes(load_or_create_authority_key(tmp_path / "directory").public_key()).hex()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mix, printed = await start_mix(tmp_path, 1, f"http://127.0.0.1:{port}", authority)
    processes.append(mix)
    deadline = time.monotonic() + 10
    while not mix.logged("nyx.directory.agent: directory: "):  # the agent's retry warning
        assert time.monotonic() < deadline, "".join(mix.logs)
        await asyncio.sleep(0.1)
    assert mix.proc.returncode is None

    directory = await start_directory(tmp_path, listen=f"127.0.0.1:{port}")
    processes.append(directory.process)
    assert directory.authority == authority
    async with directory.client:
        listed = await directory.until(lambda listed: "mix-1" in listed)
        assert listed["mix-1"].sphinx_keys == printed.sphinx_keys
    assert await mix.stop() in (0, 3)
    assert await directory.process.stop() == 0
