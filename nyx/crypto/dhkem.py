"""DHKEM(X25519, HKDF-SHA256) as RFC 9180 section 4.1 defines it (KEM id 0x0020).

The classic suite's KEM. Using the standard DHKEM rather than a bare X25519 exchange binds the
shared secret to both the ephemeral and the recipient public key, which is what a KEM-based
handshake needs to be a KEM.
"""

from __future__ import annotations

import os

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from nyx.crypto.errors import KemError
from nyx.crypto.kdf import hkdf_expand, hkdf_extract
from nyx.crypto.kem import PrivateKey, check_key, check_length

_SUITE_ID = b"KEM\x00\x20"
_VERSION = b"HPKE-v1"


def _labeled_extract(salt: bytes, label: bytes, ikm: bytes) -> bytes:
    return hkdf_extract(salt, _VERSION + _SUITE_ID + label + ikm)


def _labeled_expand(prk: bytes, label: bytes, info: bytes, length: int) -> bytes:
    return hkdf_expand(prk, length.to_bytes(2, "big") + _VERSION + _SUITE_ID + label + info, length)


def _exchange(private: X25519PrivateKey, public: X25519PublicKey) -> bytes:
    try:
        return private.exchange(public)
    except ValueError as error:  # all-zero output: a low-order public key
        raise KemError("x25519 public key or ciphertext is a low-order point") from error


class X25519Kem:
    """DHKEM over X25519: 32-byte public keys, ciphertexts and shared secrets."""

    name = "x25519"
    public_key_size = 32
    ciphertext_size = 32
    shared_secret_size = 32
    seed_size = 32

    def _key(self, private: X25519PrivateKey, secret: bytes) -> tuple[PrivateKey, bytes]:
        public = private.public_key().public_bytes_raw()
        return PrivateKey(self.name, public, secret, private), public

    def generate(self) -> tuple[PrivateKey, bytes]:
        private = X25519PrivateKey.generate()
        return self._key(private, private.private_bytes_raw())

    def derive(self, seed: bytes) -> tuple[PrivateKey, bytes]:
        """DeriveKeyPair of RFC 9180 section 7.1.3."""
        check_length(self.name, "seed", seed, self.seed_size)
        dkp_prk = _labeled_extract(b"", b"dkp_prk", bytes(seed))
        secret = _labeled_expand(dkp_prk, b"sk", b"", 32)
        return self._key(X25519PrivateKey.from_private_bytes(secret), secret)

    def load_private(self, secret: bytes) -> PrivateKey:
        check_length(self.name, "private key", secret, 32)
        return self._key(X25519PrivateKey.from_private_bytes(bytes(secret)), bytes(secret))[0]

    def _shared_secret(self, dh: bytes, enc: bytes, recipient_public: bytes) -> bytes:
        eae_prk = _labeled_extract(b"", b"eae_prk", dh)
        return _labeled_expand(eae_prk, b"shared_secret", enc + recipient_public, 32)

    def encapsulate(self, public_key: bytes) -> tuple[bytes, bytes]:
        check_length(self.name, "public key", public_key, self.public_key_size)
        public_key = bytes(public_key)
        ephemeral = X25519PrivateKey.generate()
        enc = ephemeral.public_key().public_bytes_raw()
        dh = _exchange(ephemeral, X25519PublicKey.from_public_bytes(public_key))
        return enc, self._shared_secret(dh, enc, public_key)

    def decapsulate(self, private_key: PrivateKey, ciphertext: bytes) -> bytes:
        check_key(self.name, private_key)
        check_length(self.name, "ciphertext", ciphertext, self.ciphertext_size)
        ciphertext = bytes(ciphertext)
        dh = _exchange(private_key.material, X25519PublicKey.from_public_bytes(ciphertext))
        return self._shared_secret(dh, ciphertext, private_key.public_key)
