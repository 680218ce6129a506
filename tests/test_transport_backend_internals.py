"""The aioquic / qh3 internals nyx.transport.backends relies on are still there.

backends.py pins certificates, bounds DATAGRAM queues, reads RTTs, classifies authentication
failures and chooses the aioquic client's key-share groups through private attributes (the
libraries have no public API for them). pyproject.toml pins the versions these were tested on;
this test fails loudly, naming the attribute, when an upgrade moves one.
"""

from __future__ import annotations

import importlib
import importlib.metadata

import pytest

from nyx.transport.backends import available, load_backend
from nyx.transport.certs import NodeIdentity
from nyx.transport.driver import ConnectionFactory
from nyx.transport.base import PeerAddress
from nyx.transport.tickets import ClientTicketCache

BACKENDS = [
    "aioquic",
    pytest.param("qh3", marks=pytest.mark.skipif(not available("qh3"), reason="qh3 not installed")),
]

# (what holds it, attribute) per backend; "tls" is the client's TLS context, "conn" the client
# QuicConnection after its handshake, "Context" / "QuicConnection" the library classes.
RELIED_ON = {
    "aioquic": [
        ("Context", "_set_peer_certificate"), ("Context", "handle_message"), ("QuicConnection", "_initialize"),
        ("tls", "_peer_certificate"), ("tls", "_cadata"), ("tls", "_cafile"), ("tls", "_capath"),
        ("tls", "_server_name"), ("tls", "_supported_groups"),
        ("conn", "tls"), ("conn", "_datagrams_pending"), ("conn", "_loss"),
        ("conn._loss", "_rtt_smoothed"), ("conn._loss", "_rtt_initialized"),
    ],
    "qh3": [
        ("Context", "_process_certificate"), ("Context", "handle_message"), ("QuicConnection", "_create_tls"),
        ("tls", "_peer_certificate"), ("tls", "_cadata"), ("tls", "_cafile"), ("tls", "_capath"),
        ("tls", "_server_name"),
        ("conn", "tls"), ("conn", "_core"),
        ("conn._core", "bytes_in_flight"), ("conn._core", "congestion_window"), ("conn._core", "smoothed_rtt"),
        ("QuicConnection", "receive_many_datagrams"),  # driver.receive_many, for udp_batch.py's bursts
    ],
}


def handshake_in_memory(backend_name: str, server_identity: NodeIdentity, pin: str, server_backend: str | None = None):
    """A client and a server connection of `backend_name`, datagrams passed by hand until the
    client's handshake completes (or fails). Returns (client, server, events seen by the client)."""
    backend = load_backend(backend_name)
    client_id = NodeIdentity.generate("client")
    client = ConnectionFactory(backend, client_id, 30.0, False, ClientTicketCache()).client(
        server_identity.node_id, PeerAddress("127.0.0.1", 2, pin)
    )
    server_factory = ConnectionFactory(
        load_backend(server_backend or backend_name), server_identity, 30.0, False, ClientTicketCache()
    )
    now = 1000.0
    client.connect(("127.0.0.1", 2), now=now)
    server, events = None, []
    for _ in range(200):
        moved = 0
        for data, _ in client.datagrams_to_send(now=now):
            moved += 1
            if server is None:
                server = server_factory.server(data[6 : 6 + data[5]], None)
            server.receive_datagram(data, ("127.0.0.1", 1), now=now)
        try:  # guarded as the driver guards it: a backend error costs a transmit turn
            replies = server.datagrams_to_send(now=now) if server is not None else []
        except Exception as exc:
            events.append(f"server error: {exc}")
            replies = []
        for data, _ in replies:
            moved += 1
            client.receive_datagram(data, ("127.0.0.1", 2), now=now)
        event = client.next_event()
        while event is not None:
            events.append(type(event).__name__)
            event = client.next_event()
        if "HandshakeCompleted" in events or "ConnectionTerminated" in events:
            break
        if not moved:  # nothing in flight: advance the clock to the next timer, as the loop would
            timers = [t for t in (client.get_timer(), server.get_timer() if server else None) if t is not None]
            now = max(now, min(timers)) if timers else now + 0.01
            for conn in (client, server):
                if conn is not None and conn.get_timer() is not None and conn.get_timer() <= now:
                    conn.handle_timer(now=now)
    events.append(f"at {now - 1000.0:.2f} s")
    return client, server, events


