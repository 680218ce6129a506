"""Three `python -m nyx.mix` processes, one per layer, over real QUIC on 127.0.0.1.

The test is both the sender and the receiving endpoint (one QuicTransport). It checks that every
packet it sends through layers 1, 2 and 3 is delivered, and that a SIGTERM to the first mix while
it holds packets in its delay queue loses none of them (the drain flushes the queue) and exits 0.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from nyx.mix import create_packet
from nyx.mix.directory import Directory, NodeRecord, select_route
from nyx.mix.node import decode_delivery
from nyx.transport.certs import NodeIdentity
from nyx.transport.quic import QuicTransport

REPO = Path(__file__).resolve().parents[1]
METRICS = re.compile(r"metrics on http://[\d.]+:(\d+)/metrics")
FLUSHED = re.compile(r"flushing (\d+) held packets")
PACKETS = 40

pytestmark = pytest.mark.slow


class MixProcess:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.logs: list[str] = []
        self.record: NodeRecord | None = None
        self.metrics_port = 0
        self.directory_path = Path()
        self.signalled = False

    @classmethod
    async def start(
        cls, tmp_path: Path, layer: int, mean_delay_s: float, directory: Directory, mix_extra: str = "loop_rate_pps = 0\n"
    ) -> MixProcess:
        node_id = f"mix-{layer}"
        directory_path = tmp_path / f"directory-for-{node_id}.json"
        directory.save(directory_path)
        config = tmp_path / f"{node_id}.toml"
        config.write_text(
            f'node_id = "{node_id}"\nrole = "mix"\ndata_dir = "{node_id}-data"\n'
            '[transport]\nport = 0\n[metrics]\nport = 0\n[log]\nformat = "json"\n'
            f'[mix]\nlayer = {layer}\nmean_delay_s = {mean_delay_s}\ndirectory = "{directory_path}"\n'
            "replay_capacity = 65536\n" + mix_extra
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "nyx.mix", "--config", str(config), "--no-uvloop",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env=dict(os.environ, PYTHONPATH=str(REPO)),
        )
        mix = cls(proc)
        mix.directory_path = directory_path
        async with asyncio.timeout(30):
            while not mix.metrics_port:
                line = await proc.stderr.readline()
                assert line, f"{node_id} exited before listening: {mix.logs}"
                mix.logs.append(line.decode())
                match = METRICS.search(json.loads(line)["msg"])
                if match:
                    mix.metrics_port = int(match[1])
            mix.record = NodeRecord.from_json(json.loads(await proc.stdout.readline()))
        mix._drain_stderr = asyncio.ensure_future(mix._collect())
        return mix

    async def _collect(self) -> None:
        while line := await self.proc.stderr.readline():
            self.logs.append(line.decode())

    async def metric(self, family_name: str) -> float:
        """The sum of a metric family's samples on this node's /metrics (0 when absent)."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.metrics_port)
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        body = (await reader.read()).partition(b"\r\n\r\n")[2].decode()
        writer.close()
        for family in text_string_to_metric_families(body):
            if family.name == family_name:
                return sum(sample.value for sample in family.samples)
        return 0.0

    async def received(self) -> float:
        return await self.metric("transport_packets_received")

    async def stop(self) -> int:
        if self.proc.returncode is None and not self.signalled:
            self.signalled = True
            self.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            code = await self.proc.wait()
        await self._drain_stderr
        return code


async def test_three_mix_processes_deliver_over_quic_and_drain_on_sigterm(tmp_path: Path) -> None:
    got: list[bytes] = []
    async with QuicTransport("client", NodeIdentity.generate("client")) as client:
        client.set_handler(lambda peer, datagram: got.append(decode_delivery(datagram)[1]))
        me = client.address
        records = [NodeRecord("client", "endpoint", 0, me.host, me.port, me.fingerprint)]
        mixes: list[MixProcess] = []
        try:
            # Start from the last layer, so each mix's directory already lists its next hops.
            for layer, mean_delay_s in ((3, 0.005), (2, 0.005), (1, 2.0)):
                mix = await MixProcess.start(tmp_path, layer, mean_delay_s, Directory.of(records))
                records.append(mix.record)
                mixes.append(mix)
            mix3, mix2, mix1 = mixes
            directory = Directory.of(records)
            epoch = min(mix1.record.sphinx_keys)  # the current epoch (the next one is published too)
            client.add_peer("mix-1", mix1.record.address())
            sent = []
            for n in range(PACKETS):
                message = f"packet {n}".encode()
                first, packet = create_packet(select_route(directory, epoch), "client", message, epoch)
                await client.send_wait(first, packet)
                sent.append(message)
            # mix-1 holds most packets for its 2 s mean delay; wait until it has them all ...
            async with asyncio.timeout(15):
                while await mix1.received() < PACKETS:
                    await asyncio.sleep(0.2)
            # ... then stop it: the drain must forward every held packet before it exits.
            assert await mix1.stop() == 0, "".join(mix1.logs)
            async with asyncio.timeout(10):
                while len(got) < PACKETS:
                    await asyncio.sleep(0.05)
            assert sorted(got) == sorted(sent)
            flushed = [int(m[1]) for line in mix1.logs if (m := FLUSHED.search(line))]
            assert flushed and flushed[0] > 0  # the drain really had queued packets to flush
        finally:
            codes = [await mix.stop() for mix in mixes]
        assert codes == [0, 0, 0], [m.logs[-3:] for m in mixes]


