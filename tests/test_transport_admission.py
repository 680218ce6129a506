"""The inbound admission policy, Retry tokens and Initial header parsing, driven by plain values."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nyx.transport.admission import AdmissionLimits, Admit, InboundAdmission, Refuse, SendRetry
from nyx.transport.retry import RetryTokens
from nyx.transport.wire import InitialHeader, parse_initial

A, B = "192.0.2.1", "192.0.2.2"


def admit(core: InboundAdmission[str], key: str, source: str, now: float, validated: bool = False) -> Admit[str]:
    verdict = core.decide(source, validated, now)
    assert isinstance(verdict, Admit), verdict
    core.opened(key, source, now, validated)
    return verdict


def test_half_open_budget_full_evicts_the_oldest_half_open():
    core: InboundAdmission[str] = InboundAdmission(AdmissionLimits(max_half_open=3, retry_above=None))
    for i in range(3):
        assert admit(core, f"k{i}", f"10.0.0.{i}", now=i).evict == ()
    assert admit(core, "k3", "10.0.0.3", now=3).evict == ("k0",)
    assert admit(core, "k4", "10.0.0.4", now=4).evict == ("k1",)
    assert core.half_open == 3 and core.evicted_full == 2


def test_established_connections_are_never_evicted_by_half_open_pressure():
    core: InboundAdmission[str] = InboundAdmission(AdmissionLimits(max_half_open=2, retry_above=None))
    admit(core, "real", A, now=0)
    assert core.established("real")
    for i in range(10):
        assert "real" not in admit(core, f"junk{i}", B if i % 2 else "10.0.0.9", now=1 + i).evict
    assert core.established_count == 1 and core.half_open == 2


def test_full_established_budget_refuses_new_initials_and_late_handshakes():
    core: InboundAdmission[str] = InboundAdmission(AdmissionLimits(max_established=1, retry_above=None))
    admit(core, "first", A, now=0)
    admit(core, "second", B, now=0)
    assert core.established("first")
    assert isinstance(core.decide("10.0.0.9", False, now=1), Refuse)
    assert not core.established("second")  # its handshake finished after the budget filled
    assert core.refused_full == 2
    core.closed("first")
    assert isinstance(core.decide("10.0.0.9", False, now=2), Admit)


def test_source_at_its_limit_evicts_its_own_oldest_not_another_source():
    core: InboundAdmission[str] = InboundAdmission(AdmissionLimits(max_half_open_per_source=2, retry_above=None))
    admit(core, "other", B, now=0)
    admit(core, "a0", A, now=1)
    admit(core, "a1", A, now=2)
    assert admit(core, "a2", A, now=3).evict == ("a0",)
    assert core.half_open_from(A) == 2 and core.half_open_from(B) == 1
    assert core.evicted_source == 1


def test_a_validated_handshake_is_never_evicted_while_an_unvalidated_one_remains():
    core: InboundAdmission[str] = InboundAdmission(
        AdmissionLimits(max_half_open=3, max_half_open_per_source=3, retry_above=None)
    )
    admit(core, "real", A, now=0, validated=True)
    admit(core, "spoof0", A, now=1)
    admit(core, "spoof1", "10.0.0.9", now=2)
    assert admit(core, "next", B, now=3).evict == ("spoof0",)  # global budget: oldest unvalidated
    assert admit(core, "more", "10.0.0.8", now=4).evict == ("spoof1",)
    assert admit(core, "again", "10.0.0.7", now=5).evict == ("next",)
    # per source: A is at its limit with "real" oldest; the unvalidated go first
    core2: InboundAdmission[str] = InboundAdmission(AdmissionLimits(max_half_open_per_source=2, retry_above=None))
    admit(core2, "real", A, now=0, validated=True)
    admit(core2, "spoof", A, now=1)
    assert admit(core2, "retried", A, now=2, validated=True).evict == ("spoof",)
    assert admit(core2, "third", A, now=3, validated=True).evict == ("real",)  # all validated: oldest


def test_retry_is_asked_above_the_threshold_and_of_a_source_at_its_limit_unless_validated():
    core: InboundAdmission[str] = InboundAdmission(
        AdmissionLimits(max_half_open=10, max_half_open_per_source=2, retry_above=3)
    )
    admit(core, "a0", A, now=0)
    admit(core, "a1", A, now=0)
    assert isinstance(core.decide(A, False, now=0), SendRetry)  # A at its own limit
    assert admit(core, "a2", A, now=0, validated=True).evict == ("a0",)
    admit(core, "b0", B, now=0)
    assert isinstance(core.decide("10.0.0.9", False, now=0), SendRetry)  # 3 half-open: loaded
    assert isinstance(core.decide("10.0.0.9", True, now=0), Admit)
    assert core.retries == 2


def test_retry_above_zero_always_asks_and_none_never_does():
    always: InboundAdmission[str] = InboundAdmission(AdmissionLimits(retry_above=0))
    never: InboundAdmission[str] = InboundAdmission(AdmissionLimits(retry_above=None, max_half_open_per_source=1))
    assert isinstance(always.decide(A, False, now=0), SendRetry)
    admit(never, "a0", A, now=0)
    assert isinstance(never.decide(A, False, now=0), Admit)


def test_half_open_connections_expire_at_the_handshake_timeout_in_age_order():
    core: InboundAdmission[str] = InboundAdmission(AdmissionLimits(handshake_timeout_s=5.0, retry_above=None))
    assert core.next_deadline() is None
    admit(core, "k0", A, now=0)
    admit(core, "k1", B, now=1)
    admit(core, "k2", "10.0.0.9", now=2)
    assert core.established("k1")
    assert core.next_deadline() == 5.0
    assert core.expire(4.9) == []
    assert core.expire(7.0) == ["k0", "k2"]  # k1 completed its handshake: not half-open any more
    assert core.expired == 2 and core.half_open == 0 and core.next_deadline() is None
    assert core.half_open_from(A) == 0  # no per-source book left behind


def test_closing_a_connection_frees_its_slot_wherever_it_is():
    core: InboundAdmission[str] = InboundAdmission(AdmissionLimits(max_half_open=1, retry_above=None))
    admit(core, "k0", A, now=0)
    core.closed("k0")
    assert admit(core, "k1", A, now=1).evict == ()
    core.closed("never-seen")  # harmless


def test_limits_are_checked():
    with pytest.raises(ValueError, match="at least 1"):
        AdmissionLimits(max_half_open=0)
    with pytest.raises(ValueError, match="handshake_timeout_s"):
        AdmissionLimits(handshake_timeout_s=0)


def test_retry_token_round_trips_only_for_its_address_connection_id_and_lifetime():
    tokens = RetryTokens(lifetime_s=10.0)
    odcid, rscid = os.urandom(8), os.urandom(8)
    token = tokens.issue(("127.0.0.1", 4433), odcid, rscid, now=100.0)
    assert tokens.validate(("127.0.0.1", 4433), rscid, token, now=101.0) == odcid
    assert tokens.validate(("127.0.0.1", 4434), rscid, token, now=101.0) is None  # other port
    assert tokens.validate(("127.0.0.2", 4433), rscid, token, now=101.0) is None  # other host
    assert tokens.validate(("127.0.0.1", 4433), odcid, token, now=101.0) is None  # other DCID
    assert tokens.validate(("127.0.0.1", 4433), rscid, token, now=111.0) is None  # expired
    assert tokens.validate(("::1", 4433), rscid, token, now=101.0) is None
    assert RetryTokens().validate(("127.0.0.1", 4433), rscid, token, now=101.0) is None  # other key
    assert tokens.rejected == 5


@given(st.binary(max_size=400))
def test_any_token_bytes_are_a_rejection_not_a_crash(token):
    assert RetryTokens().validate(("127.0.0.1", 1), b"12345678", token, now=0.0) is None


def _initial(dcid: bytes, scid: bytes, token: bytes) -> bytes:
    head = bytes([0xC3]) + (1).to_bytes(4, "big") + bytes([len(dcid)]) + dcid + bytes([len(scid)]) + scid
    head += bytes([0x40 | len(token) >> 8, len(token) & 0xFF]) + token
    return head + bytes(1200 - len(head))


def test_initial_header_fields_are_parsed():
    header = parse_initial(_initial(b"D" * 8, b"S" * 5, b"T" * 70))
    assert header == InitialHeader(1, b"D" * 8, b"S" * 5, b"T" * 70)
    assert parse_initial(_initial(b"D" * 8, b"S" * 5, b"T" * 70)[:100]) is None  # not padded
    truncated = bytearray(_initial(b"D" * 8, b"S" * 5, b""))
    truncated[20:22] = b"\x7f\xff"  # token length 16,383 runs past the datagram
    assert parse_initial(bytes(truncated)) is None


@given(st.binary(min_size=0, max_size=1400), st.sampled_from([b"", b"\xc0\x00\x00\x00\x01", b"\xd0\x6b\x33\x43\xcf"]))
def test_parse_initial_never_raises(data, prefix):
    header = parse_initial(prefix + data)
    assert header is None or isinstance(header, InitialHeader)


def test_retry_token_for_a_scoped_ipv6_address_round_trips():
    tokens = RetryTokens()
    token = tokens.issue(("fe80::1%lo", 443, 0, 1), b"o" * 8, b"r" * 8, now=0.0)
    assert tokens.validate(("fe80::1%lo", 443, 0, 1), b"r" * 8, token, now=1.0) == b"o" * 8
