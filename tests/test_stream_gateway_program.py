"""`python -m nyx.stream gateway` and `client` as an operator meets them: the real process, its
exit code, one line that names the problem (never a traceback), and a clean start and drain."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from nyx.mix.directory import NodeRecord

REPO = Path(__file__).resolve().parents[1]
EXIT_CONFIG = 78
EXIT_CANNOT_LISTEN = 75


def run(*args: str, timeout_s: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nyx.stream", *args], capture_output=True, text=True,
                          timeout=timeout_s, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)))


def the_one_error(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if "ERROR" in line or "error" in line.lower()]
    assert len(errors) == 1, stderr
    return errors[0]


def config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "gw.toml"
    path.write_text(f'node_id = "gw-9"\nrole = "gateway"\ndata_dir = "{tmp_path / "data"}"\n' + body)
    return path


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ('[gateway]\nallow_privat = true\n', "allow_privat"),
        ('[gateway]\nallow = ["example.org"]\n', "example.org"),
        ('[gateway]\nsuites = ["quantum"]\n', "quantum"),
        ('[gateway]\nclient_rate_per_min = 0\n', "client_rate_per_min"),
        ('[gateway]\ndirectory = "missing.json"\n', "missing.json"),
    ],
    ids=["unknown-key", "bad-pattern", "bad-suite", "zero-rate", "missing-directory"],
)
def test_config_errors_exit_78_with_one_line(tmp_path: Path, body: str, named: str) -> None:
    done = run("gateway", "--config", str(config(tmp_path, body)))
    assert done.returncode == EXIT_CONFIG, done.stderr
    assert named in the_one_error(done.stderr)


def test_a_readable_static_key_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir(mode=0o700)
    key_file = tmp_path / "data" / "stream_keys.json"
    key_file.write_text('{"keys": {}}')
    key_file.chmod(0o644)
    done = run("gateway", "--config", str(config(tmp_path, "")))
    assert done.returncode == EXIT_CONFIG
    assert "chmod 600" in the_one_error(done.stderr)


def test_a_udp_port_in_use_exits_75(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        done = run("gateway", "--config", str(config(tmp_path, "")), "--port", str(port))
    assert done.returncode == EXIT_CANNOT_LISTEN
    assert str(port) in the_one_error(done.stderr)


def test_client_without_a_readable_directory_exits_78(tmp_path: Path) -> None:
    done = run("client", "--directory", str(tmp_path / "none.json"), "--socks5", "127.0.0.1:0")
    assert done.returncode == EXIT_CONFIG
    assert "none.json" in done.stderr and "Traceback" not in done.stderr


def test_the_embedded_default_starts_publishes_its_record_and_drains_on_sigterm(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "nyx.stream", "gateway", "--data-dir", str(tmp_path / "gw"), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        record = NodeRecord.from_json(json.loads(line))
        assert record.role == "gateway" and record.layer == 0 and record.node_id == "gw-1"
        assert len(record.stream_keys["hybrid"]) == 1216 and len(record.sphinx_keys) == 2
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    # the static key survives the restart: the directory's copy stays valid
    again = subprocess.Popen(
        [sys.executable, "-m", "nyx.stream", "gateway", "--data-dir", str(tmp_path / "gw"), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    try:
        assert again.stdout is not None
        second = NodeRecord.from_json(json.loads(again.stdout.readline()))
        assert second.stream_keys == record.stream_keys and second.fingerprint == record.fingerprint
        again.send_signal(signal.SIGINT)
        assert again.wait(timeout=20) == 130
    finally:
        if again.poll() is None:
            again.kill()
            again.wait()
