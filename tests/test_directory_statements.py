"""Node statements (nyx.directory.statements): signed by the node's TLS key, parsed strictly."""

from __future__ import annotations

import base64
import json
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nyx.directory.records import NodeRecord
from nyx.directory.statements import Statement, StatementError, parse_statement, sign_statement, verify_statement
from nyx.transport.certs import NodeIdentity

IDENTITY = NodeIdentity.generate("mix-1")
OTHER = NodeIdentity.generate("mix-2")
RECORD = NodeRecord("mix-1", "mix", 1, "127.0.0.1", 4000, IDENTITY.fingerprint, {3: bytes(32)})


def register(identity: NodeIdentity = IDENTITY, record: NodeRecord = RECORD, at_ms: int | None = None) -> bytes:
    at_ms = int(time.time() * 1000) if at_ms is None else at_ms
    return sign_statement(Statement("register", record.node_id, at_ms, record, identity.certificate_der),
                          identity.private_key_pem)


def test_a_registration_verifies_against_its_own_certificate() -> None:
    statement = verify_statement(register(), time.time(), None)
    assert statement.record == RECORD and statement.certificate_der == IDENTITY.certificate_der


def test_a_heartbeat_verifies_only_against_the_pinned_certificate() -> None:
    body = sign_statement(Statement("heartbeat", "mix-1", int(time.time() * 1000)), IDENTITY.private_key_pem)
    assert verify_statement(body, time.time(), IDENTITY.certificate_der).kind == "heartbeat"
    with pytest.raises(StatementError, match="bad signature") as refused:
        verify_statement(body, time.time(), OTHER.certificate_der)
    assert refused.value.reason == "signature"
    with pytest.raises(StatementError, match="not registered"):
        verify_statement(body, time.time(), None)


def test_a_registration_with_someone_elses_fingerprint_is_refused() -> None:
    diverted = NodeRecord("mix-2", "mix", 1, "10.6.6.6", 4000, IDENTITY.fingerprint, {3: bytes(32)})
    with pytest.raises(StatementError, match="fingerprint"):
        verify_statement(register(OTHER, diverted), time.time(), None)


def test_a_statement_from_a_clock_far_off_is_refused_as_stale() -> None:
    with pytest.raises(StatementError, match="clock") as refused:
        verify_statement(register(at_ms=int((time.time() - 3600) * 1000)), time.time(), None)
    assert refused.value.reason == "stale"


def test_a_re_encoded_statement_is_refused_even_with_a_valid_signature_over_it() -> None:
    outer = json.loads(register())
    inner = json.loads(base64.b64decode(outer["statement"]))
    loose = json.dumps(inner, indent=1).encode()  # same content, other bytes
    outer["statement"] = base64.b64encode(loose).decode()
    with pytest.raises(StatementError, match="canonical"):
        parse_statement(json.dumps(outer).encode())


def test_a_flipped_bit_in_the_signed_bytes_is_refused() -> None:
    outer = json.loads(register())
    raw = bytearray(base64.b64decode(outer["statement"]))
    raw[raw.index(b"4000")] = ord("5")  # the port: still canonical JSON, other meaning
    outer["statement"] = base64.b64encode(bytes(raw)).decode()
    with pytest.raises(StatementError):
        verify_statement(json.dumps(outer).encode(), time.time(), None)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_give_only_a_statement_error(data: bytes) -> None:
    with pytest.raises(StatementError):
        verify_statement(data, time.time(), IDENTITY.certificate_der)


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["kind", "node_id", "issued_at_ms", "record", "certificate", "subject", "extra"]), JSONISH)
def test_any_json_in_any_field_gives_a_value_or_a_statement_error(field: str, value: object) -> None:
    outer = json.loads(register())
    inner = json.loads(base64.b64decode(outer["statement"]))
    inner[field] = value
    outer["statement"] = base64.b64encode(json.dumps(inner, sort_keys=True, separators=(",", ":")).encode()).decode()
    try:
        parse_statement(json.dumps(outer).encode())
    except StatementError:
        pass
