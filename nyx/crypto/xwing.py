"""X-Wing: the hybrid KEM X25519 + ML-KEM-768 of draft-connolly-cfrg-xwing-kem.

Secure if either X25519 or ML-KEM-768 is. Implemented exactly as the draft specifies, checked
against its published test vector (../shared/vectors/xwing.json):

- the 32-byte private key is a seed; SHAKE-256 expands it to 96 bytes: ML-KEM-768's (d, z)
  and the X25519 private key;
- the shared secret is SHA3-256(ss_M || ss_X || ct_X || pk_X || XWingLabel) with
  XWingLabel = 5c2e2f2f5e5c ("\\.//^\\").

The expanded key objects are built once, when the key is made or loaded, and kept in the
`PrivateKey`, so decapsulation does not repeat the expansion.
With the pqcrypto fallback, key pairs cannot be derived from a seed; such keys are stored in
expanded form (ML-KEM decapsulation key || X25519 private key), marked by their length.
"""

from __future__ import annotations

import hashlib
import os
from typing import NamedTuple

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from nyx.crypto.errors import KemError
from nyx.crypto.kem import PrivateKey, check_key, check_length
from nyx.crypto.mlkem import MlKem

XWING_LABEL = bytes.fromhex("5c2e2f2f5e5c")
_MLKEM_PUBLIC = 1184
_MLKEM_CIPHERTEXT = 1088


class _Material(NamedTuple):
    mlkem_key: PrivateKey
    x25519_key: X25519PrivateKey
    x25519_public: bytes


def _combine(ss_m: bytes, ss_x: bytes, ct_x: bytes, pk_x: bytes) -> bytes:
    return hashlib.sha3_256(ss_m + ss_x + ct_x + pk_x + XWING_LABEL).digest()


def _x25519(private: X25519PrivateKey, public: bytes) -> bytes:
    try:
        return private.exchange(X25519PublicKey.from_public_bytes(public))
    except ValueError as error:  # all-zero output: a low-order point
        raise KemError("xwing X25519 component is a low-order point") from error


class XWingKem:
    """X-Wing: 1216-byte public keys, 1120-byte ciphertexts, 32-byte secrets and seeds."""

    name = "xwing"
    public_key_size = _MLKEM_PUBLIC + 32
    ciphertext_size = _MLKEM_CIPHERTEXT + 32
    shared_secret_size = 32
    seed_size = 32

    def __init__(self, backend: str | None = None) -> None:
        self._mlkem = MlKem(768, backend)
        self.backend = self._mlkem.backend
        if self.backend != "cryptography":
            self.seed_size = None  # type: ignore[misc]  # derive needs OpenSSL's seeded keygen
        self._expanded_size = 2400 + 32

    def _assemble(self, mlkem_key: PrivateKey, x_private: X25519PrivateKey, secret: bytes) -> tuple[PrivateKey, bytes]:
        pk_x = x_private.public_key().public_bytes_raw()
        public = mlkem_key.public_key + pk_x
        return PrivateKey(self.name, public, secret, _Material(mlkem_key, x_private, pk_x)), public

    def derive(self, seed: bytes) -> tuple[PrivateKey, bytes]:
        """expandDecapsulationKey of the draft: the key pair for a 32-byte seed."""
        check_length(self.name, "seed", seed, 32)
        expanded = hashlib.shake_256(bytes(seed)).digest(96)
        mlkem_key, _ = self._mlkem.derive(expanded[:64])
        return self._assemble(mlkem_key, X25519PrivateKey.from_private_bytes(expanded[64:]), bytes(seed))

    def generate(self) -> tuple[PrivateKey, bytes]:
        if self.backend == "cryptography":
            return self.derive(os.urandom(32))
        mlkem_key, _ = self._mlkem.generate()
        x_private = X25519PrivateKey.generate()
        return self._assemble(mlkem_key, x_private, mlkem_key.secret + x_private.private_bytes_raw())

    def load_private(self, secret: bytes) -> PrivateKey:
        """A key from its 32-byte seed, or from the expanded form the pqcrypto fallback stores."""
        if len(secret) == 32:
            return self.derive(secret)[0]
        check_length(self.name, "expanded private key", secret, self._expanded_size)
        secret = bytes(secret)
        mlkem_key = MlKem(768, "pqcrypto").load_private(secret[:2400])
        mlkem_key.kem_name = self._mlkem.name
        return self._assemble(mlkem_key, X25519PrivateKey.from_private_bytes(secret[2400:]), secret)[0]

    def encapsulate(self, public_key: bytes) -> tuple[bytes, bytes]:
        check_length(self.name, "public key", public_key, self.public_key_size)
        public_key = bytes(public_key)
        pk_x = public_key[_MLKEM_PUBLIC:]
        ephemeral = X25519PrivateKey.generate()
        ct_x = ephemeral.public_key().public_bytes_raw()
        ss_x = _x25519(ephemeral, pk_x)
        ct_m, ss_m = self._mlkem.encapsulate(public_key[:_MLKEM_PUBLIC])
        return ct_m + ct_x, _combine(ss_m, ss_x, ct_x, pk_x)

    def decapsulate(self, private_key: PrivateKey, ciphertext: bytes) -> bytes:
        check_key(self.name, private_key)
        check_length(self.name, "ciphertext", ciphertext, self.ciphertext_size)
        ciphertext = bytes(ciphertext)
        material: _Material = private_key.material
        ct_x = ciphertext[_MLKEM_CIPHERTEXT:]
        ss_m = self._mlkem.decapsulate(material.mlkem_key, ciphertext[:_MLKEM_CIPHERTEXT])
        ss_x = _x25519(material.x25519_key, ct_x)
        return _combine(ss_m, ss_x, ct_x, material.x25519_public)
