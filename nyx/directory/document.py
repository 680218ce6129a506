"""The signed per-epoch directory document: node records that k of n authorities vouch for.

A document has two parts. The *body* is the canonical JSON of one epoch's view of the network:

    {"epoch":492305,"nodes":[<NodeRecord.to_json()>, ...],"valid_after":1700000000,
     "valid_until":1700003600,"version":1}

written with sorted keys, no whitespace, ASCII only (`ensure_ascii`), weights as Python's float
repr, nodes sorted by node id and unique, certificate fingerprints in lowercase hex. There is exactly one byte string per body: `decode_body`
re-encodes what it parsed and refuses the input unless the two are identical, so two parties that
accept a document have accepted the same bytes, and a signature over those bytes covers one
meaning (no whitespace, key order, duplicate key or number spelling can hide a second one).

The *wire form* wraps the body with the authorities' Ed25519 signatures over the body bytes:

    b"NYXD" | version u8 (1) | body_len u32 BE | body | count u8 | count x (public key 32 | sig 64)

so a mirror, a cache or an attacker can serve it: what makes it trusted is the `TrustPolicy` (the
authorities' keys and the threshold k), not the path it came by.

Acceptance (`verify_document`), in this order, and why this order:
1. framing: magic, version, lengths exact; a body over 64 MiB or more than 32 signatures is refused
   from the 9-byte header and the count byte, before any other work;
2. signatures over the exact body bytes: entries by keys outside the policy are skipped without
   any crypto, and if fewer than k distinct trusted keys appear the document is refused before any
   verification; each trusted key is checked once, on its first entry (later entries by the same
   key are duplicates and never checked), and we stop at k valid. So a document costs at most n
   verifications (n trusted keys; each one SHA-512 pass over the body) however its entries are
   arranged; a mirror that puts a bad entry before a good one gains nothing it could not get by
   dropping the good one;
3. only then the body is parsed (JSON, records, canonical form);
4. validity window: valid_after - skew <= now <= valid_until + skew;
5. rollback: an epoch older than the one held is refused.
Signatures come before parsing because the parser (json plus `NodeRecord.from_json`) is both the
largest attack surface and the largest cost (for 50,000 nodes, a 19 MB body: about 1.2 s to
parse, against about 22 ms per signature check, one SHA-512 pass; see `nyx.directory.measure`):
bytes no authority signed never reach it through `verify_document`.
The price is that a genuine but old document, replayed, costs k verifications and a parse before it
is refused as stale or rolled back; we accept that rather than read an epoch from unsigned bytes.

Every refusal is a `DocumentRejected` (a `DirectoryError`) subclass whose message says what is
wrong and what to check; nothing else escapes the parsers for any input bytes (fuzzed in
tests/test_directory_document_fuzz.py).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from nyx.directory.records import Directory, DirectoryError, NodeRecord

MAGIC = b"NYXD"
WIRE_VERSION = 1
BODY_VERSION = 1
MAX_BODY_BYTES = 64 * 1024 * 1024
MAX_SIGNATURES = 32
PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
MAX_TIME = 2**63 - 1  # epochs and unix times are non-negative 63-bit integers

_HEADER = struct.Struct(">4sBI")
_ENTRY_BYTES = PUBLIC_KEY_BYTES + SIGNATURE_BYTES
_FINGERPRINT = re.compile(r"[0-9a-f]{64}")
_BODY_KEYS = frozenset({"version", "epoch", "valid_after", "valid_until", "nodes"})


class DocumentRejected(DirectoryError):
    """A directory document was refused; the subclass says why, the message what to check."""


class MalformedDocument(DocumentRejected):
    """The bytes are not a well-formed document: framing, size bounds, JSON, records, or a body
    that is not in its one canonical form."""


class UnderSigned(DocumentRejected):
    """Fewer than k valid signatures by distinct keys of the trust policy."""


class StaleDocument(DocumentRejected):
    """The document is not valid at `now` (before valid_after or after valid_until, beyond the
    allowed clock skew)."""


class RolledBack(DocumentRejected):
    """The document's epoch is older than the epoch already held: a replay of an old document."""


class Equivocation(DocumentRejected):
    """Two different bodies for one epoch, each with k valid signatures: the authorities (or k of
    their keys) signed conflicting views. `held` and `offered` are the two wire documents, kept as
    evidence for the authorities' operators."""

    held: bytes
    offered: bytes


