"""QUIC backends: aioquic (pure Python, the default) and qh3 (its fork with a Rust core).

Both expose the same sans-I/O `QuicConnection` (`receive_datagram`, `datagrams_to_send`,
`get_timer`, `handle_timer`, `next_event`) and the same event names, so `QuicTransport` drives
either through this small adapter. What differs, and is handled here:

- Certificate pinning. Neither library has a "trust exactly this fingerprint" mode for aioquic's
  API, and `CERT_NONE` would switch verification off. We keep `CERT_REQUIRED` and extend the TLS
  context of client connections: when the peer's certificate arrives, its SHA-256 fingerprint must
  equal the directory's, and only then does that certificate become the sole trust anchor, so the
  library's own checks (signature chain, validity dates, name = node id) still run against it.
  A mismatch raises the library's `AlertBadCertificate`, which aborts the handshake.
- Retry. Each library's asyncio server does address validation itself; we do it in our own shell
  (admission.py, retry.py) and take only the Retry packet encoder from the library.
- Queue depth. aioquic keeps DATAGRAM frames waiting for congestion window in a deque with no
  bound, and an oversize frame blocks that deque forever; `pending_datagrams` exposes its depth so
  the transport can bound it. qh3's queue lives in Rust and is not visible; the transport bounds
  what it hands over per transmit instead (see quic.py).
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Awaitable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from nyx.transport.certs import fingerprint
from nyx.transport.udp_batch import open_batched_udp

BACKENDS = ("aioquic", "qh3")


class BackendUnavailableError(ImportError):
    """The requested QUIC backend is not installed (qh3 comes with the `nyx[qh3]` extra)."""


@dataclass(frozen=True, slots=True)
class Backend:
    """The pieces of one QUIC library that QuicTransport uses."""

    name: str
    configuration_class: type
    connection_class: type
    events: ModuleType
    window_open: Callable[[Any, int, int], bool]
    pending_datagrams: Callable[[Any], int | None]
    smoothed_rtt: Callable[[Any], float | None]
    load_certificate: Callable[[bytes], Any]
    load_private_key: Callable[[bytes], Any]
    max_datagram_payload: int
    # (version, source_cid, destination_cid, original_destination_cid, retry_token) -> a Retry
    # packet with its integrity tag (RFC 9001 5.8); both libraries name it encode_quic_retry
    encode_retry: Callable[..., bytes]
    # the TLS alert that refused the peer's certificate (pin, chain, dates, name, signature),
    # or None: how a failed handshake is told to be an authentication failure
    authentication_error: Callable[[Any], Exception | None] = lambda conn: None
    # (loop, protocol factory, host, port) -> a bound datagram transport that moves bursts of
    # datagrams per system call (udp_batch.py: recvmmsg with GRO, sendmsg with GSO, `sendto_many`,
    # `datagrams_received(list, addr)`); None: the loop's own, one system call a datagram
    open_udp: Callable[..., Awaitable[tuple[asyncio.DatagramTransport, Any]]] | None = None


AUTHENTICATION_ALERTS = ("AlertBadCertificate", "AlertCertificateExpired", "AlertUnsupportedCertificate",
                         "AlertDecryptError")
"""TLS alerts a client raises when the server's certificate or its proof of the key is refused
(AlertDecryptError: the CertificateVerify signature does not verify). qh3 has no
AlertUnsupportedCertificate."""


def _authentication_alerts(tls: ModuleType) -> tuple[type[Exception], ...]:
    return tuple(getattr(tls, name) for name in AUTHENTICATION_ALERTS if hasattr(tls, name))


def _authentication_error(conn: Any) -> Exception | None:
    """The alert our pinned TLS context recorded (both backends expose the context as `.tls`)."""
    return getattr(getattr(conn, "tls", None), "nyx_auth_error", None)


def available(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def _mismatch(alert: type[Exception], got: str, want: str, server_name: str | None) -> Exception:
    return alert(
        f"certificate fingerprint {got} does not match the directory entry {want} for {server_name}; "
        "the peer is not the node the directory lists (or the directory is stale)"
    )


def _aioquic() -> Backend:
    from aioquic import tls as aq_tls
    from aioquic.quic import events
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.connection import QuicConnection
    from aioquic.quic.packet import encode_quic_retry

    auth_alerts = _authentication_alerts(aq_tls)
    CLIENT_GROUPS = (aq_tls.Group.X25519, aq_tls.Group.SECP256R1)

    class PinnedContext(aq_tls.Context):
        nyx_pin: str = ""
        nyx_auth_error: Exception | None = None

        def handle_message(self, input_data: bytes, output_buf: Any) -> None:
            try:
                super().handle_message(input_data, output_buf)
            except auth_alerts as exc:
                self.nyx_auth_error = exc  # classified by type, whatever its message says
                raise

        def _set_peer_certificate(self, certificate: Any) -> None:
            super()._set_peer_certificate(certificate)
            der = self._peer_certificate.public_bytes(serialization.Encoding.DER)
            got = fingerprint(der)
            if got != self.nyx_pin:
                raise _mismatch(aq_tls.AlertBadCertificate, got, self.nyx_pin, self._server_name)
            self._cadata = self._peer_certificate.public_bytes(serialization.Encoding.PEM)
            self._cafile = self._capath = None

    class PinnedConnection(QuicConnection):
        nyx_pin: str | None = None

        def _initialize(self, peer_cid: bytes) -> None:
            super()._initialize(peer_cid)
            if self.nyx_pin is not None:
                self.tls.__class__ = PinnedContext
                self.tls.nyx_pin = self.nyx_pin  # type: ignore[attr-defined]
                # Offer X25519 (and P-256) only. aioquic's default, key shares for P-256, P-384,
                # X25519 and X448 at once, makes a qh3 server fail its first flight with "packet
                # builder capacity exhausted" (P-256 and P-384 together suffice), which costs a
                # 0.2 s probe timeout and more; see docs/transport.md.
                self.tls._supported_groups = list(CLIENT_GROUPS)

    return Backend(
        name="aioquic",
        configuration_class=QuicConfiguration,
        connection_class=PinnedConnection,
        events=events,
        # aioquic applies its congestion window to DATAGRAM frames itself; we only bound its
        # (otherwise unbounded) pending deque.
        window_open=lambda conn, handed_bytes, limit: len(conn._datagrams_pending) < limit,
        pending_datagrams=lambda conn: len(conn._datagrams_pending),
        smoothed_rtt=_aioquic_rtt,
        load_certificate=x509.load_pem_x509_certificate,
        load_private_key=lambda pem: serialization.load_pem_private_key(pem, password=None),
        max_datagram_payload=1170,
        encode_retry=encode_quic_retry,
        authentication_error=_authentication_error,
    )


def _qh3() -> Backend:
    if not available("qh3"):
        raise BackendUnavailableError("QUIC backend 'qh3' is not installed; install nyx[qh3]")
    from qh3 import tls as q_tls
    from qh3.quic import events
    from qh3.quic.configuration import QuicConfiguration
    from qh3.quic.connection import QuicConnection
    from qh3.quic.packet import encode_quic_retry

    auth_alerts = _authentication_alerts(q_tls)

    class PinnedContext(q_tls.Context):
        nyx_pin: str = ""
        nyx_auth_error: Exception | None = None

        def handle_message(self, input_data: bytes, output_buf: Any, *more: Any, **named: Any) -> Any:
            try:
                return super().handle_message(input_data, output_buf, *more, **named)
            except auth_alerts as exc:
                self.nyx_auth_error = exc  # classified by type, whatever its message says
                raise

        def _process_certificate(self, certificate: Any) -> None:
            super()._process_certificate(certificate)
            got = fingerprint(self._peer_certificate.public_bytes())
            if got != self.nyx_pin:
                raise _mismatch(q_tls.AlertBadCertificate, got, self.nyx_pin, self._server_name)
            der = self._peer_certificate.public_bytes()
            self._cadata = x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)
            self._cafile = self._capath = None

    class PinnedConnection(QuicConnection):
        nyx_pin: str | None = None

        def _create_tls(self, remote_source_cid: bytes | None) -> Any:
            bridge = super()._create_tls(remote_source_cid)
            if self.nyx_pin is not None:
                bridge.tls.__class__ = PinnedContext
                bridge.tls.nyx_pin = self.nyx_pin
            return bridge

    def load_key(pem: bytes) -> Any:
        return q_tls.load_pem_private_key(pem)

    def load_cert(pem: bytes) -> Any:
        return q_tls.load_pem_x509_certificates(pem)[0]

    return Backend(
        name="qh3",
        configuration_class=QuicConfiguration,
        connection_class=PinnedConnection,
        events=events,
        # qh3's core sends every DATAGRAM handed to it at once, past its congestion window, so a
        # burst overruns the receiver's socket buffer; we hand over only what the window allows.
        window_open=_qh3_window_open,
        pending_datagrams=lambda conn: None,
        smoothed_rtt=_qh3_rtt,
        load_certificate=load_cert,
        load_private_key=load_key,
        max_datagram_payload=1170,
        encode_retry=encode_quic_retry,
        authentication_error=_authentication_error,
        open_udp=open_batched_udp,
    )


def _aioquic_rtt(conn: Any) -> float | None:
    loss = conn._loss
    return float(loss._rtt_smoothed) if loss._rtt_initialized else None


def _qh3_window_open(conn: Any, handed_bytes: int, limit: int) -> bool:
    core = conn._core
    if core is None:
        return False
    return core.bytes_in_flight + handed_bytes < core.congestion_window


def _qh3_rtt(conn: Any) -> float | None:
    core = conn._core
    rtt = core.smoothed_rtt if core is not None else None
    return float(rtt) if rtt else None


def load_backend(name: str) -> Backend:
    """The backend called `name` ("aioquic" or "qh3"); raises a clear error otherwise."""
    if name == "aioquic":
        return _aioquic()
    if name == "qh3":
        return _qh3()
    raise ValueError(f"unknown QUIC backend {name!r}; choose one of {BACKENDS}")
