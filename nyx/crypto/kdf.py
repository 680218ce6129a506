"""HKDF-SHA256 (RFC 5869) helpers and every label nyx derives a key with.

Keys are only ever derived through these functions, with a label from this module, so that one
file lists every key of the protocol and no two derivations can collide. Labels are ASCII, start
with the protocol version `nyx/1`, and are documented in docs/protocol.md.

HMAC comes from the standard library (OpenSSL underneath): at 1-2 us per call it is cheaper than
building a `cryptography` HKDF object, and HKDF is two lines on top of HMAC as RFC 5869 writes it.
"""

from __future__ import annotations

import hashlib
import hmac

HASH_LEN = 32

# Handshake key schedule (see docs/protocol.md, "Key schedule").
LABEL_HANDSHAKE_SALT = b"nyx/1 handshake"
LABEL_RESPONDER_CONFIRM = b"nyx/1 responder confirm"
LABEL_INITIATOR_CONFIRM = b"nyx/1 initiator confirm"
LABEL_TRAFFIC_I2R = b"nyx/1 traffic i2r"
LABEL_TRAFFIC_R2I = b"nyx/1 traffic r2i"
LABEL_SESSION_ID = b"nyx/1 session id"
# Record layer: the next key of a direction's chain (like TLS 1.3's KeyUpdate).
LABEL_KEY_UPDATE = b"nyx/1 key update"
LABEL_RECORD_KEY = b"nyx/1 record key"

ALL_LABELS = (
    LABEL_HANDSHAKE_SALT,
    LABEL_RESPONDER_CONFIRM,
    LABEL_INITIATOR_CONFIRM,
    LABEL_TRAFFIC_I2R,
    LABEL_TRAFFIC_R2I,
    LABEL_SESSION_ID,
    LABEL_KEY_UPDATE,
    LABEL_RECORD_KEY,
)


def hkdf_extract(salt: bytes, ikm: bytes) -> bytes:
    """HKDF-Extract: a pseudorandom key from input keying material (RFC 5869 section 2.2)."""
    return hmac.digest(salt or bytes(HASH_LEN), ikm, "sha256")


def hkdf_expand(prk: bytes, info: bytes, length: int = HASH_LEN) -> bytes:
    """HKDF-Expand: `length` bytes bound to `info` (RFC 5869 section 2.3)."""
    if not 0 < length <= 255 * HASH_LEN:
        raise ValueError(f"HKDF-SHA256 can expand 1..{255 * HASH_LEN} bytes, not {length}")
    if length <= HASH_LEN:  # the common case: one block
        return hmac.digest(prk, info + b"\x01", "sha256")[:length]
    blocks = []
    block = b""
    for counter in range(1, -(-length // HASH_LEN) + 1):
        block = hmac.digest(prk, block + info + bytes((counter,)), "sha256")
        blocks.append(block)
    return b"".join(blocks)[:length]


def derive(prk: bytes, label: bytes, context: bytes = b"", length: int = HASH_LEN) -> bytes:
    """Expand `prk` under a protocol label and a context (usually a transcript hash).

    The label is length-prefixed so that (label, context) pairs cannot be confused.
    """
    if label not in ALL_LABELS:
        raise ValueError(f"unknown key label {label!r}: add it to nyx.crypto.kdf")
    return hkdf_expand(prk, bytes((len(label),)) + label + context, length)


def transcript_hash(*messages: bytes) -> bytes:
    """SHA-256 over length-prefixed messages, so message boundaries are part of what is hashed."""
    h = hashlib.sha256()
    for message in messages:
        h.update(len(message).to_bytes(4, "big"))
        h.update(message)
    return h.digest()


def mac(key: bytes, data: bytes) -> bytes:
    """HMAC-SHA256 tag (used for key confirmation)."""
    return hmac.digest(key, data, "sha256")


def mac_ok(key: bytes, data: bytes, tag: bytes) -> bool:
    """Constant-time check of an HMAC-SHA256 tag."""
    return hmac.compare_digest(hmac.digest(key, data, "sha256"), tag)