def _short(digest_input: bytes) -> str:
    return hashlib.sha256(digest_input).hexdigest()[:16]


def _when(t: float) -> str:
    """A unix time as UTC ISO text for messages (the raw number if it is out of range)."""
    try:
        return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return repr(t)


def _is_time(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_TIME


@dataclass(frozen=True, slots=True)
class DocumentBody:
    """One epoch's nodes and the window in which the document may be used (unix seconds).

    `nodes` are sorted by node id and unique (use `DocumentBody.of` to sort), and certificate
    fingerprints are lowercase hex (a pin compared case-insensitively elsewhere would otherwise
    give two bodies one meaning); the constructor refuses anything else, so a body in memory
    always has exactly one encoding."""

    epoch: int
    valid_after: int
    valid_until: int
    nodes: tuple[NodeRecord, ...]

    def __post_init__(self) -> None:
        for name in ("epoch", "valid_after", "valid_until"):
            if not _is_time(getattr(self, name)):
                raise MalformedDocument(
                    f"document {name}: expected an integer 0..2^63-1, got {getattr(self, name)!r}")
        if self.valid_after >= self.valid_until:
            raise MalformedDocument(
                f"document validity window is empty: valid_after {self.valid_after} is not before "
                f"valid_until {self.valid_until}; the authority that built it has a bug")
        previous = None
        for index, record in enumerate(self.nodes):
            if not isinstance(record, NodeRecord):
                raise MalformedDocument(f"document nodes[{index}]: expected a NodeRecord")
            if previous is not None and record.node_id <= previous:
                what = "appears twice" if record.node_id == previous else "is out of order"
                raise MalformedDocument(
                    f"document nodes[{index}]: node id {record.node_id!r} {what}; nodes must be "
                    f"sorted by node id and unique (build bodies with DocumentBody.of)")
            previous = record.node_id
            if record.fingerprint is not None and not _FINGERPRINT.fullmatch(record.fingerprint):
                raise MalformedDocument(
                    f"document nodes[{index}] ({record.node_id}): fingerprint must be 64 lowercase "
                    f"hex digits (the SHA-256 of its TLS certificate) or null, got "
                    f"{record.fingerprint[:80]!r}")

    @classmethod
    def of(cls, epoch: int, valid_after: int, valid_until: int,
           records: Iterable[NodeRecord]) -> DocumentBody:
        """A body from records in any order (sorted here; a repeated node id is refused)."""
        return cls(epoch, valid_after, valid_until,
                   tuple(sorted(records, key=lambda r: r.node_id)))

    def directory(self) -> Directory:
        """The node records as a `Directory`, for route selection and lookups."""
        return Directory.of(self.nodes)


def encode_body(body: DocumentBody) -> bytes:
    """The canonical bytes of `body`: the bytes authorities sign and `decode_body` accepts.

    An authority should sign only bytes that `decode_body` accepts back (records built in memory
    are not checked here, for speed; `NodeRecord.from_json` is the check)."""
    nodes = []
    for record in body.nodes:
        item = record.to_json()
        item["weight"] = float(item["weight"])  # an int weight would not survive a round trip
        nodes.append(item)
    document = {
        "version": BODY_VERSION,
        "epoch": body.epoch,
        "valid_after": body.valid_after,
        "valid_until": body.valid_until,
        "nodes": nodes,
    }
    try:
        text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                          allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise MalformedDocument(f"document body cannot be encoded: {exc}") from exc
    return text.encode("ascii")


def _refuse_constant(name: str) -> Any:
    raise MalformedDocument(f"document body: {name} is not a number a document may contain")


def _first_difference(a: bytes, b: bytes) -> int:
    """The offset of the first byte where `a` and `b` differ (binary search on slices)."""
    low, high = 0, min(len(a), len(b))
    if a[:high] == b[:high]:
        return high
    while high - low > 1:
        middle = (low + high) // 2
        if a[:middle] == b[:middle]:
            low = middle
        else:
            high = middle
    return low


def decode_body(raw: bytes) -> DocumentBody:
    """The body in `raw`, which must be exactly its canonical encoding; else MalformedDocument.

    `verify_document` calls this only after the signatures have been checked."""
    if len(raw) > MAX_BODY_BYTES:
        raise MalformedDocument(
            f"document body of {len(raw)} bytes exceeds the {MAX_BODY_BYTES}-byte limit")
    try:
        text = bytes(raw).decode("ascii")
    except UnicodeDecodeError as exc:
        raise MalformedDocument(
            f"document body has a non-ASCII byte at offset {exc.start}; canonical bodies are "
            f"ASCII JSON (the document was corrupted in transit or not written by nyx)") from exc
    try:
        tree = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError as exc:
        raise MalformedDocument("document body nests too deeply to be a directory") from exc
    except ValueError as exc:  # JSONDecodeError, and integers beyond the int-string limit
        if isinstance(exc, MalformedDocument):
            raise
        raise MalformedDocument(
            f"document body is not valid JSON ({exc}); the document was corrupted or truncated "
            f"in transit") from exc
    if not isinstance(tree, dict):
        raise MalformedDocument("document body: expected a JSON object")
    if set(tree) != _BODY_KEYS:
        missing = sorted(_BODY_KEYS - set(tree))
        extra = sorted(set(tree) - _BODY_KEYS)
        raise MalformedDocument(
            f"document body: fields missing {missing}, unknown {extra}; a newer document "
            f"format needs a newer nyx")
    version = tree["version"]
    if isinstance(version, bool) or version != BODY_VERSION:
        raise MalformedDocument(
            f"document body version {version!r}, this nyx reads {BODY_VERSION}: upgrade nyx "
            f"if the network moved on")
    nodes = tree["nodes"]
    if not isinstance(nodes, list):
        raise MalformedDocument("document body nodes: expected a list of node records")
    try:
        records = tuple(NodeRecord.from_json(item, f"nodes[{i}]") for i, item in enumerate(nodes))
        body = DocumentBody(tree["epoch"], tree["valid_after"], tree["valid_until"], records)
    except MalformedDocument:
        raise
    except (DirectoryError, ValueError, TypeError, OverflowError) as exc:
        raise MalformedDocument(f"document body: {exc}") from exc
    canonical = encode_body(body)
    if canonical != raw:
        offset = _first_difference(canonical, bytes(raw))
        raise MalformedDocument(
            f"document body is not in canonical form (first difference at byte {offset} of "
            f"{len(raw)}: {bytes(raw[offset:offset + 24])!r}, canonical "
            f"{canonical[offset:offset + 24]!r}); only nyx's exact encoding is accepted, so one "
            f"signature covers one meaning")
    return body


@dataclass(frozen=True, slots=True)
class SignedDocument:
    """A body's bytes and the (authority public key, Ed25519 signature) pairs over them.

    `decode` checks framing only; whether the signatures are valid and trusted is
    `verify_document`'s job."""

    body_bytes: bytes
    signatures: tuple[tuple[bytes, bytes], ...] = ()

    def __post_init__(self) -> None:
        if len(self.body_bytes) > MAX_BODY_BYTES:
            raise MalformedDocument(
                f"document body of {len(self.body_bytes)} bytes exceeds the "
                f"{MAX_BODY_BYTES}-byte limit")
        if len(self.signatures) > MAX_SIGNATURES:
            raise MalformedDocument(
                f"document carries {len(self.signatures)} signatures, at most {MAX_SIGNATURES} "
                f"are allowed")
        for public_key, signature in self.signatures:
            if len(public_key) != PUBLIC_KEY_BYTES or len(signature) != SIGNATURE_BYTES:
                raise MalformedDocument(
                    f"a signature entry must be a {PUBLIC_KEY_BYTES}-byte Ed25519 public key and "
                    f"a {SIGNATURE_BYTES}-byte signature")

    def encode(self) -> bytes:
        parts = [_HEADER.pack(MAGIC, WIRE_VERSION, len(self.body_bytes)), self.body_bytes,
                 bytes([len(self.signatures)])]
        for public_key, signature in self.signatures:
            parts += [public_key, signature]
        return b"".join(parts)

    @classmethod
    def decode(cls, raw: bytes) -> SignedDocument:
        """The framing of `raw` (bounds checked from the header before anything is copied)."""
        if len(raw) < _HEADER.size + 1:
            raise MalformedDocument(
                f"document of {len(raw)} bytes is shorter than its header; the download was cut "
                f"short or the file is empty")
        magic, version, body_len = _HEADER.unpack_from(raw)
        if magic != MAGIC:
            raise MalformedDocument(
                f"document starts with {bytes(magic)!r}, not {MAGIC!r}: not a signed nyx "
                f"directory document (an error page, or the unsigned static JSON file?)")
        if version != WIRE_VERSION:
            raise MalformedDocument(
                f"document wire version {version}, this nyx reads {WIRE_VERSION}: upgrade nyx if "
                f"the network moved on")
        if body_len > MAX_BODY_BYTES:
            raise MalformedDocument(
                f"document announces a body of {body_len} bytes, over the {MAX_BODY_BYTES}-byte "
                f"limit; refused unread")
        end = _HEADER.size + body_len
        if len(raw) < end + 1:
            raise MalformedDocument(
                f"document is truncated: its header announces a {body_len}-byte body and a "
                f"signature count, only {len(raw)} bytes arrived; fetch it again")
        count = raw[end]
        if count > MAX_SIGNATURES:
            raise MalformedDocument(
                f"document announces {count} signatures, at most {MAX_SIGNATURES} are allowed")
        expected = end + 1 + count * _ENTRY_BYTES
        if len(raw) != expected:
            what = "is truncated" if len(raw) < expected else f"has {len(raw) - expected} trailing bytes"
            raise MalformedDocument(
                f"document {what}: {body_len}-byte body and {count} signatures make "
                f"{expected} bytes, got {len(raw)}; fetch it again")
        signatures = tuple(
            (bytes(raw[at:at + PUBLIC_KEY_BYTES]), bytes(raw[at + PUBLIC_KEY_BYTES:at + _ENTRY_BYTES]))
            for at in range(end + 1, expected, _ENTRY_BYTES))
        return cls(bytes(raw[_HEADER.size:end]), signatures)

    def with_signature(self, public_key: bytes, signature: bytes) -> SignedDocument:
        """This document with one more signature; a key that already signed is replaced (one
        signature per authority)."""
        kept = tuple(entry for entry in self.signatures if entry[0] != public_key)
        return SignedDocument(self.body_bytes, kept + ((public_key, signature),))


def sign_body(body_bytes: bytes, key: Ed25519PrivateKey) -> tuple[bytes, bytes]:
    """An authority's (public key, signature) over the exact body bytes."""
    return key.public_key().public_bytes_raw(), key.sign(body_bytes)


@dataclass(frozen=True, slots=True)
class TrustPolicy:
    """Which authority keys a client or node trusts, and how many must sign (k of n).

    A threshold above n/2 also means that two conflicting documents for one epoch need at least
    one authority to sign both, so `Equivocation` then always points at a misbehaving authority."""

    authorities: frozenset[bytes]
    threshold: int
    clock_skew_s: float = 60.0
    _keys: dict[bytes, Ed25519PublicKey] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.authorities, frozenset):
            object.__setattr__(self, "authorities", frozenset(self.authorities))
        if any(not isinstance(k, bytes) or len(k) != PUBLIC_KEY_BYTES for k in self.authorities):
            raise DirectoryError(f"authority keys must be {PUBLIC_KEY_BYTES}-byte Ed25519 public keys")
        if isinstance(self.threshold, bool) or not 1 <= self.threshold <= len(self.authorities):
            raise DirectoryError(
                f"threshold {self.threshold} must be 1..{len(self.authorities)} (the number of "
                f"authority keys)")
        if not math.isfinite(self.clock_skew_s) or self.clock_skew_s < 0:
            raise DirectoryError(f"clock_skew_s must be a finite number >= 0, got {self.clock_skew_s}")
        object.__setattr__(self, "_keys", {
            k: Ed25519PublicKey.from_public_bytes(k) for k in self.authorities})


