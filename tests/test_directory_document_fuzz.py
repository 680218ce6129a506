"""Property tests: any bytes into the document parsers give a value or a DocumentRejected, nothing
else, and whatever `decode_body` accepts is exactly its canonical encoding.

Three sources of input: arbitrary bytes (with and without a plausible NYXD header), valid
documents mutated byte-wise (flips, cuts, insertions, deletions), and JSON trees that are bodies
with one field replaced by an arbitrary JSON value, signed by trusted authorities so that
`verify_document` takes them all the way into the body parser.
"""

from __future__ import annotations

import json
import struct
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from nyx.directory.document import (
    DocumentBody,
    DocumentHolder,
    DocumentRejected,
    SignedDocument,
    TrustPolicy,
    decode_body,
    encode_body,
    sign_body,
    verify_document,
)
from nyx.directory.records import NodeRecord

KEYS = [Ed25519PrivateKey.from_private_bytes(bytes([i + 1]) * 32) for i in range(5)]
POLICY = TrustPolicy(frozenset(k.public_key().public_bytes_raw() for k in KEYS), 3)
NOW = 1_000_100


def _body() -> DocumentBody:
    records = [
        NodeRecord(f"mix-{layer}", "mix", layer, "10.0.0.1", 4000, "ab" * 32,
                   {7: bytes([layer]) * 32, 8: bytes([layer + 8]) * 32}, region="eu", weight=2.5)
        for layer in (1, 2, 3)
    ] + [NodeRecord("gw-1", "gateway", 0, "10.0.0.9", 443, None, stream_keys={"hybrid": b"\x01" * 40},
                    versions=(1, 2))]
    return DocumentBody.of(7, 1_000_000, 1_003_600, records)


BODY = _body()
BODY_BYTES = encode_body(BODY)
TREE = json.loads(BODY_BYTES)


def _signed(body_bytes: bytes) -> bytes:
    return SignedDocument(body_bytes, tuple(sign_body(body_bytes, k) for k in KEYS[:3])).encode()


WIRE = _signed(BODY_BYTES)


def _only_rejections(call: Any, *args: Any) -> Any:
    try:
        return call(*args)
    except DocumentRejected:
        return None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@st.composite
def mutated(draw: st.DrawFn, original: bytes) -> bytes:
    raw = bytearray(original)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "cut", "insert", "delete", "set"]))
        at = draw(st.integers(0, max(len(raw) - 1, 0)))
        if kind == "flip" and raw:
            raw[at] ^= draw(st.integers(1, 255))
        elif kind == "cut":
            del raw[at:]
        elif kind == "insert":
            raw[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del raw[at:at + draw(st.integers(1, 16))]
        elif kind == "set" and raw:
            raw[at] = draw(st.sampled_from(b'{}[]",:0-9eE.\\ nt'))
    return bytes(raw)


@st.composite
def bent_trees(draw: st.DrawFn) -> bytes:
    """The canonical body with one field (top level, a record's, or a nested key's) replaced by
    an arbitrary JSON value, or removed, written canonically."""
    tree = json.loads(BODY_BYTES)
    where = draw(st.sampled_from(["top", "record", "sphinx_keys", "stream_keys", "nodes"]))
    if where == "top":
        target = tree
    elif where == "nodes":
        target = {"nodes": tree["nodes"]}
        tree["nodes"].insert(draw(st.integers(0, 4)), draw(json_values))
    else:
        record = tree["nodes"][draw(st.integers(0, 3))]
        target = record if where == "record" else record.setdefault(where, {})
    name = draw(st.sampled_from(sorted(target) + ["extra"]) if target else st.just("extra"))
    if draw(st.booleans()) and name in target:
        del target[name]
    else:
        target[name] = draw(json_values)
    return json.dumps(tree, sort_keys=True, separators=(",", ":")).encode()


@given(st.binary(max_size=600))
def test_decode_body_on_any_bytes_returns_a_canonical_body_or_rejects(raw: bytes) -> None:
    body = _only_rejections(decode_body, raw)
    assert body is None or encode_body(body) == raw


@given(st.binary(max_size=600))
def test_signed_document_decode_on_any_bytes_frames_exactly_or_rejects(raw: bytes) -> None:
    document = _only_rejections(SignedDocument.decode, raw)
    assert document is None or document.encode() == raw


@given(st.binary(max_size=400), st.integers(0, 2**32 - 1))
def test_verify_document_on_a_plausible_header_and_any_bytes_rejects(tail: bytes, body_len: int) -> None:
    for length in (body_len, len(tail) // 2, max(len(tail) - 1, 0)):
        raw = struct.pack(">4sBI", b"NYXD", 1, length) + tail
        assert _only_rejections(verify_document, raw, POLICY, NOW) is None


@given(st.binary(max_size=600))
def test_verify_document_on_any_bytes_rejects(raw: bytes) -> None:
    assert _only_rejections(verify_document, raw, POLICY, NOW) is None


@given(mutated(WIRE))
def test_a_mutated_document_is_the_original_body_or_rejected(raw: bytes) -> None:
    body = _only_rejections(verify_document, raw, POLICY, NOW)
    assert body is None or body == BODY
    assert _only_rejections(DocumentHolder(POLICY).offer, raw, NOW) in (None, BODY)


@given(mutated(BODY_BYTES))
def test_a_mutated_body_signed_by_the_authorities_is_canonical_or_rejected(raw: bytes) -> None:
    body = _only_rejections(verify_document, _signed(raw), POLICY, NOW)
    assert body is None or encode_body(body) == raw


@given(bent_trees())
def test_a_body_with_any_json_in_any_field_is_canonical_or_rejected(raw: bytes) -> None:
    body = _only_rejections(decode_body, raw)
    assert body is None or encode_body(body) == raw
    signed_body = _only_rejections(verify_document, _signed(raw), POLICY, NOW)
    assert signed_body == body or signed_body is None  # only the window can refuse it now


@given(st.integers(1, 2000))
def test_deep_nesting_is_rejected_not_a_crash(depth: int) -> None:
    for raw in (b"[" * depth * 50, b'{"nodes":' + b"[" * depth * 50 + b"]" * depth * 50 + b"}"):
        assert _only_rejections(decode_body, raw) is None
