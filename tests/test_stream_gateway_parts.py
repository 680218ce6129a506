"""The gateway's small sans-I/O parts: the per-address client admission, the refusal datagram
(fuzzed: any bytes decode or are None), and the static handshake keys on disk."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nyx.crypto.suites import Suite
from nyx.stream.client_admission import ClientAdmission
from nyx.stream.entry_wire import MAX_TEXT_BYTES, RefusalReason, decode_refusal, encode_refusal
from nyx.stream.static_keys import STREAM_KEY_FILE, StaticKeyError, load_or_create_stream_keys


def test_admission_allows_a_burst_then_the_rate_per_source() -> None:
    admission = ClientAdmission(rate_per_min=30)
    assert all(admission.admit("192.0.2.1", 0.0) for _ in range(30))
    assert not admission.admit("192.0.2.1", 0.0)
    assert admission.admit("192.0.2.2", 0.0)  # another address has its own bucket
    assert admission.retry_after_s("192.0.2.1", 0.0) == pytest.approx(2.0)
    assert not admission.admit("192.0.2.1", 1.9)
    assert admission.admit("192.0.2.1", 4.0)  # 2 s per token at 30/min
    assert admission.refused == 2 and admission.admitted == 32


def test_admission_over_a_minute_never_exceeds_burst_plus_rate() -> None:
    admission = ClientAdmission(rate_per_min=30)
    admitted = sum(admission.admit("198.51.100.7", t / 10) for t in range(600))  # 10 tries/s for 60 s
    assert admitted == 30 + 30 - 1 or admitted == 30 + 30  # the burst, then one per 2 s


def test_admission_table_is_bounded() -> None:
    admission = ClientAdmission(rate_per_min=1, max_sources=100)
    for i in range(1000):
        admission.admit(f"10.0.{i // 256}.{i % 256}", 0.0)
    assert len(admission._buckets) == 100


@pytest.mark.parametrize("bad", [dict(rate_per_min=0), dict(max_sources=0)])
def test_admission_refuses_nonsense(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        ClientAdmission(**bad)  # type: ignore[arg-type]


def test_refusal_round_trip_and_bounds() -> None:
    raw = encode_refusal(RefusalReason.RATE_LIMITED, "slow down" * 100)
    refusal = decode_refusal(raw)
    assert refusal is not None and refusal.reason is RefusalReason.RATE_LIMITED
    assert len(refusal.text) == MAX_TEXT_BYTES and refusal.text.startswith("slow down")
    assert decode_refusal(b"\x03" + bytes(40)) is None  # a SURB delivery is not a refusal
    unknown = decode_refusal(bytes((0x10, 0xEE)) + b"x\x00y")
    assert unknown is not None and unknown.reason is RefusalReason.OTHER and unknown.text == "x?y"


@given(st.binary(max_size=400))
def test_decode_refusal_never_raises(data: bytes) -> None:
    refusal = decode_refusal(data)
    assert refusal is None or (len(refusal.text) <= MAX_TEXT_BYTES and refusal.text.isprintable())


def test_static_keys_are_made_once_kept_private_and_reloaded(tmp_path: Path) -> None:
    first = load_or_create_stream_keys(tmp_path, (Suite.HYBRID, Suite.CLASSIC))
    path = tmp_path / STREAM_KEY_FILE
    assert os.stat(path).st_mode & 0o777 == 0o600
    again = load_or_create_stream_keys(tmp_path, (Suite.HYBRID,))
    assert again[Suite.HYBRID].public_key == first[Suite.HYBRID].public_key
    both = load_or_create_stream_keys(tmp_path, (Suite.CLASSIC, Suite.HYBRID))  # classic was kept
    assert both[Suite.CLASSIC].public_key == first[Suite.CLASSIC].public_key
    secret = first[Suite.HYBRID].secret.hex()
    assert secret not in repr(first)


def test_static_keys_refuse_a_readable_or_corrupt_file(tmp_path: Path) -> None:
    load_or_create_stream_keys(tmp_path, (Suite.CLASSIC,))
    path = tmp_path / STREAM_KEY_FILE
    os.chmod(path, 0o644)
    with pytest.raises(StaticKeyError, match="chmod 600"):
        load_or_create_stream_keys(tmp_path, (Suite.CLASSIC,))
    os.chmod(path, 0o600)
    path.write_text("{not json")
    with pytest.raises(StaticKeyError, match="not a stream key file"):
        load_or_create_stream_keys(tmp_path, (Suite.CLASSIC,))
