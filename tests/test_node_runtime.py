"""The node runtime as operators run it: a real `python -m nyx.node` process."""

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

from nyx.node import EXIT_CONFIG, ConfigError, load_config, parse_config, with_overrides
from nyx.node.keys import load_or_create_identity
from nyx.transport import PeerAddress
from nyx.transport.certs import NodeIdentity
from nyx.transport.quic import QuicTransport

REPO = Path(__file__).resolve().parents[1]
LISTENING = re.compile(r"listening on udp ([\d.]+):(\d+) .*fingerprint ([0-9a-f]{64}); metrics on http://[\d.]+:(\d+)/metrics")


def _write_config(tmp_path: Path, **extra: str) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(
        'node_id = "mix-test"\nrole = "mix"\ndata_dir = "data"\n'
        '[transport]\nport = 0\n[metrics]\nport = 0\n[log]\nformat = "json"\n'
        + "".join(f"{k} = {v}\n" for k, v in extra.items())
    )
    return path


async def _start(config: Path, *args: str) -> asyncio.subprocess.Process:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nyx.node", "--config", str(config), *args,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, env=env,
    )


async def _wait_listening(proc: asyncio.subprocess.Process) -> tuple[int, str, int]:
    async with asyncio.timeout(20):
        while True:
            line = await proc.stderr.readline()
            assert line, "node exited before listening"
            entry = json.loads(line)  # JSON logs: every line must parse
            match = LISTENING.search(entry["msg"])
            if match:
                return int(match[2]), match[3], int(match[4])


async def _http_get(port: int, path: str) -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    response = await reader.read()
    writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()


async def test_node_serves_metrics_and_exits_zero_on_sigterm_leaving_key_0600(tmp_path):
    config = _write_config(tmp_path)
    proc = await _start(config)
    try:
        udp_port, fingerprint, metrics_port = await _wait_listening(proc)
        assert await _http_get(metrics_port, "/healthz") == (200, "ok\n")
        async with QuicTransport("sender", NodeIdentity.generate("sender")) as sender:
            sender.add_peer("mix-test", PeerAddress("127.0.0.1", udp_port, fingerprint))
            for _ in range(200):
                await sender.send_wait("mix-test", b"p" * 500)
            received = 0.0
            async with asyncio.timeout(10):
                while received < 200:
                    await asyncio.sleep(0.2)
                    _, body = await _http_get(metrics_port, "/metrics")
                    for family in text_string_to_metric_families(body):
                        if family.name == "transport_packets_received":
                            received = family.samples[0].value
                            assert family.samples[0].labels["node"] == "mix-test"
        names = {f.name for f in text_string_to_metric_families(body)}
        assert {"transport_packet_loss", "uptime_global", "cpu_user_pct", "telemetry_freshness"} <= names
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(15):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    key = tmp_path / "data" / "node.key"
    assert key.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "data" / "node.crt").exists()


async def test_sigint_stops_with_exit_130(tmp_path):
    proc = await _start(_write_config(tmp_path), "--log-format", "json", "--no-uvloop")
    try:
        await _wait_listening(proc)
        proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(15):
            assert await proc.wait() == 130
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_world_readable_key_file_refuses_to_start(tmp_path):
    load_or_create_identity(tmp_path / "data", "mix-test")
    os.chmod(tmp_path / "data" / "node.key", 0o644)
    proc = await _start(_write_config(tmp_path))
    async with asyncio.timeout(20):
        _, stderr = await proc.communicate()
    assert proc.returncode == EXIT_CONFIG
    assert b"chmod 600" in stderr


def test_config_file_then_command_line_overrides(tmp_path):
    config = load_config(_write_config(tmp_path))
    assert config.node_id == "mix-test" and config.data_dir == tmp_path / "data"
    assert config.role == "mix" and config.log_format == "json"
    config = with_overrides(config, port=4433, backend="qh3", log_format=None)
    assert (config.port, config.backend, config.log_format) == (4433, "qh3", "json")


@pytest.mark.parametrize(
    "document, key",
    [
        ({}, "node_id"),
        ({"node_id": "n", "transport": {"port": 70000}}, "transport.port"),
        ({"node_id": "n", "transport": {"backend": "quiche"}}, "transport.backend"),
        ({"node_id": "n", "log": {"format": "xml"}}, "log.format"),
        ({"node_id": "n", "peers": [{"id": "p", "fingerprint": "zz"}]}, "peers[0].fingerprint"),
        ({"node_id": "n", "runtime": {"drain_timeout_s": True}}, "runtime.drain_timeout_s"),
        ({"node_id": "n", "transport": {"prot": 4433}}, "transport.prot: unknown key; did you mean transport.port?"),
        ({"node_id": "n", "mix": {"layer": 1}}, "mix: unknown key"),  # the bare node has no [mix]
        ({"node_id": "n", "peers": [{"id": "p", "adress": "x"}]}, "peers[0].adress: unknown key"),
    ],
)
def test_invalid_config_names_the_key(document, key):
    with pytest.raises(ConfigError, match=re.escape(key)):
        parse_config(document)
