"""A flood of forged QUIC Initials must not lock real clients out (real sockets, both backends).

Each forged datagram is what a stateless attacker can send for free: 1,200 bytes shaped like a
QUIC v1 client Initial (long header, random 8-byte DCID and SCID, no token, garbage payload) that
never decrypts. The flood is paced by what the listener has read, so every datagram reaches it
(the kernel's socket buffer would otherwise drop most of a burst and hide the cost).
"""

from __future__ import annotations

import asyncio
import os
import socket
import time

import pytest

from nyx.transport.backends import available
from nyx.transport.certs import NodeIdentity
from nyx.transport.quic import QuicTransport
from tests.quic_pacing import until

BACKENDS = [
    "aioquic",
    pytest.param("qh3", marks=pytest.mark.skipif(not available("qh3"), reason="qh3 not installed")),
]
DEFAULT_MAX_HALF_OPEN = 256  # AdmissionLimits().max_half_open (kept literal so this file runs on any version)
BATCH = 100


@pytest.fixture(scope="module")
def identities() -> dict[str, NodeIdentity]:
    return {name: NodeIdentity.generate(name) for name in ("a", "b")}


def forged_initial(token: bytes = b"") -> bytes:
    """1,200 bytes shaped like a QUIC v1 client Initial that will never decrypt."""
    head = bytes([0xC3]) + (1).to_bytes(4, "big")
    head += bytes([8]) + os.urandom(8) + bytes([8]) + os.urandom(8)
    head += bytes([len(token)]) + token if len(token) < 64 else bytes([0x40 | len(token) >> 8, len(token) & 0xFF]) + token
    rest = 1200 - len(head) - 2
    return head + bytes([0x40 | rest >> 8, rest & 0xFF]) + os.urandom(rest)


async def flood(target: QuicTransport, count: int, source_host: str = "127.0.0.1") -> int:
    """Send `count` forged Initials to `target` from one socket; return the peak number of
    inbound connections it held (sampled after every batch)."""
    peak = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source_host, 0))
        sent = 0
        while sent < count:
            base = target.udp_received
            batch = min(BATCH, count - sent)
            for _ in range(batch):
                sock.sendto(forged_initial(), (target.host, target.port))
            sent += batch
            assert await until(lambda: target.udp_received >= base + batch, timeout_s=10)
            peak = max(peak, int(target.metric_values()["transport_inbound_connections"]))
    return peak


async def exchange_within(a: QuicTransport, b: QuicTransport, got: list[bytes], budget_s: float) -> float:
    """Connect a to b and deliver one datagram within `budget_s` (a protocol requirement: a real
    client must get through at once, not after the flood's state times out). Returns seconds."""
    start = time.monotonic()
    a.add_peer("b", b.address)
    await asyncio.wait_for(a.connect("b"), budget_s)
    a.send("b", b"real client")
    assert await until(lambda: got == [b"real client"], timeout_s=budget_s - (time.monotonic() - start))
    return time.monotonic() - start


@pytest.mark.parametrize("backend", BACKENDS)
async def test_real_client_gets_through_right_after_a_flood_of_forged_initials(backend, identities):
    got: list[bytes] = []
    async with QuicTransport("b", identities["b"], backend=backend) as b, QuicTransport(
        "a", identities["a"], backend=backend
    ) as a:
        b.set_handler(lambda peer, packet: got.append(packet))
        peak = await flood(b, 5000)
        await exchange_within(a, b, got, budget_s=1.0)
        assert peak <= DEFAULT_MAX_HALF_OPEN
        # every connection left (the established one, any half-open ones) is on a timer
        assert all(conn.timer is not None for conn in b.endpoint.inbound)
        assert b.endpoint.handshake_timer is not None or not any(b.admission.is_half_open(c) for c in b.endpoint.inbound)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_half_open_budget_evicts_oldest_and_expires_on_both_backends(backend, identities):
    from nyx.transport.admission import AdmissionLimits

    # no Retry and no per-source limit: the global budget and the timeout alone must hold
    limits = AdmissionLimits(max_half_open=64, max_half_open_per_source=100_000, retry_above=None, handshake_timeout_s=0.5)
    got: list[bytes] = []
    async with QuicTransport("b", identities["b"], backend=backend, admission=limits) as b, QuicTransport(
        "a", identities["a"], backend=backend
    ) as a:
        b.set_handler(lambda peer, packet: got.append(packet))
        peak = await flood(b, 1000)
        assert peak <= 64
        assert b.admission.evicted_full >= 1000 - 64
        await exchange_within(a, b, got, budget_s=1.0)
        # the handshake timeout empties the half-open table, whatever timers the backend arms
        assert await until(lambda: b.admission.half_open == 0, timeout_s=1.5)
        values = b.metric_values()
        assert values["transport_inbound_half_open"] == 0
        assert values["transport_inbound_connections"] == 1  # the real client, established
        assert values["transport_half_open_expired_total"] >= 1
        assert len(b.endpoint.by_cid) == len(next(iter(b.endpoint.inbound)).cids)  # no routing entry left behind


