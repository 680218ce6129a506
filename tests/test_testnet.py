"""`nyx.testnet`: the layout it writes is what the node programs accept, keys made in advance
survive the nodes' own start, the simulated testnet carries echoes at scale, a node that cannot
start is named with its log, and `python -m nyx.testnet --check-only` runs a real network of
processes end to end and exits 0. (The data path over a real testnet in depth:
tests/test_stream_end_to_end.py.)"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from nyx.mix.__main__ import mix_settings
from nyx.mix.__main__ import parser as mix_parser
from nyx.mix.directory import Directory, NodeRecord
from nyx.mix.restart import recover
from nyx.node.config import parse_config
from nyx.stream.__main__ import gateway_settings
from nyx.stream.__main__ import parser as stream_parser
from nyx.testnet import SimTestnet, Testnet, TestnetError, TestnetOptions
from nyx.testnet.__main__ import main
from nyx.testnet.layout import NodePlan, config_text, node_names, prepare_keys, seal_keys, write_directory
from nyx.testnet.processes import CODE_ROOT

OPTIONS = TestnetOptions(allow=("127.0.0.1:8080", "*.example.org:443"), mean_delay_s=0.01, loop_rate_pps=0.0)


def _plan(tmp_path: Path, node_id: str, role: str, layer: int) -> NodePlan:
    record = NodeRecord(node_id, role, layer, "127.0.0.1", 40000, "ab" * 32)
    return NodePlan(node_id, role, layer, tmp_path / node_id, tmp_path / f"{node_id}.toml",  # type: ignore[arg-type]
                    tmp_path / f"{node_id}.log", record)


def test_node_names_follow_layers_then_gateways_and_fit_a_wire_node_id() -> None:
    names = node_names(TestnetOptions(layers=3, mixes_per_layer=2, gateways=2))
    assert names == [("mix-1-1", "mix", 1), ("mix-1-2", "mix", 1), ("mix-2-1", "mix", 2), ("mix-2-2", "mix", 2),
                     ("mix-3-1", "mix", 3), ("mix-3-2", "mix", 3), ("gw-1", "gateway", 0), ("gw-2", "gateway", 0)]
    assert max(len(n) for n, _, _ in node_names(TestnetOptions(layers=9, mixes_per_layer=99, gateways=99))) <= 16
    with pytest.raises(ValueError):
        TestnetOptions(mixes_per_layer=100)


def test_the_configs_it_writes_are_what_the_node_programs_accept(tmp_path: Path) -> None:
    directory = tmp_path / "directory.json"
    mix = parse_config(tomllib.loads(config_text(_plan(tmp_path, "mix-2-1", "mix", 2), OPTIONS, directory)),
                       tables=("mix",))
    settings = mix_settings(mix, mix_parser().parse_args([]))
    assert (mix.node_id, mix.port, mix.metrics_port, mix.data_dir) == ("mix-2-1", 40000, -1, tmp_path / "mix-2-1")
    assert (settings.layer, settings.mean_delay_s, settings.loop_rate_pps) == (2, 0.01, 0.0)
    assert (settings.directory, settings.replay_capacity, settings.directory_refresh_s) == (directory, 1 << 18, 1.0)
    gw = parse_config(tomllib.loads(config_text(_plan(tmp_path, "gw-1", "gateway", 0), OPTIONS, directory)),
                      tables=("gateway",))
    gw_settings = gateway_settings(gw, stream_parser().parse_args(["gateway"]))
    assert gw_settings.allow == OPTIONS.allow and gw_settings.directory == directory
    assert gw_settings.client_rate_per_min == OPTIONS.client_rate_per_min
    assert (gw_settings.epoch_s, gw_settings.overlap_s) == (settings.epoch_s, settings.overlap_s)


async def test_keys_made_in_advance_are_kept_by_the_nodes_own_start(tmp_path: Path) -> None:
    """A node that finds keys but no clean-shutdown marker replaces them (it assumes it was
    killed); the testnet's final save is what lets the directory written in advance stay true."""
    now = time.time()
    keys = await asyncio.to_thread(prepare_keys, tmp_path / "gw-1", "gw-1", "gateway", OPTIONS, now)
    await seal_keys(tmp_path / "gw-1", keys.ring)
    at_start = await asyncio.to_thread(recover, tmp_path / "gw-1", OPTIONS.epoch_s, OPTIONS.overlap_s, now + 1)
    assert at_start.replaced == []
    assert {e: k.public_key for e, k in at_start.ring.keys.items()} == {e: k.public_key for e, k in keys.ring.keys.items()}
    assert set(keys.stream_keys) == {"hybrid"}
    again = await asyncio.to_thread(prepare_keys, tmp_path / "gw-1", "gw-1", "gateway", OPTIONS, now)
    assert again.fingerprint == keys.fingerprint and again.stream_keys == keys.stream_keys


