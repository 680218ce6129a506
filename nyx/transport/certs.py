"""Node TLS identities: a self-signed certificate per node, pinned by its SHA-256 fingerprint.

There is no CA in Nyx. The directory lists each node's certificate fingerprint, and a link is
accepted only when the peer presents exactly that certificate. So a certificate only has to be
well-formed and signed by its own key; its name is the node id so that the TLS name check has
something honest to compare.
"""

from __future__ import annotations

import datetime
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

CERT_LIFETIME_DAYS = 3650
"""Pinned certificates are replaced by publishing a new fingerprint, not by expiry."""


class CertificateError(Exception):
    """A certificate or key file is missing, malformed, or unsafe to use."""


def fingerprint(certificate_der: bytes) -> str:
    """SHA-256 of the DER certificate as lowercase hex: the value the directory publishes."""
    return hashlib.sha256(certificate_der).hexdigest()


def normalize_fingerprint(value: str) -> str:
    """Accept `aa:bb:..` or `AABB..`; return 64 lowercase hex digits or raise CertificateError."""
    cleaned = value.replace(":", "").strip().lower()
    if len(cleaned) != 64 or any(c not in "0123456789abcdef" for c in cleaned):
        raise CertificateError(f"a certificate fingerprint is 64 hex digits (SHA-256), got {value!r}")
    return cleaned


@dataclass(frozen=True, slots=True)
class NodeIdentity:
    """A node's TLS certificate and private key, both PEM, plus the fingerprint peers pin."""

    node_id: str
    certificate_pem: bytes
    private_key_pem: bytes

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.certificate_pem)

    @property
    def certificate_der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.certificate_der)

    @classmethod
    def generate(cls, node_id: str) -> NodeIdentity:
        """A fresh ECDSA P-256 key and a self-signed certificate naming `node_id` (DNS SAN)."""
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_id)])
        now = datetime.datetime.now(datetime.timezone.utc)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=CERT_LIFETIME_DAYS))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(node_id)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        return cls(
            node_id=node_id,
            certificate_pem=certificate.public_bytes(serialization.Encoding.PEM),
            private_key_pem=key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )

    def save(self, certificate_path: Path, key_path: Path) -> None:
        """Write the certificate (0644) and the key (0600, created with that mode, never wider)."""
        certificate_path.write_bytes(self.certificate_pem)
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, self.private_key_pem)
        finally:
            os.close(fd)

    @classmethod
    def load(cls, node_id: str, certificate_path: Path, key_path: Path) -> NodeIdentity:
        """Read a saved identity; refuse a key file that group or others can read."""
        check_private_file(key_path)
        try:
            certificate_pem = certificate_path.read_bytes()
            private_key_pem = key_path.read_bytes()
            x509.load_pem_x509_certificate(certificate_pem)
            serialization.load_pem_private_key(private_key_pem, password=None)
        except (OSError, ValueError) as exc:
            raise CertificateError(f"cannot load TLS identity from {certificate_path}, {key_path}: {exc}") from exc
        return cls(node_id=node_id, certificate_pem=certificate_pem, private_key_pem=private_key_pem)


def check_private_file(path: Path) -> None:
    """Raise CertificateError unless `path` exists and only its owner may read or write it."""
    try:
        mode = path.stat().st_mode & 0o777
    except OSError as exc:
        raise CertificateError(f"key file {path} is not readable: {exc}") from exc
    if mode & 0o077:
        raise CertificateError(
            f"key file {path} has mode {mode:04o}; group or others may access it. "
            f"Run `chmod 600 {path}` (and consider the key compromised if others could read it)."
        )
