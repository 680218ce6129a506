"""A node's transport default: `backend = "auto"` and `uvloop = "auto"` pick the fastest installed
configuration (qh3 on uvloop) at start, fall back to aioquic on asyncio, and never override an
explicit value."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from pathlib import Path

import pytest

from nyx.node.__main__ import argument_parser, resolve_config
from nyx.node.config import AUTO, ConfigError, parse_config, resolve_auto, resolve_backend, resolve_uvloop
from nyx.node.runtime import quic_transport
from nyx.transport import backends

REPO = Path(__file__).resolve().parents[1]
START_LINE = re.compile(r"listening on udp [\d.]+:\d+ \(transport (\w+) on (\w+)\)")


def _installed(monkeypatch: pytest.MonkeyPatch, *present: str) -> None:
    """Pretend only `present` (of qh3, uvloop) can be imported; aioquic always can."""
    monkeypatch.setattr(backends, "available", lambda name: name == "aioquic" or name in present)


def test_a_config_without_transport_keys_is_auto() -> None:
    config = parse_config({"node_id": "n"})
    assert (config.backend, config.uvloop) == (AUTO, AUTO)


def test_auto_resolves_to_qh3_on_uvloop_when_both_are_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    _installed(monkeypatch, "qh3", "uvloop")
    config = resolve_auto(parse_config({"node_id": "n"}))
    assert (config.backend, config.uvloop) == ("qh3", True)


def test_auto_falls_back_to_aioquic_on_asyncio_when_neither_is_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    _installed(monkeypatch)
    config = resolve_auto(parse_config({"node_id": "n"}))
    assert (config.backend, config.uvloop) == ("aioquic", False)


def test_auto_resolves_each_choice_on_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    _installed(monkeypatch, "uvloop")
    assert (resolve_backend(AUTO), resolve_uvloop(AUTO)) == ("aioquic", True)
    _installed(monkeypatch, "qh3")
    assert (resolve_backend(AUTO), resolve_uvloop(AUTO)) == ("qh3", False)


def test_explicit_backend_and_loop_win_over_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    _installed(monkeypatch, "qh3", "uvloop")
    config = parse_config({"node_id": "n", "transport": {"backend": "aioquic"}, "runtime": {"uvloop": False}})
    assert (resolve_auto(config).backend, resolve_auto(config).uvloop) == ("aioquic", False)


def test_explicit_qh3_or_uvloop_that_is_not_installed_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    _installed(monkeypatch)
    with pytest.raises(ConfigError, match="transport.backend: 'qh3' is not installed"):
        resolve_backend("qh3")
    with pytest.raises(ConfigError, match="runtime.uvloop: true, but uvloop is not installed"):
        resolve_uvloop(True)


def test_uvloop_accepts_only_true_false_or_auto() -> None:
    with pytest.raises(ConfigError, match="runtime.uvloop"):
        parse_config({"node_id": "n", "runtime": {"uvloop": "sometimes"}})


def test_command_line_backend_and_loop_override_the_file() -> None:
    args = argument_parser().parse_args(["--node-id", "n", "--backend", "aioquic", "--loop", "asyncio"])
    config = resolve_config(args)
    assert (config.backend, config.uvloop) == ("aioquic", False)
    args = argument_parser().parse_args(["--node-id", "n", "--loop", "uvloop"])
    assert resolve_config(args).uvloop is True
    args = argument_parser().parse_args(["--node-id", "n", "--no-uvloop"])
    assert resolve_config(args).uvloop is False


def test_the_node_transport_of_an_auto_config_uses_the_resolved_backend(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _installed(monkeypatch)  # no qh3: "auto" must still give a working transport
    transport = quic_transport(parse_config({"node_id": "n", "data_dir": str(tmp_path / "data")}))
    assert transport.backend.name == "aioquic"  # type: ignore[attr-defined]


@pytest.mark.skipif(not (backends.available("qh3") and backends.available("uvloop")), reason="needs qh3 and uvloop")
async def test_python_m_nyx_mix_starts_on_qh3_and_uvloop_and_says_so(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nyx.mix", "--data-dir", str(tmp_path / "data"), "--metrics-port", "-1",
        "--log-format", "json", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    try:
        async with asyncio.timeout(30):
            while True:
                line = await proc.stderr.readline()
                assert line, "the mix exited before listening"
                match = START_LINE.search(json.loads(line)["msg"])
                if match:
                    break
        assert match.groups() == ("qh3", "uvloop")
    finally:
        proc.send_signal(signal.SIGTERM)
        await proc.communicate()
    assert proc.returncode == 0