def _check_signatures(signed: SignedDocument, policy: TrustPolicy) -> None:
    """Refuse unless k distinct trusted keys have valid signatures over the exact body bytes."""
    k = policy.threshold
    trusted = [(pub, sig) for pub, sig in signed.signatures if pub in policy._keys]
    untrusted = len(signed.signatures) - len(trusted)
    advice = ("check that the trust policy lists this network's authority keys, and fetch the "
              "document from another mirror (a mirror can strip or corrupt signatures)")
    distinct = len({pub for pub, _ in trusted})
    if distinct < k:
        raise UnderSigned(
            f"document (body {_short(signed.body_bytes)}) is signed by {distinct} distinct trusted "
            f"authorities, {k} needed ({len(signed.signatures)} signatures, {untrusted} by keys "
            f"not in the trust policy); {advice}")
    valid: set[bytes] = set()
    tried: set[bytes] = set()
    invalid = duplicate = 0
    for public_key, signature in trusted:
        if public_key in tried:
            duplicate += 1
            continue
        tried.add(public_key)
        try:
            policy._keys[public_key].verify(signature, signed.body_bytes)
        except InvalidSignature:
            invalid += 1
            continue
        valid.add(public_key)
        if len(valid) >= k:
            return
    raise UnderSigned(
        f"document (body {_short(signed.body_bytes)}) has {len(valid)} valid signatures by "
        f"trusted authorities, {k} needed ({len(signed.signatures)} signatures: {untrusted} by "
        f"keys not in the trust policy, {invalid} that do not verify over the body, {duplicate} "
        f"repeating a key already checked); the body was altered or the signatures forged; "
        f"{advice}")


