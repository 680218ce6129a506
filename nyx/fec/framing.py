"""Shard framing: how a block of variable-length payloads becomes equal-length shards and back.

Reed-Solomon needs every shard of a block to be the same length, but packets are not: the last
payload of a message is usually short. Each data shard therefore carries its payload behind a
2-byte length prefix and is zero-padded to the block's body size; the prefix is inside the
coded body, so a data shard rebuilt from parity gets its exact length back too.

Every shard on the wire starts with a 7-byte header so that a receiver can place it without
any other context, including when the redundancy controller changes m from block to block:

    block   u32  block sequence number (wraps)
    index   u8   position in the block: 0..k-1 data, k..k+m-1 parity
    k       u8   data shards in this block (a short final block just has a smaller k)
    m       u8   parity shards in this block
    body    ...  data: u16 payload length, payload, zero padding; parity: coded bytes

Integers are big-endian (network order). A header that contradicts itself or its block (index
outside k + m, k + m over 255, a body of another length than the block's, before or after the
block was decoded) is a FecError.

What the framing does not do is authenticate: an erasure code corrects losses, not lies. A
shard whose header is wrong but self-consistent and arrives first decides its block's shape
(a first shard claiming k = 1 completes the block alone), and a changed payload byte is a changed
payload. Feed `BlockDecoder` only shards whose bytes are the encoder's: in nyx each wire shard,
data and parity alike, travels sealed as one AEAD record of the stream session, so a flipped or
forged shard is refused by the record layer and reaches the decoder as an erasure
(docs/fec.md, "Integrity").
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from nyx.fec.codec import MAX_SHARDS, ReedSolomon
from nyx.fec.errors import FecError

_HEADER: Final = struct.Struct(">IBBB")
HEADER_BYTES: Final = _HEADER.size  # 7
LENGTH_PREFIX_BYTES: Final = 2
_MAX_PAYLOAD: Final = 0xFFFF


@dataclass(frozen=True, slots=True)
class Shard:
    """One shard as it travels: where it belongs (block, index, k, m) and its coded body."""

    block: int
    index: int
    k: int
    m: int
    body: bytes

    @property
    def is_data(self) -> bool:
        return self.index < self.k

    def to_bytes(self) -> bytes:
        return _HEADER.pack(self.block, self.index, self.k, self.m) + self.body

    @classmethod
    def parse(cls, wire: bytes | bytearray | memoryview) -> Shard:
        """Read a shard from the wire; FecError if the header cannot describe a real block."""
        if len(wire) < HEADER_BYTES + LENGTH_PREFIX_BYTES:
            raise FecError(
                f"shard of {len(wire)} bytes is shorter than its header and length prefix "
                f"({HEADER_BYTES + LENGTH_PREFIX_BYTES} bytes)"
            )
        block, index, k, m = _HEADER.unpack_from(wire)
        if k == 0 or k + m > MAX_SHARDS:
            raise FecError(f"shard header of block {block} claims k={k}, m={m}: need 1 <= k and k + m <= {MAX_SHARDS}")
        if index >= k + m:
            raise FecError(f"shard index {index} is outside block {block} of k={k} + m={m} shards")
        return cls(block, index, k, m, bytes(wire[HEADER_BYTES:]))


def pad(payload: bytes | bytearray | memoryview, body_bytes: int) -> bytes:
    """A data shard body: the payload's length, the payload, zeros up to `body_bytes`."""
    room = body_bytes - LENGTH_PREFIX_BYTES
    if len(payload) > min(room, _MAX_PAYLOAD):
        raise FecError(f"payload of {len(payload)} bytes does not fit a {body_bytes}-byte shard body (at most {room})")
    return len(payload).to_bytes(LENGTH_PREFIX_BYTES, "big") + bytes(payload) + bytes(room - len(payload))


def unpad(body: bytes | bytearray | memoryview) -> bytes:
    """The payload of a data shard body; FecError if the prefix or padding is not what `pad` wrote."""
    if len(body) < LENGTH_PREFIX_BYTES:
        raise FecError(f"shard body of {len(body)} bytes has no room for its length prefix")
    length = int.from_bytes(body[:LENGTH_PREFIX_BYTES], "big")
    end = LENGTH_PREFIX_BYTES + length
    if end > len(body):
        raise FecError(f"length prefix says {length} bytes but the shard body holds only {len(body) - LENGTH_PREFIX_BYTES}")
    if bytes(body[end:]).count(0) != len(body) - end:  # C speed; any() would loop per byte
        raise FecError("shard padding is not zero: the shard is corrupt or not a data shard")
    return bytes(body[LENGTH_PREFIX_BYTES:end])


