"""nyx.crypto: the verified crypto core every layer shares.

- `kem(name)`: KEMs `x25519` (DHKEM), `xwing`, `ml-kem-768`, `ml-kem-1024`, `hqc-128`.
- `nyx.crypto.kdf`: HKDF-SHA256 and every key label of the protocol.
- `RecordSession`: ChaCha20-Poly1305 records with anti-replay and rekey.
- `Suite`: the handshake suites (`classic`, `hybrid`, `pq`, `pq-alt`) and their KEMs.
"""

from nyx.crypto.errors import CryptoError, KemError, RecordError, UnsupportedOperation
from nyx.crypto.kem import KEM_NAMES, Kem, PrivateKey, kem
from nyx.crypto.session import RecordSession, RekeyPolicy
from nyx.crypto.suites import Suite

__all__ = [
    "KEM_NAMES",
    "CryptoError",
    "Kem",
    "KemError",
    "PrivateKey",
    "RecordError",
    "RecordSession",
    "RekeyPolicy",
    "Suite",
    "UnsupportedOperation",
    "kem",
]
