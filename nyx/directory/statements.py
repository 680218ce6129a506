"""What a node says to the directory, signed with the node's own TLS key.

A node registers its record, heartbeats, drains and reports loop-cover failures of other nodes by
posting a *statement*. Every statement is signed by the private key of the node's TLS certificate,
the same key every peer pins by fingerprint, so

- a registration proves possession of the key behind `record.fingerprint` (nobody can publish a
  record naming another node's certificate, which would divert its traffic or frame it), and
- heartbeats, drains and reports are checked against the certificate pinned at registration
  (nobody can drain another node out of the next document, or keep a dead one in it).

Wire form (JSON, the body of a POST):

    {"statement": "<base64 of the canonical statement JSON>", "signature": "<base64>"}

and the statement is canonical JSON (sorted keys, no spaces) of

    {"kind": "register" | "heartbeat" | "drain" | "report", "node_id": ..., "issued_at_ms": <unix ms>,
     "record": {...}          (register only: a NodeRecord, see records.py)
     "certificate": "<b64>"   (register only: the DER certificate)
     "subject": "<node id>"}  (report only: the node whose loops failed)

`issued_at_ms` must be within `max_age_s` of the directory's clock and newer than the last statement
accepted from that node, so a captured statement cannot be replayed (a replayed drain would evict a
node; a replayed heartbeat would keep a dead node in the document).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from nyx.directory.records import DirectoryError, NodeRecord, node_id_problem
from nyx.transport.certs import fingerprint

KINDS = ("register", "heartbeat", "drain", "report")
MAX_STATEMENT_BYTES = 64 * 1024  # a gateway record with X-Wing and ML-KEM keys is about 6 KB
MAX_AGE_S = 300.0


class StatementError(DirectoryError):
    """A statement was refused; the message says why (the HTTP service answers it with 4xx), and
    `reason` is a short stable token for counting (malformed, stale, certificate, unregistered,
    signature, replay)."""

    def __init__(self, message: str, reason: str = "malformed") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Statement:
    kind: str
    node_id: str
    issued_at_ms: int
    record: NodeRecord | None = None
    certificate_der: bytes | None = None
    subject: str | None = None

    def canonical(self) -> bytes:
        body: dict[str, Any] = {"kind": self.kind, "node_id": self.node_id, "issued_at_ms": self.issued_at_ms}
        if self.record is not None:
            body["record"] = self.record.to_json()
        if self.certificate_der is not None:
            body["certificate"] = base64.b64encode(self.certificate_der).decode()
        if self.subject is not None:
            body["subject"] = self.subject
        return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def sign_statement(statement: Statement, private_key_pem: bytes) -> bytes:
    """The POST body for `statement`, signed with the node's TLS private key (PEM, as
    `nyx.transport.certs.NodeIdentity` holds it)."""
    key = serialization.load_pem_private_key(private_key_pem, password=None)
    raw = statement.canonical()
    if isinstance(key, ec.EllipticCurvePrivateKey):
        signature = key.sign(raw, ec.ECDSA(hashes.SHA256()))
    elif isinstance(key, ed25519.Ed25519PrivateKey):
        signature = key.sign(raw)
    else:
        raise StatementError(f"a node key must be ECDSA or Ed25519, not {type(key).__name__}")
    return json.dumps(
        {"statement": base64.b64encode(raw).decode(), "signature": base64.b64encode(signature).decode()}
    ).encode()


def _b64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise StatementError(f"{what}: expected base64 text")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise StatementError(f"{what}: not base64") from exc


def parse_statement(body: bytes) -> tuple[Statement, bytes, bytes]:
    """Framing only: (statement, its exact bytes, signature). Trust comes from `verify_statement`."""
    if len(body) > MAX_STATEMENT_BYTES:
        raise StatementError(f"statement of {len(body)} bytes is over the {MAX_STATEMENT_BYTES}-byte limit")
    try:
        outer = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise StatementError("a statement is JSON {\"statement\": b64, \"signature\": b64}") from exc
    if not isinstance(outer, dict):
        raise StatementError("a statement is JSON {\"statement\": b64, \"signature\": b64}")
    raw = _b64(outer.get("statement"), "statement")
    signature = _b64(outer.get("signature"), "signature")
    try:
        inner = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise StatementError("statement: not JSON") from exc
    if not isinstance(inner, dict):
        raise StatementError("statement: expected an object")
    kind, node_id, issued_at = inner.get("kind"), inner.get("node_id"), inner.get("issued_at_ms")
    if kind not in KINDS:
        raise StatementError(f"statement.kind: one of {', '.join(KINDS)}, got {kind!r}")
    if not isinstance(node_id, str) or node_id_problem(node_id):
        raise StatementError(f"statement.node_id: {node_id_problem(node_id) if isinstance(node_id, str) else 'required'}")
    if not isinstance(issued_at, int) or isinstance(issued_at, bool):
        raise StatementError("statement.issued_at_ms: expected integer unix milliseconds")
    record = certificate = subject = None
    if kind == "register":
        try:
            record = NodeRecord.from_json(inner.get("record"), "statement.record")
        except DirectoryError as exc:
            raise StatementError(str(exc)) from exc
        if record.node_id != node_id:
            raise StatementError(f"statement.record names {record.node_id!r}, the statement {node_id!r}")
        certificate = _b64(inner.get("certificate"), "statement.certificate")
    if kind == "report":
        subject = inner.get("subject")
        if not isinstance(subject, str) or node_id_problem(subject):
            raise StatementError("statement.subject: the node id whose loops failed")
    statement = Statement(kind, node_id, issued_at, record, certificate, subject)
    if statement.canonical() != raw:
        raise StatementError("statement: not in canonical form (sorted keys, no spaces, no extra fields)")
    return statement, raw, signature


def verify_statement(
    body: bytes, now: float, pinned_certificate_der: bytes | None, max_age_s: float = MAX_AGE_S
) -> Statement:
    """The statement in `body`, if its signature is by the node's key and it is fresh.

    For a registration the key is the one in the statement's certificate, whose fingerprint must
    be the record's; `pinned_certificate_der` (the certificate registered before under this node
    id, if any) must then be the same certificate. Other kinds are checked against the pinned
    certificate, and are refused for a node that never registered.
    """
    return check_statement(parse_statement(body), now, pinned_certificate_der, max_age_s)


def check_statement(
    parsed: tuple[Statement, bytes, bytes], now: float, pinned_certificate_der: bytes | None,
    max_age_s: float = MAX_AGE_S,
) -> Statement:
    """`verify_statement` on what `parse_statement` returned (for a caller that needed the
    claimed node id first, to find its pinned certificate, and should not parse twice)."""
    statement, raw, signature = parsed
    skew_s = now - statement.issued_at_ms / 1000
    if abs(skew_s) > max_age_s:
        raise StatementError(
            f"statement from {statement.node_id} issued {skew_s:+.0f} s "
            f"from the directory's clock (more than {max_age_s:.0f} s): check the node's clock",
            "stale",
        )
    if statement.kind == "register":
        assert statement.certificate_der is not None and statement.record is not None
        certificate_der = statement.certificate_der
        if statement.record.fingerprint is None or fingerprint(certificate_der) != statement.record.fingerprint.lower():
            raise StatementError(f"{statement.node_id}: the certificate's fingerprint is not the record's", "certificate")
        if pinned_certificate_der is not None and pinned_certificate_der != certificate_der:
            raise StatementError(
                f"{statement.node_id} is registered with another certificate; an operator must remove it first",
                "certificate",
            )
    else:
        if pinned_certificate_der is None:
            raise StatementError(f"{statement.node_id} is not registered", "unregistered")
        certificate_der = pinned_certificate_der
    try:
        public_key = x509.load_der_x509_certificate(certificate_der).public_key()
    except ValueError as exc:
        raise StatementError(f"{statement.node_id}: the certificate does not parse") from exc
    try:
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, raw, ec.ECDSA(hashes.SHA256()))
        elif isinstance(public_key, ed25519.Ed25519PublicKey):
            public_key.verify(signature, raw)
        else:
            raise StatementError(f"{statement.node_id}: unsupported certificate key {type(public_key).__name__}")
    except InvalidSignature as exc:
        raise StatementError(f"{statement.node_id}: bad signature on a {statement.kind} statement", "signature") from exc
    return statement
