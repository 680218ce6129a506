"""ML-KEM-768 and ML-KEM-1024 (FIPS 203), served by OpenSSL through `cryptography` or by pqcrypto.

`cryptography` is preferred (3x faster here, design section 8) and is the only backend that
derives a key pair from a seed; when the installed build lacks ML-KEM, pqcrypto serves the same
names with wire-compatible keys and ciphertexts. Private keys of the `cryptography` backend are
stored as their 64-byte seed (d || z); pqcrypto keys as the expanded FIPS 203 decapsulation key.
"""

from __future__ import annotations

import functools
from typing import Any

from nyx.crypto.errors import KemError, UnsupportedOperation
from nyx.crypto.kem import PrivateKey, check_key, check_length

BACKENDS = ("cryptography", "pqcrypto")

# FIPS 203 sizes by parameter set: (k, public key, ciphertext, expanded decapsulation key).
_SIZES = {768: (3, 1184, 1088, 2400), 1024: (4, 1568, 1568, 3168)}
SEED_SIZE = 64


@functools.cache
def openssl_has_mlkem() -> bool:
    """Whether the installed `cryptography` build can run ML-KEM (probed once)."""
    try:
        from cryptography.hazmat.primitives.asymmetric import mlkem

        mlkem.MLKEM768PrivateKey.generate()
    except Exception:  # ImportError, UnsupportedAlgorithm: any failure means "no"
        return False
    return True


def resolve_backend(backend: str | None) -> str:
    """The backend to use: the one asked for, else cryptography when it has ML-KEM."""
    if backend is None:
        return "cryptography" if openssl_has_mlkem() else "pqcrypto"
    if backend not in BACKENDS:
        raise KemError(f"unknown ML-KEM backend {backend!r}; known: {', '.join(BACKENDS)}")
    if backend == "cryptography" and not openssl_has_mlkem():
        raise UnsupportedOperation("this cryptography/OpenSSL build has no ML-KEM; use pqcrypto")
    return backend


class MlKem:
    """ML-KEM at one parameter set (768 or 1024) behind one backend."""

    shared_secret_size = 32
    seed_size: int | None = SEED_SIZE

    def __init__(self, parameter_set: int, backend: str | None = None) -> None:
        if parameter_set not in _SIZES:
            raise KemError(f"ML-KEM parameter set must be 768 or 1024, not {parameter_set}")
        self.name = f"ml-kem-{parameter_set}"
        self.backend = resolve_backend(backend)
        k, self.public_key_size, self.ciphertext_size, self._dk_size = _SIZES[parameter_set]
        self._public_slice = slice(384 * k, 768 * k + 32)  # ek inside the expanded dk
        if self.backend == "cryptography":
            from cryptography.hazmat.primitives.asymmetric import mlkem

            self._private_cls = getattr(mlkem, f"MLKEM{parameter_set}PrivateKey")
            self._public_cls = getattr(mlkem, f"MLKEM{parameter_set}PublicKey")
        else:
            import importlib

            self._pq = importlib.import_module(f"pqcrypto.kem.ml_kem_{parameter_set}")
            self.seed_size = None

    def _wrap(self, material: Any, secret: bytes, public: bytes) -> tuple[PrivateKey, bytes]:
        return PrivateKey(self.name, public, secret, material), public

    def generate(self) -> tuple[PrivateKey, bytes]:
        if self.backend == "cryptography":
            private = self._private_cls.generate()
            return self._wrap(private, private.private_bytes_raw(), private.public_key().public_bytes_raw())
        public, dk = self._pq.keygen()
        return self._wrap(dk, dk, public)

    def derive(self, seed: bytes) -> tuple[PrivateKey, bytes]:
        """ML-KEM.KeyGen_internal(d, z) for the 64-byte seed d || z (cryptography backend only)."""
        if self.backend != "cryptography":
            raise UnsupportedOperation(f"{self.name} derive needs the cryptography backend (pqcrypto has no seeded keygen)")
        check_length(self.name, "seed", seed, SEED_SIZE)
        private = self._private_cls.from_seed_bytes(bytes(seed))
        return self._wrap(private, bytes(seed), private.public_key().public_bytes_raw())

    def load_private(self, secret: bytes) -> PrivateKey:
        """A key from its 64-byte seed (cryptography) or its expanded decapsulation key (pqcrypto)."""
        if self.backend == "cryptography":
            return self.derive(secret)[0]
        check_length(self.name, "decapsulation key", secret, self._dk_size)
        dk = bytes(secret)
        return self._wrap(dk, dk, dk[self._public_slice])[0]

    def encapsulate(self, public_key: bytes) -> tuple[bytes, bytes]:
        check_length(self.name, "public key", public_key, self.public_key_size)
        try:
            if self.backend == "cryptography":
                shared, ciphertext = self._public_cls.from_public_bytes(bytes(public_key)).encapsulate()
                return ciphertext, shared
            return self._pq.encaps(bytes(public_key))
        except ValueError as error:  # e.g. coefficients not reduced mod q (FIPS 203 input check)
            raise KemError(f"{self.name} public key is not a valid encoding: {error}") from error

    def decapsulate(self, private_key: PrivateKey, ciphertext: bytes) -> bytes:
        check_key(self.name, private_key)
        check_length(self.name, "ciphertext", ciphertext, self.ciphertext_size)
        material = private_key.material
        try:
            if isinstance(material, bytes):  # pqcrypto key, usable whatever this object's backend
                return self._pq_module().decaps(material, bytes(ciphertext))
            return material.decapsulate(bytes(ciphertext))
        except ValueError as error:
            raise KemError(f"{self.name} ciphertext rejected: {error}") from error

    def _pq_module(self) -> Any:
        if self.backend == "pqcrypto":
            return self._pq
        import importlib

        return importlib.import_module(f"pqcrypto.kem.{self.name.replace('-', '_')}")
