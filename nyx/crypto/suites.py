"""Handshake suites: which KEM protects a session, by name and by wire number.

| suite | wire | KEM | why |
|---|---|---|---|
| classic | 1 | x25519 (DHKEM) | smallest and fastest; no post-quantum protection |
| hybrid | 2 | xwing | the default: secure while either X25519 or ML-KEM-768 stands |
| pq | 3 | ml-kem-1024 | post-quantum only, highest ML-KEM security level |
| pq-alt | 4 | hqc-128 | a code-based KEM, for agility should lattices fall |
"""

from __future__ import annotations

import functools
from enum import IntEnum

from nyx.crypto.kem import Kem, kem


class Suite(IntEnum):
    """A handshake suite; the integer is its wire number."""

    CLASSIC = 1
    HYBRID = 2
    PQ = 3
    PQ_ALT = 4

    @property
    def label(self) -> str:
        """The suite's name in configs and logs (`classic`, `hybrid`, `pq`, `pq-alt`)."""
        return self.name.lower().replace("_", "-")

    @property
    def kem_name(self) -> str:
        return _KEM_NAMES[self]

    def kem(self, backend: str | None = None) -> Kem:
        """The KEM object of this suite (`backend` as in `nyx.crypto.kem`); built once, shared."""
        return _suite_kem(self, backend)

    @property
    def post_quantum(self) -> bool:
        """Whether session keys stay secret against a quantum adversary recording today."""
        return self is not Suite.CLASSIC

    @classmethod
    def from_label(cls, label: str) -> Suite:
        for suite in cls:
            if suite.label == label:
                return suite
        raise ValueError(f"unknown suite {label!r}; known: {', '.join(s.label for s in cls)}")


_KEM_NAMES = {
    Suite.CLASSIC: "x25519",
    Suite.HYBRID: "xwing",
    Suite.PQ: "ml-kem-1024",
    Suite.PQ_ALT: "hqc-128",
}

#: The initiator's default preference: hybrid first; classic only if a responder has nothing else.
DEFAULT_PREFERENCE = (Suite.HYBRID, Suite.PQ, Suite.PQ_ALT, Suite.CLASSIC)


@functools.cache
def _suite_kem(suite: Suite, backend: str | None) -> Kem:
    # KEM objects are stateless; building one per handshake message would only cost time.
    return kem(suite.kem_name, backend=backend)
