"""Micro benchmark records of the crypto core, each against its primitive floor.

The floor of an operation is the sum of the costs of the library primitives it cannot avoid
(X25519 and ML-KEM calls from `cryptography`, pqcrypto's HQC, SHA-3, HMAC-SHA256 and the
SHA-256 transcript hashes), each timed on its own in the same run. A handshake's ratio to its
floor is therefore the share of its time spent in primitives: 1.0 would be zero overhead.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric import mlkem
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from nyx.bench.timing import MicroRecord, ops_per_s, seconds_per_op
from nyx.crypto import kdf
from nyx.crypto.session import DIRECTION_I2R, DIRECTION_R2I, RecordSession
from nyx.crypto.suites import Suite
from nyx.stream.handshake import Initiator, InitReplayCache, Responder

RECORD_PAYLOAD = 1200


def handshake_pair(suite: Suite) -> tuple[Callable[[], object], Responder]:
    """A closure running one complete handshake of `suite` (both sides), and its responder."""
    private_key, public_key = suite.kem().generate()
    responder = Responder({suite: private_key}, replay_cache=InitReplayCache(capacity=1 << 24))
    keys = {suite: public_key}

    def handshake() -> object:
        now = time.time()
        initiator = Initiator(keys, preference=(suite,))
        accept, pending = responder.respond(initiator.start(now), now)
        finish, initiator_keys = initiator.receive(accept)
        return pending.finish(finish), initiator_keys

    return handshake, responder


class _Primitives:
    """Each raw library call a handshake makes, timed once per run (seconds per call)."""

    def __init__(self, budget_s: float) -> None:
        self.budget_s = budget_s
        self._cache: dict[str, float] = {}

    def cost(self, name: str) -> float:
        if name not in self._cache:
            self._cache[name] = seconds_per_op(self._operation(name), self.budget_s)
        return self._cache[name]

    def _operation(self, name: str) -> Callable[[], object]:
        x_private = X25519PrivateKey.generate()
        x_public = X25519PrivateKey.generate().public_key().public_bytes_raw()
        if name == "x25519 keygen":
            return lambda: X25519PrivateKey.generate().public_key().public_bytes_raw()
        if name == "x25519 key from bytes":
            raw = os.urandom(32)
            return lambda: X25519PrivateKey.from_private_bytes(raw).public_key().public_bytes_raw()
        if name == "x25519 exchange":
            return lambda: x_private.exchange(X25519PublicKey.from_public_bytes(x_public))
        if name.startswith("ml-kem"):
            size = name.split()[0].split("-")[-1]
            private_cls = getattr(mlkem, f"MLKEM{size}PrivateKey")
            public_cls = getattr(mlkem, f"MLKEM{size}PublicKey")
            private = private_cls.generate()
            public = private.public_key().public_bytes_raw()
            _, ciphertext = private.public_key().encapsulate()
            seed = os.urandom(64)
            return {
                "keygen": lambda: private_cls.generate().public_key().public_bytes_raw(),
                "keygen-from-seed": lambda: private_cls.from_seed_bytes(seed).public_key().public_bytes_raw(),
                "encaps": lambda: public_cls.from_public_bytes(public).encapsulate(),
                "decaps": lambda: private.decapsulate(ciphertext),
            }[name.split()[1]]
        if name.startswith("hqc-128"):
            from pqcrypto.kem import hqc_128

            public, secret = hqc_128.keygen()
            ciphertext, _ = hqc_128.encaps(public)
            return {
                "keygen": hqc_128.keygen,
                "encaps": lambda: hqc_128.encaps(public),
                "decaps": lambda: hqc_128.decaps(secret, ciphertext),
            }[name.split()[1]]
        if name == "sha3-256 combiner":
            block = os.urandom(134)
            return lambda: hashlib.sha3_256(block).digest()
        if name == "shake256 seed expansion":
            seed = os.urandom(32)
            return lambda: hashlib.shake_256(seed).digest(96)
        if name == "hmac-sha256":
            key, block = os.urandom(32), os.urandom(64)
            return lambda: hmac.digest(key, block, "sha256")
        if name.startswith("transcript "):
            suite = Suite.from_label(name.split()[1])
            kem = suite.kem()
            init = os.urandom(30 + kem.public_key_size + kem.ciphertext_size)
            accept = os.urandom(39 + kem.ciphertext_size)
            return lambda: kdf.transcript_hash(init, accept)
        raise KeyError(name)


def _kem_calls(suite: Suite) -> dict[str, int]:
    """The raw calls of one handshake's four KEM operations plus the ephemeral keygen."""
    if suite is Suite.CLASSIC:  # DHKEM: 2 HMACs per encapsulation or decapsulation
        return {"x25519 keygen": 3, "x25519 exchange": 4, "hmac-sha256": 8}
    if suite is Suite.HYBRID:  # X-Wing
        return {
            "shake256 seed expansion": 1, "ml-kem-768 keygen-from-seed": 1, "x25519 key from bytes": 1,
            "ml-kem-768 encaps": 2, "ml-kem-768 decaps": 2,
            "x25519 keygen": 2, "x25519 exchange": 4, "sha3-256 combiner": 4,
        }
    if suite is Suite.PQ:
        return {"ml-kem-1024 keygen": 1, "ml-kem-1024 encaps": 2, "ml-kem-1024 decaps": 2}
    return {"hqc-128 keygen": 1, "hqc-128 encaps": 2, "hqc-128 decaps": 2}


