"""What an operator sees when `python -m nyx.mix` cannot start: the real process, its exit code and
one line on stderr that names the problem, never a traceback.

| problem | exit |
|---|---|
| an unknown key (top level, `[transport]`, `[metrics]`, `[log]`, `[runtime]`, `[mix]`, `[[peers]]`) | 78 |
| `--layer` / `mix.layer` beyond the directory's layers | 78 |
| the UDP port or the metrics TCP port already in use | 75 |

Also: the metrics address actually bound (port 0 asked) is logged at start.
"""

from __future__ import annotations

import errno
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest

from nyx.mix.directory import Directory, NodeRecord
from nyx.node.__main__ import EXIT_CANNOT_LISTEN, describe_listen_failure, listen_failure
from nyx.node.config import ConfigError, NodeConfig, parse_config

REPO = Path(__file__).resolve().parents[1]
EXIT_CONFIG = 78
LOOPS = [pytest.param([], id="uvloop"), pytest.param(["--no-uvloop"], id="asyncio")]


def run_mix(*args: str, timeout_s: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run `python -m nyx.mix` to its exit (a node that wrongly starts is killed at the timeout,
    which fails the test instead of hanging it)."""
    return subprocess.run(
        [sys.executable, "-m", "nyx.mix", *args], capture_output=True, text=True, timeout=timeout_s,
        cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)),
    )


def the_one_error(stderr: str) -> str:
    """The single error line of a refused start (other lines may be INFO logs)."""
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if "ERROR" in line or "error:" in line]
    assert len(errors) == 1, stderr
    assert stderr.rstrip().splitlines()[-1] == errors[0], stderr
    return errors[0]


def write_config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "mix.toml"
    path.write_text('node_id = "mix-9"\nrole = "mix"\ndata_dir = "data"\n' + body)
    return path


# -- unknown keys ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, message",
    [
        ("mtrics = 1\n", "mtrics: unknown key; did you mean metrics?"),
        ("[mxi]\nlayer = 1\n", "mxi: unknown key; did you mean mix?"),
        ("[transport]\nprot = 4433\n", "transport.prot: unknown key; did you mean transport.port?"),
        ("[metrics]\nhots = '0.0.0.0'\n", "metrics.hots: unknown key; did you mean metrics.host?"),
        ("[log]\nlevle = 'DEBUG'\n", "log.levle: unknown key; did you mean log.level?"),
        ("[runtime]\ndrain_timeout = 5\n", "runtime.drain_timeout: unknown key; did you mean runtime.drain_timeout_s?"),
        ("[mix]\nmean_dealy_s = 0.1\n", "mix.mean_dealy_s: unknown key; did you mean mix.mean_delay_s?"),
        ("[mix]\nzzz = 1\n", "mix.zzz: unknown key; known keys: batch_size, batch_timeout_s, directory,"),
        ("[[peers]]\nid = 'p'\nfingerprnt = 'ab'\n", "peers[0].fingerprnt: unknown key; did you mean peers[0].fingerprint?"),
    ],
)
def test_an_unknown_config_key_is_refused_naming_it_and_the_closest_known_key(
    tmp_path: Path, body: str, message: str
) -> None:
    result = run_mix("--config", str(write_config(tmp_path, body)))
    assert result.returncode == EXIT_CONFIG, result.stderr
    line = the_one_error(result.stderr)
    assert line.startswith("python -m nyx.mix: configuration error: ")
    assert message in line
    assert not (tmp_path / "data").exists()  # refused before any key was written


def test_every_unknown_key_of_a_table_is_named_on_the_one_line() -> None:
    with pytest.raises(ConfigError, match=r"^transport\.prot: unknown key; did you mean transport\.port\? "
                                          r"\(also unknown: transport\.bakend\)$"):
        parse_config({"node_id": "n", "transport": {"prot": 1, "bakend": "qh3"}})


def test_a_node_kind_table_is_kept_only_when_the_kind_names_it() -> None:
    assert parse_config({"node_id": "n", "mix": {"layer": 2}}, tables=("mix",)).extra == {"mix": {"layer": 2}}
    with pytest.raises(ConfigError, match="^mix: unknown key"):
        parse_config({"node_id": "n", "mix": {"layer": 2}})


# -- layer beyond the directory ----------------------------------------------------------------


def three_layer_directory(tmp_path: Path) -> Path:
    path = tmp_path / "directory.json"
    Directory.of(
        NodeRecord(f"mix-{layer}", "mix", layer, "127.0.0.1", 40000 + layer, "ab" * 32) for layer in (1, 2, 3)
    ).save(path)
    return path


def test_a_layer_flag_beyond_the_directory_is_a_config_error_naming_both_numbers(tmp_path: Path) -> None:
    directory = three_layer_directory(tmp_path)
    result = run_mix("--data-dir", str(tmp_path / "data"), "--directory", str(directory), "--layer", "4",
                     "--metrics-port", "-1")
    assert result.returncode == EXIT_CONFIG, result.stderr
    line = the_one_error(result.stderr)
    assert f"mix.layer: 4, but directory {directory} has 3 layers" in line
    assert not (tmp_path / "data").exists()  # refused before any key was written


def test_a_mix_layer_beyond_the_directory_in_the_file_is_a_config_error(tmp_path: Path) -> None:
    directory = three_layer_directory(tmp_path)
    config = write_config(tmp_path, f'[metrics]\nport = -1\n[mix]\nlayer = 5\ndirectory = "{directory}"\n')
    result = run_mix("--config", str(config))
    assert result.returncode == EXIT_CONFIG, result.stderr
    assert "mix.layer: 5, but directory" in the_one_error(result.stderr)
    assert "has 3 layers" in result.stderr


# -- ports in use --------------------------------------------------------------------------------


@pytest.mark.parametrize("loop", LOOPS)
def test_a_udp_port_in_use_exits_75_with_one_line(tmp_path: Path, loop: list[str]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        result = run_mix("--data-dir", str(tmp_path / "data"), "--port", str(port), "--metrics-port", "-1", *loop)
    assert result.returncode == EXIT_CANNOT_LISTEN == 75, result.stderr
    line = the_one_error(result.stderr)
    assert f"cannot start: udp 127.0.0.1:{port} (transport.port) is already in use" in line


@pytest.mark.parametrize("loop", LOOPS)
def test_a_metrics_port_in_use_exits_75_with_one_line(tmp_path: Path, loop: list[str]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_mix("--data-dir", str(tmp_path / "data"), "--port", "0", "--metrics-port", str(port), *loop)
    assert result.returncode == EXIT_CANNOT_LISTEN, result.stderr
    line = the_one_error(result.stderr)
    assert f"cannot start: tcp 127.0.0.1:{port} (metrics.port) is already in use" in line


class _Runtime:
    """What `describe_listen_failure` reads of a NodeRuntime: its config, and `address` (set once
    the transport listens)."""

    def __init__(self, address: object = None) -> None:
        self.config = NodeConfig(node_id="n", data_dir=Path("."), port=443, metrics_port=80)
        self.address = address


def test_a_privileged_port_is_a_listen_failure_not_a_bug() -> None:
    # Tests run as root here, so a real bind below 1024 succeeds; the classification is checked
    # on the exception a non-root bind raises.
    denied = OSError(errno.EACCES, "Permission denied")
    assert listen_failure(denied) is denied
    message, code = describe_listen_failure(_Runtime(), denied)  # type: ignore[arg-type]
    assert code == EXIT_CANNOT_LISTEN
    assert message.startswith("udp 127.0.0.1:443 (transport.port): permission denied (ports below 1024")
    message, _ = describe_listen_failure(_Runtime(address=object()), denied)  # type: ignore[arg-type]
    assert message.startswith("tcp 127.0.0.1:80 (metrics.port): permission denied")


def test_a_bind_error_is_found_inside_task_groups_and_uvloop_wrappers() -> None:
    in_use = OSError(errno.EADDRINUSE, "Address already in use")
    wrapped = OSError("could not bind to local_addr ('127.0.0.1', 4433)")  # uvloop: no errno
    wrapped.__cause__ = in_use
    group = ExceptionGroup("unhandled errors in a TaskGroup", [ValueError("x"), ExceptionGroup("inner", [wrapped])])
    assert listen_failure(group) is in_use


def test_a_file_permission_error_is_not_a_listen_failure() -> None:
    assert listen_failure(PermissionError(errno.EACCES, "Permission denied", "/var/lib/nyx/state")) is None
    assert listen_failure(RuntimeError("boom")) is None


# -- the metrics address --------------------------------------------------------------------------


def test_the_metrics_address_actually_bound_is_logged_at_start(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "nyx.mix", "--data-dir", str(tmp_path / "data"), "--port", "0", "--metrics-port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    watchdog = threading.Timer(30.0, proc.kill)  # a node that never logs the line fails, not hangs
    watchdog.start()
    try:
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.readline()  # the record: the node is listening
        port = 0
        while not port:
            line = proc.stderr.readline()
            assert line, "the mix exited before logging its metrics address"
            if match := re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", line):
                port = int(match[1])
        assert port > 0  # the bound port, not the 0 that was asked
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            assert response.status == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