async def test_mix_processes_send_loop_cover_once_the_directory_lists_every_layer(tmp_path: Path) -> None:
    mixes: list[MixProcess] = []
    try:
        for layer in (1, 2, 3):  # each starts knowing no other mix: no route, no loops yet
            mixes.append(await MixProcess.start(
                tmp_path, layer, 0.005, Directory.of([]),
                mix_extra="loop_rate_pps = 20\ndirectory_refresh_s = 0.2\n",
            ))
        assert [await mix.metric("cover_loops_returned") for mix in mixes] == [0, 0, 0]
        full = Directory.of([mix.record for mix in mixes if mix.record is not None])
        for mix in mixes:  # the operator publishes the assembled directory; each mix re-reads it
            full.save(mix.directory_path)
        async with asyncio.timeout(20):
            while min([await mix.metric("cover_loops_returned") for mix in mixes]) < 5:
                await asyncio.sleep(0.2)
        for mix in mixes:
            assert await mix.metric("mix_loop_success") == 1.0
            assert 0.0 <= await mix.metric("cover_traffic_compliance") <= 1.0
    finally:
        for mix in mixes:  # stop all at once, as a whole network going down
            if mix.proc.returncode is None:
                mix.signalled = True
                mix.proc.send_signal(signal.SIGTERM)
        codes = [await mix.stop() for mix in mixes]
    # Loops circulate through every layer, so a mix may still hold loop packets for a neighbour
    # that has already gone: it then reports an incomplete drain (3), never a crash.
    assert set(codes) <= {0, 3}, [m.logs[-3:] for m in mixes]


async def _run(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nyx.mix", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )


async def test_python_m_nyx_mix_starts_on_its_embedded_default_and_prints_its_record(tmp_path: Path) -> None:
    proc = await _run("--data-dir", str(tmp_path / "data"), "--metrics-port", "-1")
    async with asyncio.timeout(30):
        record = NodeRecord.from_json(json.loads(await proc.stdout.readline()))
        assert (record.node_id, record.role, record.layer, record.host) == ("mix-1", "mix", 1, "127.0.0.1")
        assert record.port > 0 and record.fingerprint and len(record.sphinx_keys) == 2
        assert oct((tmp_path / "data" / "sphinx-keys.json").stat().st_mode & 0o777) == "0o600"
        proc.send_signal(signal.SIGTERM)
        await proc.communicate()
    assert proc.returncode == 0


async def test_embedded_default_keeps_its_keys_only_while_it_runs(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nyx.mix", "--metrics-port", "-1",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=dict(os.environ, PYTHONPATH=str(REPO), TMPDIR=str(tmp_path)),
    )
    async with asyncio.timeout(30):
        record = NodeRecord.from_json(json.loads(await proc.stdout.readline()))
        assert record.node_id == "mix-1"
        assert [p.name.startswith("nyx-mix-1-") for p in tmp_path.iterdir()] == [True]
        proc.send_signal(signal.SIGTERM)
        await proc.communicate()
    assert proc.returncode == 0
    assert list(tmp_path.iterdir()) == []


async def test_python_m_nyx_mix_help_and_config_errors(tmp_path: Path) -> None:
    proc = await _run("--help")
    out, _ = await proc.communicate()
    assert proc.returncode == 0 and b"--latency-budget" in out and b"--config" in out
    bad = tmp_path / "bad.toml"
    bad.write_text('node_id = "mix-9"\n[mix]\nlayer = 0\n')
    proc = await _run("--config", str(bad))
    _, err = await proc.communicate()
    assert proc.returncode == 78 and b"mix.layer" in err
