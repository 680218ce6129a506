"""Retry tokens: proof that a client can receive at the address it sends from (RFC 9000 8.1.2).

Under load the transport answers a client's first Initial with a Retry packet instead of a
connection; the client repeats its Initial carrying the token from the Retry. A sender with a
spoofed source address never sees the token, so it can cost us only stateless Retry replies
(each smaller than the Initial that caused it: no amplification).

The token is sealed with AES-128-GCM under a key made when the transport starts: the client's
address is authenticated data, and the plaintext carries the issue time, the client's original
Destination Connection ID (which the server must echo in its transport parameters) and the
Source Connection ID of our Retry (which the client must now use as its Destination). We use
one token format for both backends: qh3's own handler seals with RSA-2048, so every forged token
would cost a private-key operation, and it checks neither the issue time nor the connection ID.

Sans-I/O: bytes, an address and a clock in; a token or a verdict out.
"""

from __future__ import annotations

import ipaddress
import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE_BYTES = 12
TAG_BYTES = 16
TOKEN_LIFETIME_S = 10.0  # a client returns the token one round trip after the Retry
_ISSUED = struct.Struct(">d")


def encode_address(address: tuple[str, int]) -> bytes:
    """The client's IP address and port as bytes (authenticated, not sent, in the token).
    Never raises: a host string that is not a plain IP address is used as it is."""
    try:
        host = ipaddress.ip_address(address[0]).packed
    except ValueError:
        host = str(address[0]).encode()
    return host + (address[1] & 0xFFFF).to_bytes(2, "big")


class RetryTokens:
    """Issues and checks Retry tokens for one endpoint (the key never leaves this object).

    `rejected` counts tokens that failed (forged, expired, wrong address or connection ID): such
    an Initial is dropped, since it claims a validation it does not have.
    """

    def __init__(self, lifetime_s: float = TOKEN_LIFETIME_S, key: bytes | None = None) -> None:
        self.lifetime_s = lifetime_s
        self._aead = AESGCM(key if key is not None else AESGCM.generate_key(bit_length=128))
        self.issued = 0
        self.rejected = 0

    def issue(
        self, address: tuple[str, int], original_cid: bytes, retry_cid: bytes, now: float
    ) -> bytes:
        """A token for `address`, remembering the client's first DCID and our Retry SCID."""
        self.issued += 1
        plaintext = _ISSUED.pack(now) + bytes([len(original_cid)]) + original_cid + retry_cid
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext, encode_address(address))

    def validate(
        self, address: tuple[str, int], destination_cid: bytes, token: bytes, now: float
    ) -> bytes | None:
        """The original DCID if `token` is one we issued to `address` for `destination_cid` and
        it is younger than `lifetime_s`; None (counted in `rejected`) otherwise."""
        original_cid = self._open(address, destination_cid, token, now)
        if original_cid is None:
            self.rejected += 1
        return original_cid

    def _open(
        self, address: tuple[str, int], destination_cid: bytes, token: bytes, now: float
    ) -> bytes | None:
        if len(token) < NONCE_BYTES + TAG_BYTES + _ISSUED.size + 1:
            return None
        try:
            aad = encode_address(address)
            plaintext = self._aead.decrypt(token[:NONCE_BYTES], token[NONCE_BYTES:], aad)
        except (InvalidTag, ValueError):
            return None
        (issued_at,) = _ISSUED.unpack_from(plaintext)
        length = plaintext[_ISSUED.size]
        start = _ISSUED.size + 1
        original_cid = plaintext[start : start + length]
        retry_cid = plaintext[start + length :]
        if retry_cid != destination_cid or not 0.0 <= now - issued_at <= self.lifetime_s:
            return None
        return original_cid