def _check_window(body: DocumentBody, policy: TrustPolicy, now: float) -> None:
    skew = policy.clock_skew_s
    if body.valid_after - skew <= now <= body.valid_until + skew:
        return
    if now < body.valid_after - skew:
        raise StaleDocument(
            f"document for epoch {body.epoch} is not valid yet: valid from "
            f"{_when(body.valid_after)}, now is {_when(now)} (allowed clock skew {skew:g} s); "
            f"check this machine's clock and the authorities' clocks")
    raise StaleDocument(
        f"document for epoch {body.epoch} expired at {_when(body.valid_until)}, now is "
        f"{_when(now)} (allowed clock skew {skew:g} s); a mirror may be serving an old document "
        f"(fetch from another), or this machine's clock is ahead")


def _verify(raw: bytes, policy: TrustPolicy, now: float,
            held_epoch: int | None) -> tuple[DocumentBody, SignedDocument]:
    signed = SignedDocument.decode(raw)
    _check_signatures(signed, policy)
    body = decode_body(signed.body_bytes)
    _check_window(body, policy, now)
    if held_epoch is not None and body.epoch < held_epoch:
        raise RolledBack(
            f"document for epoch {body.epoch} is older than epoch {held_epoch} already held: a "
            f"replay of an old document (rollback); keep the held one and fetch from another "
            f"mirror")
    return body, signed