def handshake_floor(suite: Suite, primitives: _Primitives) -> float:
    """Seconds of primitive work in one handshake (both sides)."""
    calls = _kem_calls(suite)
    # Key schedule and confirmation: 8 extract/expand + 6 session keys + 4 tags = 18 HMACs;
    # transcript hashes TH2 and TH3 on each side, the replay digest and the key id ~ 5 transcripts.
    calls["hmac-sha256"] = calls.get("hmac-sha256", 0) + 18
    calls[f"transcript {suite.label}"] = 5
    return sum(primitives.cost(name) * count for name, count in calls.items())


def records(budget_s: float) -> list[MicroRecord]:
    primitives = _Primitives(budget_s)
    result: list[MicroRecord] = []
    for suite in (Suite.HYBRID, Suite.CLASSIC, Suite.PQ, Suite.PQ_ALT):
        handshake, _ = handshake_pair(suite)
        result.append(
            MicroRecord(
                name=f"handshake {suite.label} ({suite.kem_name}, both sides)",
                ops_per_s=ops_per_s(handshake, budget_s),
                reference="primitive floor (sum of its library calls)",
                reference_ops_per_s=1.0 / handshake_floor(suite, primitives),
            )
        )
    xwing = Suite.HYBRID.kem()
    private_key, public_key = xwing.generate()
    ciphertext, _ = xwing.encapsulate(public_key)
    encaps_floor = sum(primitives.cost(n) for n in ("ml-kem-768 encaps", "x25519 keygen", "x25519 exchange"))
    decaps_floor = primitives.cost("ml-kem-768 decaps") + primitives.cost("x25519 exchange")
    result.append(
        MicroRecord(
            "xwing encapsulate", ops_per_s(lambda: xwing.encapsulate(public_key), budget_s),
            "ml-kem-768 encaps + x25519 alone", 1.0 / encaps_floor,
        )
    )
    result.append(
        MicroRecord(
            "xwing decapsulate", ops_per_s(lambda: xwing.decapsulate(private_key, ciphertext), budget_s),
            "ml-kem-768 decaps + x25519 alone", 1.0 / decaps_floor,
        )
    )
    result.append(_record_seal(budget_s))
    return result


def _record_seal(budget_s: float) -> MicroRecord:
    secret = os.urandom(32)
    session = RecordSession(secret, secret, send_direction=DIRECTION_I2R, receive_direction=DIRECTION_R2I, now=0.0)
    payload = os.urandom(RECORD_PAYLOAD)
    aead = ChaCha20Poly1305(os.urandom(32))
    nonce = os.urandom(12)
    return MicroRecord(
        f"record seal {RECORD_PAYLOAD} B",
        ops_per_s(lambda: session.seal(payload, 0.0), budget_s),
        f"chacha20-poly1305 encrypt {RECORD_PAYLOAD} B",
        ops_per_s(lambda: aead.encrypt(nonce, payload, b""), budget_s),
    )