@pytest.mark.parametrize("backend", BACKENDS)
async def test_one_source_holds_at_most_its_own_share_of_half_open_state(backend, identities):
    from nyx.transport.admission import AdmissionLimits

    limits = AdmissionLimits(max_half_open_per_source=8, retry_above=None)
    got: list[bytes] = []
    async with QuicTransport("b", identities["b"], backend=backend, admission=limits) as b, QuicTransport(
        "a", identities["a"], backend=backend
    ) as a:
        b.set_handler(lambda peer, packet: got.append(packet))
        peak = await flood(b, 500, source_host="127.0.0.2")
        assert peak <= 8
        assert b.admission.half_open_from("127.0.0.2") == 8
        assert b.metric_values()["transport_half_open_source_evicted_total"] == 500 - 8
        await exchange_within(a, b, got, budget_s=1.0)  # from 127.0.0.1: untouched by the limit


@pytest.mark.parametrize("backend", BACKENDS)
async def test_retry_engages_under_load_and_a_real_client_still_gets_through(backend, identities):
    from nyx.transport.admission import AdmissionLimits

    limits = AdmissionLimits(max_half_open_per_source=100_000, retry_above=32)
    got: list[bytes] = []
    async with QuicTransport("b", identities["b"], backend=backend, admission=limits) as b, QuicTransport(
        "a", identities["a"], backend=backend
    ) as a:
        b.set_handler(lambda peer, packet: got.append(packet))
        peak = await flood(b, 2000)
        assert peak <= 32  # past the threshold every forged Initial costs a Retry, not state
        assert b.admission.retries == 2000 - 32
        retries = b.admission.retries
        await exchange_within(a, b, got, budget_s=1.0)
        # the real client was asked, and answered (qh3's post-quantum ClientHello spans two
        # Initials, and each gets a Retry; the client follows the first and ignores the second)
        assert retries + 1 <= b.admission.retries <= retries + 2
        assert b.metric_values()["transport_retry_sent_total"] == b.admission.retries


@pytest.mark.parametrize("backend", BACKENDS)
async def test_forged_retry_tokens_are_counted_drops(backend, identities):
    async with QuicTransport("b", identities["b"], backend=backend) as b:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for token in (b"\x00", os.urandom(40), os.urandom(300)):
                sock.sendto(forged_initial(token), (b.host, b.port))
        assert await until(lambda: b.retry_tokens.rejected == 3)
        assert b.metric_values()["transport_retry_token_rejected_total"] == 3
        assert b.admission.half_open == 0


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def _measure(backend: str) -> None:
    """Figures for docs/transport.md: `PYTHONPATH=. python tests/test_transport_flood.py` (Linux)."""
    from nyx.transport.admission import AdmissionLimits

    ids = {name: NodeIdentity.generate(name) for name in ("a", "b")}
    # 1. memory per half-open connection and time to evict: no Retry, room for the whole flood
    n = 3000
    limits = AdmissionLimits(max_half_open=n, max_half_open_per_source=n, retry_above=None, handshake_timeout_s=2.0)
    async with QuicTransport("b", ids["b"], backend=backend, admission=limits) as b:
        await flood(b, 200)  # warm up allocators and code paths
        assert await until(lambda: b.admission.half_open == 0, timeout_s=5)
        before, start = _rss_bytes(), time.perf_counter()
        await flood(b, n)
        took = time.perf_counter() - start
        grown = _rss_bytes() - before
        await until(lambda: b.admission.half_open == 0, timeout_s=10)
        gone_s = time.perf_counter() - start - took
        print(
            f"{backend}: no limits: {n} forged Initials in {took:.2f} s ({took / n * 1e6:.0f} us each), "
            f"RSS +{grown / 2**20:.1f} MiB = {grown / n / 1024:.1f} KiB per half-open connection; "
            f"all dropped {gone_s:.2f} s after the flood (handshake_timeout_s=2)"
        )
    # 2. defaults: 5,000 forged Initials from one source, then a real client
    got: list[bytes] = []
    async with QuicTransport("b", ids["b"], backend=backend) as b, QuicTransport("a", ids["a"], backend=backend) as a:
        b.set_handler(lambda peer, packet: got.append(packet))
        before, start = _rss_bytes(), time.perf_counter()
        peak = await flood(b, 5000)
        took = time.perf_counter() - start
        grown = _rss_bytes() - before
        connect_s = await exchange_within(a, b, got, budget_s=1.0)
        print(
            f"{backend}: defaults: 5000 forged Initials in {took:.2f} s ({took / 5000 * 1e6:.0f} us each), "
            f"peak inbound {peak}, Retries {b.admission.retries}, RSS +{grown / 2**20:.1f} MiB; "
            f"real client connected and delivered in {connect_s * 1000:.1f} ms"
        )
    # 3. the global Retry threshold (one source may use the whole budget)
    got = []
    limits = AdmissionLimits(max_half_open_per_source=100_000)
    async with QuicTransport("b", ids["b"], backend=backend, admission=limits) as b, QuicTransport(
        "a", ids["a"], backend=backend
    ) as a:
        b.set_handler(lambda peer, packet: got.append(packet))
        peak = await flood(b, 5000)
        connect_s = await exchange_within(a, b, got, budget_s=1.0)
        print(
            f"{backend}: per-source limit off: peak inbound {peak}, Retries {b.admission.retries}; "
            f"real client in {connect_s * 1000:.1f} ms"
        )


if __name__ == "__main__":
    import sys

    for name in sys.argv[1:] or ["aioquic", "qh3"]:
        asyncio.run(_measure(name))
