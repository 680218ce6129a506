"""Lioness: a wide-block cipher (SPRP) over the whole Sphinx payload.

Why a wide block: a mix cannot check the payload (only the last hop can), so a stream cipher would
let an attacker flip a bit at the first hop and look for the flipped bit at the exit (a tagging
attack). Under a strong pseudorandom permutation any change anywhere turns the whole block into
noise, so the exit's zero-prefix check fails and a tagged packet is destroyed rather than traced.

Lioness (Anderson and Biham, 1996) is four Feistel rounds over a block split into a 32-byte left
part L and the rest R:

    R ^= S(L ^ k1);  L ^= H(k2, R);  R ^= S(L ^ k3);  L ^= H(k4, R)

with S the ChaCha20 keystream (`keys.chacha20_xor`, from `cryptography`) and H keyed BLAKE2b-256
(from `hashlib`). Each S round needs a fresh cipher because its key is data-dependent; that is two
of the three cipher set-ups per hop, and the reason the rest of the hop shares one keystream.
"""

from __future__ import annotations

import hashlib

from nyx.mix.keys import chacha20_xor

KEY_BYTES = 128  # four 32-byte round keys
LEFT_BYTES = 32  # a ChaCha20 key and a BLAKE2b-256 digest


def _stream_xor(key: int, data: bytes) -> bytes:
    # Every S key is single-use (it depends on the block), as chacha20_xor requires.
    return chacha20_xor(key.to_bytes(32, "little"), data)


def _hash(key: bytes, data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, key=key, digest_size=32).digest(), "little")


class Lioness:
    """One Lioness key (four round keys); encrypt and decrypt are inverse permutations.

    The object is built once per hop and used once, so it holds the round keys in the forms the
    rounds need (ints for the XOR into L, bytes for BLAKE2b keys).
    """

    __slots__ = ("_k1", "_k2", "_k3", "_k4")

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"a Lioness key is {KEY_BYTES} bytes, not {len(key)}")
        self._k1 = int.from_bytes(key[0:32], "little")
        self._k2 = key[32:64]
        self._k3 = int.from_bytes(key[64:96], "little")
        self._k4 = key[96:128]

    def encrypt(self, block: bytes) -> bytes:
        if len(block) <= LEFT_BYTES:
            raise ValueError(f"a Lioness block must be longer than {LEFT_BYTES} bytes")
        left = int.from_bytes(block[:LEFT_BYTES], "little")
        right = _stream_xor(left ^ self._k1, block[LEFT_BYTES:])
        left ^= _hash(self._k2, right)
        right = _stream_xor(left ^ self._k3, right)
        left ^= _hash(self._k4, right)
        return left.to_bytes(LEFT_BYTES, "little") + right

    def decrypt(self, block: bytes) -> bytes:
        if len(block) <= LEFT_BYTES:
            raise ValueError(f"a Lioness block must be longer than {LEFT_BYTES} bytes")
        left = int.from_bytes(block[:LEFT_BYTES], "little")
        right = block[LEFT_BYTES:]
        left ^= _hash(self._k4, right)
        right = _stream_xor(left ^ self._k3, right)
        left ^= _hash(self._k2, right)
        right = _stream_xor(left ^ self._k1, right)
        return left.to_bytes(LEFT_BYTES, "little") + right
