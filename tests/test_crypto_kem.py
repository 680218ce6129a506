"""The KEM registry: published vectors, round trips, the pqcrypto fallback and input checking."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from nyx.crypto import KEM_NAMES, KemError, UnsupportedOperation, kem
from nyx.crypto import mlkem as mlkem_module

# Published vectors, copied from the project's shared/vectors so a bare clone is enough.
VECTORS = Path(__file__).parent / "vectors"
MLKEM_NAMES = ("ml-kem-768", "ml-kem-1024", "xwing")
# Every (name, backend) pair the registry serves.
ALL_KEMS = [(name, None) for name in KEM_NAMES] + [(name, "pqcrypto") for name in MLKEM_NAMES]


def _xwing_vector() -> dict[str, str]:
    return json.loads((VECTORS / "xwing.json").read_text())


def test_xwing_public_key_from_seed_matches_published_vector() -> None:
    vector = _xwing_vector()
    _, public_key = kem("xwing").derive(bytes.fromhex(vector["seed"]))
    assert public_key.hex() == vector["pk"]


def test_xwing_decapsulation_matches_published_vector() -> None:
    vector = _xwing_vector()
    private_key, _ = kem("xwing").derive(bytes.fromhex(vector["seed"]))
    assert kem("xwing").decapsulate(private_key, bytes.fromhex(vector["ct"])).hex() == vector["ss"]


def test_xwing_vector_ciphertext_carries_the_x25519_share_of_its_encapsulation_seed() -> None:
    # The draft's encapsulation randomness is eseed = m (32) || ek_X (32); ct ends with X25519(ek_X, G).
    vector = _xwing_vector()
    ek_x = bytes.fromhex(vector["eseed"])[32:]
    ct_x = X25519PrivateKey.from_private_bytes(ek_x).public_key().public_bytes_raw()
    assert bytes.fromhex(vector["ct"])[1088:] == ct_x


def test_xwing_label_is_the_drafts() -> None:
    from nyx.crypto.xwing import XWING_LABEL

    assert XWING_LABEL.hex() == _xwing_vector()["label_hex"] == "5c2e2f2f5e5c"


def test_dhkem_x25519_matches_rfc9180_vector() -> None:
    vector = json.loads((VECTORS / "rfc9180_a1_dhkem_x25519.json").read_text())
    x25519 = kem("x25519")
    private_key, public_key = x25519.derive(bytes.fromhex(vector["ikmR"]))
    assert public_key.hex() == vector["pkRm"]
    assert private_key.secret.hex() == vector["skRm"]
    assert x25519.decapsulate(private_key, bytes.fromhex(vector["enc"])).hex() == vector["shared_secret"]


@pytest.mark.parametrize(("name", "backend"), ALL_KEMS)
def test_generate_encapsulate_decapsulate_round_trips(name: str, backend: str | None) -> None:
    scheme = kem(name, backend=backend)
    private_key, public_key = scheme.generate()
    assert len(public_key) == scheme.public_key_size
    ciphertext, shared = scheme.encapsulate(public_key)
    assert len(ciphertext) == scheme.ciphertext_size
    assert len(shared) == scheme.shared_secret_size
    assert scheme.decapsulate(private_key, ciphertext) == shared
    other_ciphertext, other_shared = scheme.encapsulate(public_key)
    assert other_shared != shared and other_ciphertext != ciphertext


@pytest.mark.parametrize(("name", "backend"), ALL_KEMS)
def test_private_key_survives_storage(name: str, backend: str | None) -> None:
    scheme = kem(name, backend=backend)
    private_key, public_key = scheme.generate()
    reloaded = scheme.load_private(private_key.secret)
    assert reloaded.public_key == public_key
    ciphertext, shared = scheme.encapsulate(public_key)
    assert scheme.decapsulate(reloaded, ciphertext) == shared


@pytest.mark.parametrize("name", ["x25519", "xwing", "ml-kem-768", "ml-kem-1024"])
def test_derive_is_deterministic_and_round_trips(name: str) -> None:
    scheme = kem(name)
    assert scheme.seed_size is not None
    seed = bytes(range(scheme.seed_size))
    private_key, public_key = scheme.derive(seed)
    assert scheme.derive(seed)[1] == public_key
    assert scheme.derive(bytes(reversed(seed)))[1] != public_key
    ciphertext, shared = scheme.encapsulate(public_key)
    assert scheme.decapsulate(private_key, ciphertext) == shared


def test_hqc_has_no_derive() -> None:
    with pytest.raises(UnsupportedOperation, match="generate"):
        kem("hqc-128").derive(bytes(32))


@pytest.mark.parametrize("name", ["ml-kem-768", "ml-kem-1024"])
def test_pqcrypto_fallback_interoperates_with_openssl_in_both_directions(name: str) -> None:
    openssl, fallback = kem(name, backend="cryptography"), kem(name, backend="pqcrypto")
    openssl_key, openssl_public = openssl.generate()
    ciphertext, shared = fallback.encapsulate(openssl_public)
    assert openssl.decapsulate(openssl_key, ciphertext) == shared
    fallback_key, fallback_public = fallback.generate()
    ciphertext, shared = openssl.encapsulate(fallback_public)
    assert fallback.decapsulate(fallback_key, ciphertext) == shared


def test_xwing_fallback_decapsulates_openssl_encapsulations() -> None:
    fallback = kem("xwing", backend="pqcrypto")
    private_key, public_key = fallback.generate()
    ciphertext, shared = kem("xwing", backend="cryptography").encapsulate(public_key)
    assert fallback.decapsulate(private_key, ciphertext) == shared


def test_build_without_openssl_mlkem_is_served_by_pqcrypto(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mlkem_module, "openssl_has_mlkem", lambda: False)
    for name in MLKEM_NAMES:
        scheme = kem(name)
        assert scheme.backend == "pqcrypto"  # type: ignore[attr-defined]
        private_key, public_key = scheme.generate()
        ciphertext, shared = scheme.encapsulate(public_key)
        assert scheme.decapsulate(private_key, ciphertext) == shared
        with pytest.raises(UnsupportedOperation, match="cryptography"):
            scheme.derive(bytes(64 if name != "xwing" else 32))
    with pytest.raises(UnsupportedOperation, match="no ML-KEM"):
        kem("ml-kem-768", backend="cryptography")


def test_unknown_names_are_refused_clearly() -> None:
    with pytest.raises(KemError, match="unknown KEM 'kyber'"):
        kem("kyber")
    with pytest.raises(KemError, match="unknown ML-KEM backend"):
        kem("xwing", backend="liboqs")


@pytest.mark.parametrize(("name", "backend"), ALL_KEMS)
def test_wrong_lengths_raise_value_errors_that_name_the_field(name: str, backend: str | None) -> None:
    scheme = kem(name, backend=backend)
    private_key, public_key = scheme.generate()
    with pytest.raises(ValueError, match=f"{name} public key must be {scheme.public_key_size} bytes, got"):
        scheme.encapsulate(public_key[:-1])
    with pytest.raises(ValueError, match=f"{name} ciphertext must be {scheme.ciphertext_size} bytes, got"):
        scheme.decapsulate(private_key, bytes(scheme.ciphertext_size + 1))
    if scheme.seed_size:
        with pytest.raises(ValueError, match="seed must be"):
            scheme.derive(bytes(scheme.seed_size - 1))


def test_invalid_mlkem_public_key_encoding_is_a_kem_error() -> None:
    scheme = kem("ml-kem-768")
    with pytest.raises(KemError, match="not a valid encoding"):
        scheme.encapsulate(b"\xff" * scheme.public_key_size)  # coefficients >= q


def test_low_order_x25519_point_is_a_kem_error() -> None:
    x25519 = kem("x25519")
    private_key, _ = x25519.generate()
    with pytest.raises(KemError, match="low-order"):
        x25519.decapsulate(private_key, bytes(32))


def test_a_key_of_another_kem_is_refused() -> None:
    classic_key, _ = kem("x25519").generate()
    with pytest.raises(KemError, match="x25519 private key cannot decapsulate xwing"):
        kem("xwing").decapsulate(classic_key, bytes(1120))


@pytest.mark.parametrize("name", KEM_NAMES)
def test_private_keys_never_print_their_secret(name: str) -> None:
    private_key, _ = kem(name).generate()
    assert private_key.secret.hex() not in repr(private_key)
    assert private_key.secret.hex()[:16] not in str(private_key)


@given(data=st.data())
def test_any_ciphertext_of_the_right_length_gives_a_secret_or_a_kem_error(data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(["x25519", "xwing", "ml-kem-768"]))
    scheme = kem(name)
    private_key = _fixed_key(name)
    ciphertext = data.draw(st.binary(min_size=scheme.ciphertext_size, max_size=scheme.ciphertext_size))
    try:
        shared = scheme.decapsulate(private_key, ciphertext)
    except KemError:
        return
    assert len(shared) == scheme.shared_secret_size


@given(name=st.sampled_from(KEM_NAMES), blob=st.binary(max_size=2048))
def test_any_public_key_bytes_encapsulate_or_raise_kem_error(name: str, blob: bytes) -> None:
    try:
        ciphertext, _ = kem(name).encapsulate(blob)
    except KemError:
        return
    assert len(ciphertext) == kem(name).ciphertext_size


_KEYS: dict[str, object] = {}


def _fixed_key(name: str):  # one key per KEM for the property tests (keygen is the slow part)
    if name not in _KEYS:
        _KEYS[name] = kem(name).generate()[0]
    return _KEYS[name]
