"""The directory-service keys of `[mix]` and `[gateway]` and their flags: what is accepted, and the
one line that names the key when it is not (exit 78 from the real programs)."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from nyx.directory.records import Directory, NodeRecord
from nyx.mix.__main__ import mix_settings, parser as mix_parser
from nyx.mix.registration import DirectoryLink, LinkSettings
from nyx.node.config import ConfigError, parse_config
from nyx.stream.__main__ import gateway_settings, parser as stream_parser
from nyx.transport.certs import NodeIdentity

REPO = Path(__file__).resolve().parents[1]
KEY = "ab" * 32
OTHER = "cd" * 32


def settings_of(table: dict[str, Any], *flags: str) -> Any:
    config = parse_config({"node_id": "mix-9", "mix": table}, tables=("mix",))
    return mix_settings(config, mix_parser().parse_args(list(flags))).service


def test_without_a_url_there_is_no_link() -> None:
    assert settings_of({"layer": 2}) is None


def test_one_url_string_and_one_key_make_a_one_of_one_policy() -> None:
    link = settings_of({"directory_url": "http://127.0.0.1:43250/", "directory_authorities": [KEY]})
    assert link.urls == ("http://127.0.0.1:43250",)
    assert link.policy.authorities == frozenset({bytes.fromhex(KEY)}) and link.policy.threshold == 1


def test_flags_replace_the_table_values() -> None:
    link = settings_of(
        {"directory_url": "http://a", "directory_authorities": [KEY]},
        "--directory-url", "http://b", "--directory-url", "https://c", "--authority", KEY, "--authority", OTHER,
        "--threshold", "2",
    )
    assert link.urls == ("http://b", "https://c") and link.threshold == 2 and len(link.authorities) == 2


def test_the_link_refreshes_as_often_as_the_file_would_be_reread() -> None:
    link = settings_of({"directory_url": "http://a", "directory_authorities": [KEY], "directory_refresh_s": 0.5,
                        "directory_heartbeat_s": 1})
    assert (link.refresh_s, link.heartbeat_s) == (0.5, 1.0)


@pytest.mark.parametrize(
    ("table", "named"),
    [
        ({"directory_url": "http://a"}, "mix.directory_authorities: needed with mix.directory_url"),
        ({"directory_url": "http://a", "directory_authorities": ["zz"]}, "mix.directory_authorities: 'zz' is not 64 hex"),
        ({"directory_url": "http://a", "directory_authorities": [KEY[:-2]]}, "is not 64 hex digits"),
        ({"directory_url": "http://a", "directory_authorities": [KEY, KEY], "directory_threshold": 2},
         "mix.directory_threshold: 1 to 1"),
        ({"directory_url": "http://a", "directory_authorities": [KEY], "directory_threshold": 0},
         "mix.directory_threshold"),
        ({"directory_url": "ftp://a", "directory_authorities": [KEY]}, "mix.directory_url: expected an http(s) URL"),
        ({"directory_url": [], "directory_authorities": [KEY]}, "mix.directory_url"),
        ({"directory_url": "http://a", "directory_authorities": [KEY], "directory": "d.json"},
         "mix.directory_url: give a directory file or a directory URL, not both"),
        ({"directory_authorities": [KEY]}, "mix.directory_authorities: only with mix.directory_url"),
        ({"directory_url": "http://a", "directory_authorities": [KEY], "directory_heartbeat_s": 0},
         "mix.directory_heartbeat_s"),
    ],
    ids=["no-keys", "bad-hex", "short-key", "threshold-over-distinct-keys", "threshold-zero", "not-http", "no-url",
         "file-and-url", "keys-without-url", "zero-heartbeat"],
)
def test_a_bad_link_key_is_a_config_error_naming_it(table: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError) as raised:
        settings_of(table)
    assert named in str(raised.value)


def test_the_gateway_takes_the_same_keys_and_flags() -> None:
    config = parse_config({"node_id": "gw-9", "gateway": {"directory_authorities": [KEY]}}, tables=("gateway",))
    args = stream_parser().parse_args(["gateway", "--directory-url", "http://a", "--threshold", "1"])
    link = gateway_settings(config, args).service
    assert link is not None and link.urls == ("http://a",) and link.threshold == 1


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=30, cwd=REPO,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))


@pytest.mark.parametrize("program", [["nyx.mix"], ["nyx.stream", "gateway"]], ids=["mix", "gateway"])
def test_the_programs_exit_78_with_one_line_naming_the_key(tmp_path: Path, program: list[str]) -> None:
    done = run(*program, "--data-dir", str(tmp_path / "data"), "--directory-url", "http://127.0.0.1:9",
               "--authority", KEY, "--threshold", "3")
    assert done.returncode == 78, done.stderr
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and "directory_threshold: 1 to 1" in errors[0], done.stderr


async def test_a_drain_the_directory_never_answers_is_logged_and_leave_still_returns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # holds the request open until the client gives up

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    identity = NodeIdentity.generate("mix-9")
    record = NodeRecord("mix-9", "mix", 1, "127.0.0.1", 4000, identity.fingerprint, {1: bytes(32)})
    seen: list[Directory] = []
    link = DirectoryLink(LinkSettings((f"http://127.0.0.1:{port}",), frozenset({bytes.fromhex(KEY)})),
                         identity, lambda: record, seen.append, drain_post_s=0.2)
    caplog.set_level(logging.INFO, logger="nyx.mix.registration")
    async with server, asyncio.timeout(10):  # a guard against a hang, not a speed check
        async with asyncio.TaskGroup() as tg:
            running = tg.create_task(link.run())
            await asyncio.sleep(0.2)
            await link.leave()
        assert running.done() and not seen
    assert any("drain not posted" in r.getMessage() for r in caplog.records), caplog.text


async def test_leave_before_the_link_runs_makes_run_return_at_once() -> None:
    identity = NodeIdentity.generate("mix-9")
    link = DirectoryLink(LinkSettings(("http://127.0.0.1:9",), frozenset({bytes.fromhex(KEY)})), identity,
                         lambda: NodeRecord("mix-9", "mix", 1, "127.0.0.1", 4000, identity.fingerprint), print)
    await link.leave()
    async with asyncio.timeout(5):
        await link.run()
    assert link.agent is None


def test_a_linger_must_fit_inside_the_drain_timeout() -> None:
    table = {"directory_url": "http://a", "directory_authorities": [KEY]}
    assert settings_of({**table, "directory_linger_s": 5}).linger_s == 5.0
    with pytest.raises(ConfigError, match="directory_linger_s.*drain_timeout_s"):
        settings_of({**table, "directory_linger_s": 30})  # the default drain timeout is 10 s
    with pytest.raises(ConfigError, match="directory_linger_s"):
        settings_of({**table, "directory_linger_s": -1})


async def test_leave_lingers_after_the_drain_so_clients_can_move_off() -> None:
    identity = NodeIdentity.generate("mix-9")
    settings = LinkSettings(("http://127.0.0.1:9",), frozenset({bytes.fromhex(KEY)}), linger_s=0.3)
    link = DirectoryLink(settings, identity,
                         lambda: NodeRecord("mix-9", "mix", 1, "127.0.0.1", 4000, identity.fingerprint), print)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await link.leave()
    assert loop.time() - started >= 0.3  # the node still forwards meanwhile: its drain has not begun