def verify_document(raw: bytes, policy: TrustPolicy, now: float,
                    held_epoch: int | None = None) -> DocumentBody:
    """The body of the wire document `raw` if `policy` accepts it at unix time `now`.

    Raises MalformedDocument, UnderSigned, StaleDocument or RolledBack (epoch < `held_epoch`);
    see the module docstring for the order of the checks and why."""
    body, _ = _verify(raw, policy, now, held_epoch)
    return body


class DocumentHolder:
    """The document a client or node currently holds, and the rule for replacing it (sans-I/O).

    `offer` accepts a newer epoch, ignores the bytes already held, refuses an older epoch
    (`RolledBack`) and, for the held epoch, a different body that is itself validly signed
    (`Equivocation`; the first document is kept). The same body with another set of signatures is
    not a conflict: it is the same content."""

    def __init__(self, policy: TrustPolicy) -> None:
        self.policy = policy
        self.current: DocumentBody | None = None
        self.raw: bytes | None = None
        self._body_bytes: bytes | None = None

    @property
    def epoch(self) -> int | None:
        return None if self.current is None else self.current.epoch

    def offer(self, raw: bytes, now: float) -> DocumentBody | None:
        """The new body if `raw` replaced the held document, None if it carries the body already
        held (still checked against the window, so an expired document is reported)."""
        if self.current is not None:
            if raw == self.raw or SignedDocument.decode(raw).body_bytes == self._body_bytes:
                _check_window(self.current, self.policy, now)
                return None
        body, signed = _verify(raw, self.policy, now, self.epoch)
        if self.current is not None and body.epoch == self.current.epoch:
            assert self.raw is not None and self._body_bytes is not None
            error = Equivocation(
                f"two different documents for epoch {body.epoch}, each with {self.policy.threshold} "
                f"valid authority signatures (held body {_short(self._body_bytes)}, offered "
                f"{_short(signed.body_bytes)}): the authorities signed conflicting views or "
                f"their keys are compromised; keeping the first, report both to the authority "
                f"operators")
            error.held, error.offered = self.raw, raw
            raise error
        self.current, self.raw, self._body_bytes = body, raw, signed.body_bytes
        return body
