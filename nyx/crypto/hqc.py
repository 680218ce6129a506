"""HQC-128 from pqcrypto: a code-based KEM, kept for crypto agility.

If a structural attack on module lattices ever broke ML-KEM, the `pq-alt` suite still stands on a
different hardness assumption (decoding random quasi-cyclic codes). It is 20-50x slower than
ML-KEM here, so it is a fallback suite, not a default. HQC defines no seeded key derivation in
pqcrypto's API, so `derive` is unsupported.
"""

from __future__ import annotations

from nyx.crypto.errors import KemError, UnsupportedOperation
from nyx.crypto.kem import PrivateKey, check_key, check_length


class HqcKem:
    """HQC-128 (pqcrypto)."""

    name = "hqc-128"
    seed_size = None

    def __init__(self) -> None:
        from pqcrypto.kem import hqc_128

        self._pq = hqc_128
        self.public_key_size = hqc_128.PUBLIC_KEY_SIZE
        self.ciphertext_size = hqc_128.CIPHERTEXT_SIZE
        self.shared_secret_size = hqc_128.SHARED_SECRET_SIZE
        self._secret_size = hqc_128.SECRET_KEY_SIZE

    def generate(self) -> tuple[PrivateKey, bytes]:
        public, secret = self._pq.keygen()
        return PrivateKey(self.name, public, secret, secret), public

    def derive(self, seed: bytes) -> tuple[PrivateKey, bytes]:
        raise UnsupportedOperation("hqc-128 defines no seeded key derivation here; use generate()")

    def load_private(self, secret: bytes) -> PrivateKey:
        check_length(self.name, "private key", secret, self._secret_size)
        secret = bytes(secret)
        # pqcrypto's HQC secret key begins with the public key it belongs to.
        return PrivateKey(self.name, secret[: self.public_key_size], secret, secret)

    def encapsulate(self, public_key: bytes) -> tuple[bytes, bytes]:
        check_length(self.name, "public key", public_key, self.public_key_size)
        try:
            return self._pq.encaps(bytes(public_key))
        except ValueError as error:
            raise KemError(f"hqc-128 public key rejected: {error}") from error

    def decapsulate(self, private_key: PrivateKey, ciphertext: bytes) -> bytes:
        check_key(self.name, private_key)
        check_length(self.name, "ciphertext", ciphertext, self.ciphertext_size)
        try:
            return self._pq.decaps(private_key.material, bytes(ciphertext))
        except ValueError as error:
            raise KemError(f"hqc-128 ciphertext rejected: {error}") from error
