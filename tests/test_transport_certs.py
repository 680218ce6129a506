"""Node identities (self-signed, pinned by fingerprint), key files, and QUIC header routing."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nyx.transport.certs import CertificateError, NodeIdentity, check_private_file, normalize_fingerprint
from nyx.transport.wire import destination_cid, is_initial


def test_saved_key_file_is_owner_only_and_loads_back(tmp_path):
    identity = NodeIdentity.generate("mix-1")
    identity.save(tmp_path / "node.crt", tmp_path / "node.key")
    assert (tmp_path / "node.key").stat().st_mode & 0o777 == 0o600
    loaded = NodeIdentity.load("mix-1", tmp_path / "node.crt", tmp_path / "node.key")
    assert loaded.fingerprint == identity.fingerprint


def test_world_readable_key_file_is_refused(tmp_path):
    NodeIdentity.generate("mix-1").save(tmp_path / "node.crt", tmp_path / "node.key")
    os.chmod(tmp_path / "node.key", 0o644)
    with pytest.raises(CertificateError, match="chmod 600"):
        check_private_file(tmp_path / "node.key")


def test_fingerprints_are_distinct_and_normalized():
    a, b = NodeIdentity.generate("a"), NodeIdentity.generate("b")
    assert a.fingerprint != b.fingerprint and len(a.fingerprint) == 64
    colon = ":".join(a.fingerprint[i : i + 2] for i in range(0, 64, 2)).upper()
    assert normalize_fingerprint(colon) == a.fingerprint
    with pytest.raises(CertificateError):
        normalize_fingerprint("abc")


@given(st.binary(max_size=1400))
def test_header_routing_never_raises_on_any_bytes(data):
    cid = destination_cid(data, 8)
    assert cid is None or len(cid) <= 20
    assert is_initial(data) in (True, False)
