"""`nyx.testnet` on the directory service: `Testnet(directory_service=True)` (and `python -m
nyx.testnet --directory-service`) starts a real `python -m nyx.directory serve` first, the nodes
register with it instead of reading a directory file, and the testnet's clients (`net.client()`,
the SOCKS client program) start on the verified document. One real network here, echoing
through it; the configs and flags it relies on are checked without processes."""

from __future__ import annotations

import asyncio
import tomllib
from pathlib import Path

import pytest

from nyx.mix.__main__ import mix_settings
from nyx.mix.__main__ import parser as mix_parser
from nyx.mix.directory import NodeRecord
from nyx.node.config import parse_config
from nyx.node.runtime import EXIT_CONFIG
from nyx.stream.__main__ import gateway_settings
from nyx.stream.__main__ import main as stream_main
from nyx.stream.__main__ import parser as stream_parser
from nyx.testnet import Testnet, TestnetOptions
from nyx.testnet.__main__ import parser as program_parser
from nyx.testnet.layout import DirectoryEndpoint, NodePlan, config_text
from nyx.testnet.probe import socks5_connect_reply

AUTHORITY = "ab" * 32
ENDPOINT = DirectoryEndpoint("http://127.0.0.1:43999", AUTHORITY)
OPTIONS = TestnetOptions(mean_delay_s=0.005, loop_rate_pps=0.0)


def _plan(tmp_path: Path, node_id: str, role: str, layer: int) -> NodePlan:
    record = NodeRecord(node_id, role, layer, "127.0.0.1", 40000, "cd" * 32)
    return NodePlan(node_id, role, layer, tmp_path / node_id, tmp_path / f"{node_id}.toml",  # type: ignore[arg-type]
                    tmp_path / f"{node_id}.log", record)


def test_configs_on_a_directory_service_name_its_url_and_key_and_no_file(tmp_path: Path) -> None:
    mix = parse_config(tomllib.loads(config_text(_plan(tmp_path, "mix-1-1", "mix", 1), OPTIONS, ENDPOINT)),
                       tables=("mix",))
    settings = mix_settings(mix, mix_parser().parse_args([]))
    assert settings.directory is None and settings.service is not None
    assert settings.service.urls == (ENDPOINT.url,) and settings.service.authorities == {bytes.fromhex(AUTHORITY)}
    assert settings.service.refresh_s == OPTIONS.directory_refresh_s
    gw = parse_config(tomllib.loads(config_text(_plan(tmp_path, "gw-1", "gateway", 0), OPTIONS, ENDPOINT)),
                      tables=("gateway",))
    gw_settings = gateway_settings(gw, stream_parser().parse_args(["gateway"]))
    assert gw_settings.directory is None and gw_settings.service is not None
    assert gw_settings.service.urls == (ENDPOINT.url,)


def test_the_socks_client_takes_a_directory_service_with_its_key(capsys: pytest.CaptureFixture[str]) -> None:
    args = stream_parser().parse_args(["client", "--directory-url", ENDPOINT.url, "--authority", AUTHORITY,
                                       "--socks5", "127.0.0.1:0"])
    assert args.directory is None and args.directory_url == [ENDPOINT.url] and args.authority == [AUTHORITY]
    assert stream_main(["client", "--directory-url", ENDPOINT.url, "--socks5", "127.0.0.1:0"]) == EXIT_CONFIG
    assert "needs --authority" in capsys.readouterr().err
    assert stream_main(["client", "--directory-url", ENDPOINT.url, "--authority", "abc",
                        "--socks5", "127.0.0.1:0"]) == EXIT_CONFIG
    assert "64 hex digits" in capsys.readouterr().err
    for wrong in (["--directory", "d.json", "--directory-url", ENDPOINT.url], []):  # one source, exactly
        with pytest.raises(SystemExit):
            stream_parser().parse_args(["client", *wrong, "--authority", AUTHORITY, "--socks5", "127.0.0.1:0"])


def test_the_program_takes_one_directory_source() -> None:
    assert program_parser().parse_args([]).directory_service is True  # the default (docs/stream.md says why)
    assert program_parser().parse_args(["--directory-service"]).directory_service is True
    assert program_parser().parse_args(["--static-directory"]).directory_service is False
    with pytest.raises(SystemExit):
        program_parser().parse_args(["--directory-service", "--static-directory"])


async def test_a_testnet_on_a_directory_service_echoes_and_stops_the_directory_last(tmp_path: Path) -> None:
    net = Testnet(options=OPTIONS, workdir=tmp_path, directory_service=True, start_timeout_s=40)
    async with asyncio.timeout(90):
        async with net:
            assert net.directory_path is None and not (tmp_path / "directory.json").exists()
            assert net.directory_url is not None and net.directory_url.startswith("http://127.0.0.1:")
            assert f'directory_url = "{net.directory_url}"' in (tmp_path / "gw-1.toml").read_text()
            assert [r.ok for r in net.probe_results] == [True, True]
            # The verified document lists every node with the record the testnet made for it.
            assert net.directory.nodes == net.records and len(net.records) == 5
            async with net.client(cover=None) as client:
                assert client.directory_service is not None and sorted(client.directory.nodes) == sorted(net.records)
                reader, writer = await client.open_connection("echo")
                writer.write(b"through a signed directory" * 100)
                writer.write_eof()
                assert await asyncio.wait_for(reader.readexactly(2600), 20) == b"through a signed directory" * 100
                writer.close()
            host, port = await net.start_socks5("127.0.0.1:0", cover=False)  # the SOCKS client on the service
            assert await socks5_connect_reply(host, port, "192.0.2.1", 9) == 2  # NOT_ALLOWED, from the exit
            assert net.socks5 is not None and "--directory-url" in net.socks5.args
    exits = net.stop_summary
    assert [e.name for e in exits] == ["socks5-client", "gw-1", "gw-2", "mix-1-1", "mix-2-1", "mix-3-1", "directory"]
    assert not [e for e in exits if e.failed], [e.describe() for e in exits]
    assert exits[-1].ok  # the directory outlived every node's drain and stopped cleanly
    assert "document" in (tmp_path / "logs" / "directory.log").read_text()
