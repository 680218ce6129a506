"""pytest-benchmark regression suite for the crypto core (see docs/benchmarks.md).

Each hot path is benchmarked beside its floor so that a regression shows as a change in the gap,
not only in absolute time. In the default test run these execute once (--benchmark-disable).
"""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.asymmetric import mlkem
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from nyx.bench.micro_crypto import handshake_pair
from nyx.crypto import kem
from nyx.crypto.session import DIRECTION_I2R, DIRECTION_R2I, RecordSession
from nyx.crypto.suites import Suite


@pytest.mark.parametrize("suite", [Suite.HYBRID, Suite.CLASSIC, Suite.PQ], ids=lambda s: s.label)
def test_handshake(benchmark, suite: Suite) -> None:
    handshake, _ = handshake_pair(suite)
    responder_keys, initiator_keys = benchmark(handshake)
    assert responder_keys.session_id == initiator_keys.session_id


def test_xwing_encapsulate(benchmark) -> None:
    xwing = kem("xwing")
    _, public_key = xwing.generate()
    ciphertext, _ = benchmark(xwing.encapsulate, public_key)
    assert len(ciphertext) == 1120


def test_floor_mlkem768_encaps_plus_x25519(benchmark) -> None:
    public = mlkem.MLKEM768PrivateKey.generate().public_key().public_bytes_raw()
    peer = X25519PrivateKey.generate().public_key().public_bytes_raw()

    def floor() -> bytes:
        mlkem.MLKEM768PublicKey.from_public_bytes(public).encapsulate()
        ephemeral = X25519PrivateKey.generate()
        ephemeral.public_key().public_bytes_raw()
        return ephemeral.exchange(X25519PublicKey.from_public_bytes(peer))

    assert len(benchmark(floor)) == 32


def test_xwing_decapsulate(benchmark) -> None:
    xwing = kem("xwing")
    private_key, public_key = xwing.generate()
    ciphertext, shared = xwing.encapsulate(public_key)
    assert benchmark(xwing.decapsulate, private_key, ciphertext) == shared


def test_record_seal_1200(benchmark) -> None:
    session = RecordSession(os.urandom(32), os.urandom(32), send_direction=DIRECTION_I2R, receive_direction=DIRECTION_R2I, now=0.0)
    payload = os.urandom(1200)
    assert len(benchmark(session.seal, payload, 0.0)) == 1200 + 28


def test_floor_chacha20poly1305_1200(benchmark) -> None:
    aead, nonce, payload = ChaCha20Poly1305(os.urandom(32)), os.urandom(12), os.urandom(1200)
    assert len(benchmark(aead.encrypt, nonce, payload, b"")) == 1216
