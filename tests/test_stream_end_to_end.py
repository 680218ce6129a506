"""The product's main path over real QUIC between real processes: `nyx.Client` and `curl` through
a SOCKS5 client process, three layers of `python -m nyx.mix` and two `python -m nyx.stream
gateway` processes, all started by `nyx.testnet.Testnet` on 127.0.0.1. (The same path in one
process over SimTransport is tests/test_stream_end_to_end_sim.py.)

One testnet serves the whole module (starting one costs a few seconds of interpreters), with a
local HTTP server on its exits' allowlist as `127.0.0.1:PORT` (an IP-literal pattern may be a
private address; a name pattern would need `allow_private`).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import warnings
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

import nyx
from nyx.cover import CoverConfig, RatePolicy
from nyx.cover.slots import Kind
from nyx.stream.socks import SocksReply
from nyx.testnet import Testnet
from nyx.testnet.probe import socks5_connect_reply

pytestmark = pytest.mark.asyncio(loop_scope="module")

PAGE = os.urandom(100_000)
# Cover on: a client sends at its cover rate whether or not it has data, so its throughput is the
# rate of payload slots (`RatePolicy.base_pps`, which the controller raises under sustained load
# only slowly). 1 MiB is ~2,100 packets of stream data one way plus ACKs and SURB refills, some
# 4,000 packets: at the default 5 slots/s that is over 10 minutes; at 300/s it is 10-20 s on 2
# cores, and still exercises the real schedule (payload slots, the backlog, drop and loop cover).
CLIENT_COVER = CoverConfig(policy=RatePolicy(base_pps=300.0))
SOCKS_COVER_PPS = 200.0  # the SOCKS client's rate: the 100 KB page in a few seconds
CURL_PROXY_ERROR = 97  # CURLE_PROXY: the SOCKS5 proxy refused the CONNECT (curl >= 7.73)


async def _serve_page(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A minimal HTTP/1.1 server: any request gets PAGE, then the connection closes."""
    try:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                     b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(PAGE) + PAGE)
        await writer.drain()
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        pass
    finally:
        writer.close()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def http_port() -> AsyncIterator[int]:
    server = await asyncio.start_server(_serve_page, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def testnet(http_port: int) -> AsyncIterator[Testnet]:
    net = Testnet(layers=3, mixes_per_layer=1, gateways=2, allow=[f"127.0.0.1:{http_port}"], check_exit=False)
    async with net:
        yield net
    failed = [e.describe() for e in net.stop_summary if e.failed]
    if failed:  # this module tests the data path; a node that fails to stop is reported, not hidden
        warnings.warn(f"testnet children failed at stop: {failed} (logs kept in {net.workdir})", stacklevel=1)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def socks5(testnet: Testnet) -> tuple[str, int]:
    """The SOCKS5 client process, started only when a test needs it: its cover traffic loads
    every node, and the 1 MiB test runs before it on 2 cores."""
    return await testnet.start_socks5("127.0.0.1:0", cover_rate=SOCKS_COVER_PPS)


async def _read_echo(reader: asyncio.StreamReader, size: int, budget_s: float, client: nyx.Client) -> bytes:
    """`size` bytes within `budget_s`; a stall fails with how far it got (a timeout alone would
    say nothing, and closing the client on cancellation could raise over it)."""
    got = bytearray()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget_s
    while len(got) < size:
        try:
            chunk = await asyncio.wait_for(reader.read(size - len(got)), max(0.0, deadline - loop.time()))
        except TimeoutError:
            pytest.fail(f"the echo stalled: {len(got)} of {size} bytes back after {budget_s:g} s "
                        f"(client packets sent {client.packets_sent}, drops {dict(client.drops)})")
        assert chunk, f"the echo stream ended after {len(got)} of {size} bytes"
        got += chunk
    return bytes(got)


async def test_a_client_with_cover_echoes_1_mib_through_three_mix_processes_and_two_gateways(testnet: Testnet) -> None:
    entry, exit = testnet.gateway_ids
    payload = os.urandom(1 << 20)
    async with asyncio.timeout(150):
        async with nyx.Client(testnet.directory_path, gateway=entry, exit=exit, cover=CLIENT_COVER) as client:
            assert client.entry.node_id != client.choose_exit()
            reader, writer = await client.open_connection("echo")

            async def send() -> None:
                writer.write(payload)
                await writer.drain()
                writer.write_eof()

            sending = asyncio.create_task(send())
            echoed = await _read_echo(reader, len(payload), 100, client)
            await sending
            assert echoed == payload
            assert await reader.read() == b""
            emitter = client.emitter
            assert emitter is not None and emitter.core is not None  # cover was on: every packet took a slot
            sent = emitter.core.sent
            assert sent[Kind.REAL] > 1000 and sent[Kind.LOOP] + sent[Kind.DROP] > 0


@pytest.mark.skipif(shutil.which("curl") is None, reason="the curl binary is not installed")
async def test_curl_through_the_socks5_client_process_fetches_a_local_page(socks5: tuple[str, int],
                                                                            http_port: int) -> None:
    host, port = socks5
    curl = await asyncio.create_subprocess_exec(
        "curl", "--silent", "--show-error", "--max-time", "90", "--socks5-hostname", f"{host}:{port}",
        f"http://127.0.0.1:{http_port}/", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    body, errors = await asyncio.wait_for(curl.communicate(), 120)
    assert curl.returncode == 0, errors.decode(errors="replace")
    assert body == PAGE


async def test_a_destination_off_the_allowlist_gets_not_allowed_by_ruleset(socks5: tuple[str, int],
                                                                          http_port: int) -> None:
    host, port = socks5
    off_list = http_port + 1 if http_port < 65535 else http_port - 1
    reply = await socks5_connect_reply(host, port, "127.0.0.1", off_list, timeout_s=60)
    assert reply == SocksReply.NOT_ALLOWED == 0x02
    if shutil.which("curl") is None:
        pytest.skip("the raw SOCKS5 reply is checked; curl's exit code is not (the curl binary is not installed)")
    curl = await asyncio.create_subprocess_exec(
        "curl", "--silent", "--max-time", "60", "--socks5-hostname", f"{host}:{port}",
        f"http://127.0.0.1:{off_list}/", stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    assert await asyncio.wait_for(curl.wait(), 90) == CURL_PROXY_ERROR