class _Codecs:
    """ReedSolomon instances by (k, m): building one costs more than coding a block with it."""

    def __init__(self, limit: int = 64) -> None:
        self._codecs: OrderedDict[tuple[int, int], ReedSolomon] = OrderedDict()
        self._limit = limit

    def get(self, k: int, m: int) -> ReedSolomon:
        codec = self._codecs.get((k, m))
        if codec is None:
            codec = self._codecs[(k, m)] = ReedSolomon(k, m)
            if len(self._codecs) > self._limit:
                self._codecs.popitem(last=False)
        else:
            self._codecs.move_to_end((k, m))
        return codec


class BlockEncoder:
    """Sender side: a block of payloads in, k + m wire shards of `shard_bytes` each out."""

    def __init__(self, shard_bytes: int) -> None:
        if shard_bytes < HEADER_BYTES + LENGTH_PREFIX_BYTES:
            raise FecError(f"shard_bytes={shard_bytes} leaves no room for a payload after the {HEADER_BYTES}-byte header")
        self.shard_bytes: Final = shard_bytes
        self.body_bytes: Final = shard_bytes - HEADER_BYTES
        self.max_payload_bytes: Final = min(self.body_bytes - LENGTH_PREFIX_BYTES, _MAX_PAYLOAD)
        self._codecs = _Codecs()

    def encode(self, block: int, payloads: Sequence[bytes], m: int) -> list[bytes]:
        """Wire shards for one block: len(payloads) data shards, then m parity shards."""
        if not payloads:
            raise FecError(f"block {block} has no payloads to encode")
        k = len(payloads)
        codec = self._codecs.get(k, m)  # raises FecError for k + m > 255
        bodies = [pad(payload, self.body_bytes) for payload in payloads]
        bodies += codec.encode(bodies)
        return [_HEADER.pack(block & 0xFFFFFFFF, i, k, m) + body for i, body in enumerate(bodies)]


@dataclass(frozen=True, slots=True)
class RecoveredBlock:
    """A block whose payloads are all known: `recovered` lists the data indices rebuilt from parity."""

    block: int
    payloads: list[bytes]
    recovered: tuple[int, ...]


@dataclass(slots=True)
class _OpenBlock:
    k: int
    m: int
    body_bytes: int
    bodies: dict[int, bytes]


class BlockDecoder:
    """Receiver side: wire shards in any order and with losses; each block out once, when decodable.

    Memory is bounded: at most `max_open_blocks` incomplete blocks are held (the oldest is given
    up first; ARQ recovers it), and completed block numbers are remembered in a window of the
    same size so late or duplicate shards are ignored instead of reopening a block.
    """

    def __init__(self, max_open_blocks: int = 64) -> None:
        self._open: OrderedDict[int, _OpenBlock] = OrderedDict()
        # Finished blocks by number: (k, m, body length), to check late shards against.
        self._done: OrderedDict[int, tuple[int, int, int]] = OrderedDict()
        self._limit = max_open_blocks
        self._codecs = _Codecs()
        self.abandoned_blocks = 0
        self.contradicting_shards = 0

    def receive(self, wire: bytes | bytearray | memoryview) -> RecoveredBlock | None:
        shard = Shard.parse(wire)
        done = self._done.get(shard.block)
        if done is not None:
            if done != (shard.k, shard.m, len(shard.body)):
                self.contradicting_shards += 1
                raise FecError(
                    f"shard {shard.index} of block {shard.block} says k={shard.k}, m={shard.m} with a "
                    f"{len(shard.body)}-byte body, but the block was decoded as k={done[0]}, m={done[1]} "
                    f"with {done[2]}: a header was corrupted or forged, so that block may be incomplete "
                    "(BlockDecoder must be fed authenticated shards)"
                )
            return None
        state = self._open.get(shard.block)
        if state is None:
            state = _OpenBlock(shard.k, shard.m, len(shard.body), {})
            self._open[shard.block] = state
            if len(self._open) > self._limit:
                self._open.popitem(last=False)
                self.abandoned_blocks += 1
        elif (shard.k, shard.m) != (state.k, state.m):
            self.contradicting_shards += 1
            raise FecError(
                f"shard {shard.index} of block {shard.block} says k={shard.k}, m={shard.m} "
                f"but earlier shards said k={state.k}, m={state.m}"
            )
        elif len(shard.body) != state.body_bytes:
            self.contradicting_shards += 1
            raise FecError(
                f"shard {shard.index} of block {shard.block} has a {len(shard.body)}-byte body "
                f"but the block's shards have {state.body_bytes}"
            )
        state.bodies.setdefault(shard.index, shard.body)
        if len(state.bodies) < state.k:
            return None
        del self._open[shard.block]
        self._done[shard.block] = (state.k, state.m, state.body_bytes)
        if len(self._done) > self._limit:
            self._done.popitem(last=False)
        bodies = self._codecs.get(state.k, state.m).decode(state.bodies)
        recovered = tuple(i for i in range(state.k) if i not in state.bodies)
        return RecoveredBlock(shard.block, [unpad(body) for body in bodies], recovered)
