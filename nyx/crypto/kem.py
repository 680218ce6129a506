"""One interface for every key encapsulation mechanism nyx uses, and the registry `kem(name)`.

A KEM object is stateless and safe to share. Private keys are opaque `PrivateKey` objects that hold
the backend's key objects (so a key is parsed once, not per operation) and never print their
secret; public keys, ciphertexts and shared secrets are plain bytes, as they travel on the wire.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from nyx.crypto.errors import KemError


class PrivateKey:
    """A KEM private key: the backend key material plus the public key it belongs to.

    `secret` is what `Kem.load_private` accepts back (the seed where the scheme has one). It is
    excluded from `repr` so keys cannot reach logs by accident.
    """

    __slots__ = ("kem_name", "public_key", "secret", "_material")

    def __init__(self, kem_name: str, public_key: bytes, secret: bytes, material: Any) -> None:
        self.kem_name = kem_name
        self.public_key = public_key
        self.secret = secret
        self._material = material

    @property
    def material(self) -> Any:
        """Backend key objects; only the KEM that made this key knows their shape."""
        return self._material

    def __repr__(self) -> str:
        return f"<{self.kem_name} private key for public key {self.public_key[:4].hex()}…>"


@runtime_checkable
class Kem(Protocol):
    """The operations and sizes every KEM offers (see docs/protocol.md for the schemes)."""

    name: str
    public_key_size: int
    ciphertext_size: int
    shared_secret_size: int
    #: Length of the seed `derive` takes, or None when the scheme defines no derivation.
    seed_size: int | None

    def generate(self) -> tuple[PrivateKey, bytes]:
        """A fresh key pair: (private key, public key bytes)."""
        ...

    def derive(self, seed: bytes) -> tuple[PrivateKey, bytes]:
        """The key pair the scheme defines for `seed`; UnsupportedOperation if it defines none."""
        ...

    def encapsulate(self, public_key: bytes) -> tuple[bytes, bytes]:
        """(ciphertext, shared secret) for the holder of `public_key`."""
        ...

    def decapsulate(self, private_key: PrivateKey, ciphertext: bytes) -> bytes:
        """The shared secret inside `ciphertext`."""
        ...

    def load_private(self, secret: bytes) -> PrivateKey:
        """A private key from the bytes in `PrivateKey.secret` (e.g. a key file)."""
        ...


def check_length(kem_name: str, what: str, value: bytes, expected: int) -> None:
    """Raise a KemError naming the KEM and the field when `value` has the wrong length."""
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise KemError(f"{kem_name} {what} must be bytes, not {type(value).__name__}")
    if len(value) != expected:
        raise KemError(f"{kem_name} {what} must be {expected} bytes, got {len(value)}")


def check_key(kem_name: str, private_key: PrivateKey) -> None:
    """Refuse a private key made by another KEM (its material would not fit)."""
    if not isinstance(private_key, PrivateKey):
        raise KemError(f"{kem_name} needs a PrivateKey, not {type(private_key).__name__}")
    if private_key.kem_name != kem_name:
        raise KemError(f"a {private_key.kem_name} private key cannot decapsulate {kem_name}")


def _factories() -> dict[str, Callable[[str | None], Kem]]:
    # Imported here so that `import nyx.crypto` stays cheap and backends load on first use.
    from nyx.crypto.dhkem import X25519Kem
    from nyx.crypto.hqc import HqcKem
    from nyx.crypto.mlkem import MlKem
    from nyx.crypto.xwing import XWingKem

    return {
        "x25519": lambda backend: X25519Kem(),
        "xwing": lambda backend: XWingKem(backend),
        "ml-kem-768": lambda backend: MlKem(768, backend),
        "ml-kem-1024": lambda backend: MlKem(1024, backend),
        "hqc-128": lambda backend: HqcKem(),
    }


KEM_NAMES = ("x25519", "xwing", "ml-kem-768", "ml-kem-1024", "hqc-128")


def kem(name: str, *, backend: str | None = None) -> Kem:
    """The KEM called `name` (one of KEM_NAMES).

    `backend` chooses who serves ML-KEM (for `ml-kem-*` and `xwing`): "cryptography" (OpenSSL,
    the default when the build has it) or "pqcrypto" (the fallback). Other KEMs ignore it.
    """
    factories = _factories()
    if name not in factories:
        raise KemError(f"unknown KEM {name!r}; known: {', '.join(KEM_NAMES)}")
    return factories[name](backend)
