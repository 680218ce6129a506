"""The UDP buffer sizing of sockbuf.py on real sockets: the kernel's cap is detected, lifted where
the process may force it, and otherwise named in one warning with the sysctl that lifts it."""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from nyx.node import NodeRuntime, parse_config
from nyx.node.config import NodeConfig
from nyx.transport.backends import available
from nyx.transport.certs import NodeIdentity
from nyx.transport.quic import QuicTransport
from nyx.transport.sockbuf import REPORTED_PER_BYTE_ASKED, SO_RCVBUFFORCE, _force_options, cap_message, size_udp_buffers

RMEM_MAX = Path("/proc/sys/net/core/rmem_max")
WMEM_MAX = Path("/proc/sys/net/core/wmem_max")
pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the caps read here are Linux's sysctls")


@pytest.fixture
def udp() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    yield sock
    sock.close()


def above_the_cap(factor: float = 4.0) -> int:
    """A request the kernel's unprivileged cap refuses, whatever this machine's sysctl says."""
    return int(factor * max(int(RMEM_MAX.read_text()), int(WMEM_MAX.read_text())))


def test_a_request_within_the_cap_is_granted_and_not_reported(udp: socket.socket) -> None:
    wanted = int(RMEM_MAX.read_text()) // 4
    buffers = size_udp_buffers(udp, wanted, force=False)
    assert min(buffers.receive, buffers.send) >= wanted * REPORTED_PER_BYTE_ASKED  # Linux: twice, for its accounting
    assert not buffers.capped and not buffers.forced


@pytest.mark.parametrize("factor", [4.0, 1.5])  # 1.5: Linux reports twice the cap, more than was asked
def test_a_capped_request_is_detected_and_named_with_the_sysctl(udp: socket.socket, factor: float) -> None:
    wanted = above_the_cap(factor)
    buffers = size_udp_buffers(udp, wanted, force=False)
    assert buffers.capped and buffers.receive < wanted * REPORTED_PER_BYTE_ASKED
    message = cap_message("mix-1", buffers)
    assert message is not None and message.startswith("mix-1: ")
    assert f"sysctl -w net.core.rmem_max={wanted} net.core.wmem_max={wanted}" in message
    assert cap_message("mix-1", size_udp_buffers(udp, 4096, force=False)) is None  # granted: nothing to say


def may_force() -> bool:
    """Whether this process holds CAP_NET_ADMIN (root, unless its capabilities were dropped)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 4096)
        except OSError:
            return False
    return True


def test_the_cap_is_forced_only_where_the_process_is_privileged(udp: socket.socket) -> None:
    wanted = above_the_cap()
    buffers = size_udp_buffers(udp, wanted)
    if _force_options() and may_force():  # CAP_NET_ADMIN (a root container, CI)
        assert buffers.forced and not buffers.capped and buffers.receive >= wanted * REPORTED_PER_BYTE_ASKED
    else:  # EPERM: the defaults stay and the caller warns
        assert buffers.capped and not buffers.forced


@pytest.mark.parametrize("backend", ["aioquic", pytest.param("qh3", marks=pytest.mark.skipif(
    not available("qh3"), reason="qh3 not installed"))])
async def test_a_transport_reports_what_its_socket_was_granted(backend: str) -> None:
    identity = NodeIdentity.generate("a")
    async with QuicTransport("a", identity, backend=backend, socket_buffer_bytes=1 << 20) as a:
        buffers = a.socket_buffers
        assert buffers is not None and buffers.wanted == 1 << 20
        sock = a.endpoint.udp.get_extra_info("socket") if a.endpoint.udp is not None else None
        assert sock is not None
        assert buffers.receive == sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) > 0


async def test_a_node_runtime_warns_its_operator_once_when_the_cap_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # An unprivileged process (no SO_RCVBUFFORCE) on this machine's cap, whatever that is.
    monkeypatch.setattr("nyx.transport.sockbuf._force_options", lambda: {})
    config = parse_config({"node_id": "mix-7", "data_dir": str(tmp_path), "metrics": {"port": -1}})
    wanted = above_the_cap()

    def transport(cfg: NodeConfig) -> QuicTransport:
        return QuicTransport(cfg.node_id, NodeIdentity.generate(cfg.node_id), socket_buffer_bytes=wanted)

    runtime = NodeRuntime(config, transport)

    async def idle(rt: NodeRuntime) -> None:
        await asyncio.Event().wait()

    with caplog.at_level(logging.INFO):
        async with asyncio.TaskGroup() as tg:
            run = tg.create_task(runtime.run(idle, handle_signals=False))
            while runtime.address is None:
                await asyncio.sleep(0.01)
            runtime.stop(drain=False)
            await run
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "sysctl" in r.message]
    assert len(warnings) == 1 and warnings[0].name == "nyx.node.runtime" and "mix-7" in warnings[0].message
    # the transport itself said it at INFO only: an embedding application is not shouted at
    assert [r.levelno for r in caplog.records if r.name == "nyx.transport.quic" and "sysctl" in r.message] == [
        logging.INFO
    ]
