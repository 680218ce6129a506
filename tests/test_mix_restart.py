"""A restarted `python -m nyx.mix` refuses packets it processed before the restart.

The test records a packet on its way through a real mix process (over QUIC on 127.0.0.1), stops
the mix, starts it again on the same data dir and replays the recorded packet from a fresh
sender, as an attacker on the link would. After a SIGTERM the mix must drop it as a replay (its
replay tables were saved and reloaded); after a SIGKILL it must have replaced the key the packet
was built for (its replay state since the last save is unknown), so the packet fails there.
Either way nothing reaches the next hop a second time.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import signal
import sys
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from prometheus_client.parser import text_string_to_metric_families

from nyx.mix import Hop, create_packet
from nyx.mix.directory import Directory, NodeRecord
from nyx.transport.certs import NodeIdentity
from nyx.transport.quic import QuicTransport

REPO = Path(__file__).resolve().parents[1]
METRICS = re.compile(r"metrics on http://[\d.]+:(\d+)/metrics")
EPOCH_S = 3600.0  # the default key epoch

pytestmark = pytest.mark.slow


class Mix:
    """One `python -m nyx.mix` process on `data_dir`; its record and metrics port once it listens."""

    def __init__(self, proc: asyncio.subprocess.Process, record: NodeRecord, metrics_port: int) -> None:
        self.proc, self.record, self.metrics_port = proc, record, metrics_port

    @classmethod
    async def start(cls, config: Path) -> Mix:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "nyx.mix", "--config", str(config), "--no-uvloop",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env=dict(os.environ, PYTHONPATH=str(REPO)),
        )
        async with asyncio.timeout(30):
            metrics_port = 0
            while not metrics_port:
                line = (await proc.stderr.readline()).decode()
                assert line, "the mix exited before listening"
                if match := METRICS.search(line):
                    metrics_port = int(match[1])
            record = NodeRecord.from_json(json.loads(await proc.stdout.readline()))
        return cls(proc, record, metrics_port)

    async def drops(self) -> dict[str, float]:
        """mix_packet_drop by reason, from /metrics."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.metrics_port)
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        body = (await reader.read()).partition(b"\r\n\r\n")[2].decode()
        writer.close()
        counts: dict[str, float] = {}
        for family in text_string_to_metric_families(body):
            if family.name == "mix_packet_drop":
                for sample in family.samples:
                    if sample.name.endswith("_total"):
                        counts[sample.labels["reason"]] = sample.value
        return counts

    async def stop(self, signum: signal.Signals) -> int:
        self.proc.send_signal(signum)
        async with asyncio.timeout(20):
            await self.proc.communicate()
        assert self.proc.returncode is not None
        return self.proc.returncode


async def until(condition, timeout_s: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout_s):
        while not await condition():
            await asyncio.sleep(0.1)


async def record_replay_after_restart(tmp_path: Path, stop_with: signal.Signals) -> tuple[Mix, Mix, list[bytes], int, dict[str, float]]:
    """Send one packet through a mix to `next`, stop the mix with `stop_with`, restart it and
    replay the packet; returns both runs, what `next` received, the packet's epoch and the
    second run's drops by reason."""
    got: list[bytes] = []
    async with QuicTransport("next", NodeIdentity.generate("next")) as next_hop:
        next_hop.set_handler(lambda peer, packet: got.append(packet))
        directory = tmp_path / "directory.json"
        me = next_hop.address
        Directory.of([NodeRecord("next", "endpoint", 0, me.host, me.port, me.fingerprint)]).save(directory)
        config = tmp_path / "mix-1.toml"
        config.write_text(
            'node_id = "mix-1"\nrole = "mix"\ndata_dir = "mix-1-data"\n'
            "[transport]\nport = 0\n[metrics]\nport = 0\n"
            f'[mix]\nlayer = 1\nmean_delay_s = 0.001\nloop_rate_pps = 0\ndirectory = "{directory}"\n'
            "replay_capacity = 4096\n"
        )
        first = await Mix.start(config)
        epoch = math.floor(time.time() / EPOCH_S)
        route = [Hop("mix-1", first.record.sphinx_keys[epoch]),
                 Hop("next", X25519PrivateKey.generate().public_key().public_bytes_raw())]
        _, packet = create_packet(route, "svc", b"recorded on the wire", epoch)
        try:
            async with QuicTransport("sender", NodeIdentity.generate("sender")) as sender:
                sender.add_peer("mix-1", first.record.address())
                await sender.send_wait("mix-1", packet)

                async def forwarded_once() -> bool:
                    return len(got) == 1

                await until(forwarded_once)
        finally:
            code = await first.stop(stop_with)
        assert code == (0 if stop_with == signal.SIGTERM else -signal.SIGKILL)
        second = await Mix.start(config)
        try:
            async with QuicTransport("attacker", NodeIdentity.generate("attacker")) as attacker:
                attacker.add_peer("mix-1", second.record.address())
                await attacker.send_wait("mix-1", packet)

                async def dropped_or_forwarded() -> bool:
                    return len(got) > 1 or sum((await second.drops()).values()) >= 1

                await until(dropped_or_forwarded)
                await asyncio.sleep(0.2)  # anything forwarded would have reached `next` by now
                drops = {reason: n for reason, n in (await second.drops()).items() if n}
        finally:
            assert await second.stop(signal.SIGTERM) == 0
    return first, second, got, epoch, drops


async def test_a_packet_recorded_before_a_sigterm_restart_is_dropped_as_a_replay(tmp_path: Path) -> None:
    first, second, got, epoch, drops = await record_replay_after_restart(tmp_path, signal.SIGTERM)
    assert second.record.sphinx_keys[epoch] == first.record.sphinx_keys[epoch]  # a clean restart keeps its keys
    assert len(got) == 1  # forwarded once, before the restart; never again
    assert drops == {"replay": 1}
    assert (tmp_path / "mix-1-data" / "clean-shutdown").exists()  # the second run also stopped cleanly


async def test_a_packet_recorded_before_a_sigkill_restart_finds_its_key_replaced(tmp_path: Path) -> None:
    first, second, got, epoch, drops = await record_replay_after_restart(tmp_path, signal.SIGKILL)
    # A killed mix cannot vouch for its replay tables: the key the packet was built for is gone.
    assert second.record.sphinx_keys.get(epoch) != first.record.sphinx_keys[epoch]
    assert len(got) == 1
    assert drops in ({"mac": 1}, {"epoch": 1})