def _resolve(backend_name: str, holder: str, conn):
    if holder == "Context":
        return importlib.import_module(f"{backend_name}.tls").Context
    if holder == "QuicConnection":
        return importlib.import_module(f"{backend_name}.quic.connection").QuicConnection
    obj = conn.tls if holder == "tls" else conn
    for part in holder.split(".")[1:]:
        obj = getattr(obj, part)
    return obj




@pytest.mark.parametrize("backend", BACKENDS)
def test_every_private_attribute_backends_py_uses_is_still_there(backend):
    server = NodeIdentity.generate("server")
    conn, _, events = handshake_in_memory(backend, server, server.fingerprint)
    assert "HandshakeCompleted" in events, f"{backend}: in-memory handshake did not complete: {events}"
    version = importlib.metadata.version(backend)
    missing = []
    for holder, attribute in RELIED_ON[backend]:
        try:
            obj = _resolve(backend, holder, conn)
        except AttributeError as exc:
            missing.append(f"{holder} ({exc})")
            continue
        if not hasattr(obj, attribute):
            missing.append(f"{holder}.{attribute}")
    if missing:
        pytest.fail(
            f"{backend} {version} no longer has {', '.join(missing)}, which nyx/transport/backends.py relies on "
            "(certificate pinning, queue bounds, RTT, key-share groups). Adapt backends.py, then move the "
            "version pin in pyproject.toml.",
            pytrace=False,
        )
    load = load_backend(backend)
    assert load.smoothed_rtt(conn) is not None, f"{backend} {version}: smoothed_rtt reads nothing"
    assert load.window_open(conn, 0, 1024), f"{backend} {version}: window_open is shut on an idle connection"


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_wrong_pin_is_classified_as_an_authentication_error_by_type(backend):
    server = NodeIdentity.generate("server")
    wrong = NodeIdentity.generate("other").fingerprint
    conn, _, events = handshake_in_memory(backend, server, wrong)
    assert "HandshakeCompleted" not in events
    error = load_backend(backend).authentication_error(conn)
    alerts = importlib.import_module(f"{backend}.tls")
    assert isinstance(error, alerts.AlertBadCertificate), f"{backend}: the pinned context recorded {error!r}"


def test_the_aioquic_client_offers_only_x25519_and_p256():
    from aioquic.tls import Group

    server = NodeIdentity.generate("server")
    conn, _, _ = handshake_in_memory("aioquic", server, server.fingerprint)
    assert conn.tls._supported_groups == [Group.X25519, Group.SECP256R1]


@pytest.mark.skipif(not available("qh3"), reason="qh3 not installed")
def test_an_aioquic_client_and_a_qh3_server_finish_in_one_round_trip():
    # aioquic's default key shares (P-256 with P-384) made qh3 2.1.0 lose its first flight and
    # the handshake wait for the client's probe timeouts (0.2 s and up); see docs/transport.md.
    server = NodeIdentity.generate("server")
    _, _, events = handshake_in_memory("aioquic", server, server.fingerprint, server_backend="qh3")
    assert "HandshakeCompleted" in events, events
    assert float(events[-1].split()[1]) < 0.1, events  # the probe timeout it used to wait for is 0.2 s


@pytest.mark.skipif(not available("qh3"), reason="qh3 not installed")
def test_the_quinn_udp_socket_wrapper_udp_batch_uses_is_still_there():
    """udp_batch.py drives `qh3._hazmat.UdpSocketState` (a private module with a typed stub):
    recv, send, max_gso_segments, disable_gso; and a closed socket's port stays taken until the
    wrapper is dropped (it holds a duplicate descriptor), which udp_batch.py relies on knowing."""
    import socket

    from qh3._hazmat import UdpSocketState

    version = importlib.metadata.version("qh3")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        for sock in (rx, tx):
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
        rx_state, tx_state = UdpSocketState(rx.fileno()), UdpSocketState(tx.fileno())
        for attribute in ("recv", "send", "max_gso_segments", "disable_gso"):
            assert hasattr(tx_state, attribute), f"qh3 {version}: UdpSocketState.{attribute} is gone; adapt udp_batch.py"
        assert tx_state.send([b"x" * 1200] * 3 + [b"y"], rx.getsockname()) == 4
        got: list[bytes] = []
        for _ in range(100):
            got += [data for data, _ in rx_state.recv()]
            if len(got) >= 4:
                break
        assert got == [b"x" * 1200] * 3 + [b"y"], f"qh3 {version}: UdpSocketState.recv split the batch as {got!r}"
        tx_state.disable_gso()
        assert tx_state.send([b"z"], rx.getsockname()) == 1