def test_the_directory_is_replaced_whole(tmp_path: Path) -> None:
    path = tmp_path / "directory.json"
    records = [NodeRecord("gw-1", "gateway", 0, "127.0.0.1", 1, None, {7: b"k" * 32}, stream_keys={"hybrid": b"s"})]
    write_directory(path, records)
    assert Directory.load(path) == Directory.of(records)
    assert not path.with_name(path.name + ".tmp").exists()


async def test_a_simulated_testnet_of_forty_nodes_starts_at_once_and_echoes() -> None:
    async with SimTestnet(layers=3, mixes_per_layer=10, gateways=10) as net:
        assert net.startup_s < 2.0
        assert len(net.mixes) == 30 and len(net.gateways) == 10 and len(net.directory.gateways()) == 10
        results = await asyncio.wait_for(net.check(clients=4, size=5_000), 60)
    assert [r.ok for r in results] == [True] * 4, [r.line() for r in results]
    assert all(r.entry != r.exit for r in results)
    assert not net.crashed


def test_the_program_in_sim_mode_checks_and_exits(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--sim", "--check-only", "--mixes-per-layer", "10", "--gateways", "10", "--clients", "3",
                 "--check-bytes", "2000"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "nyx sim testnet up in" in out and "3 layers x 10 mixes, 10 gateways" in out
    assert out.count("2000 bytes echoed") == 3 and "check: ok" in out


async def test_a_node_that_cannot_start_is_named_with_its_log_and_nothing_is_left_running(tmp_path: Path) -> None:
    net = Testnet(layers=1, gateways=1, allow=["not a pattern"], workdir=tmp_path, probe=False, start_timeout_s=30)
    with pytest.raises(TestnetError) as failed:
        await net.start()
    assert "gw-1 exited with code 78 before it was ready" in str(failed.value)
    assert "gateway.allow" in str(failed.value)  # the node's own configuration error, from its log
    assert all(child.returncode is not None for child in net.nodes.values())


def test_python_m_nyx_testnet_check_only_runs_real_processes_and_exits_0() -> None:
    """The default: the nodes register with a directory service process (--static-directory: a
    file; Testnet's default, used by tests/test_stream_end_to_end.py)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(CODE_ROOT), os.environ.get("PYTHONPATH")) if p)}
    done = subprocess.run(
        [sys.executable, "-m", "nyx.testnet", "--check-only", "--socks5", "127.0.0.1:0", "--clients", "2"],
        cwd=CODE_ROOT, env=env, capture_output=True, text=True, timeout=150,
    )
    out = done.stdout
    assert done.returncode == 0, f"stdout:\n{out}\nstderr:\n{done.stderr[-3000:]}"
    assert "nyx testnet up in" in out and "3 layers x 1 mixes, 2 gateways (gw-1, gw-2)" in out
    assert out.count("probe:") == 2 and "curl --socks5-hostname 127.0.0.1:" in out
    assert "directory:  http://127.0.0.1:" in out and "nyx.Client.from_directory_service(" in out  # the default
    assert out.count("10000 bytes echoed") == 2
    assert "answered NOT_ALLOWED through the exit" in out and "check: ok" in out
    assert "stopped: " in out and " failed" not in out  # 7 of 7 exited 0, or some drained incompletely
