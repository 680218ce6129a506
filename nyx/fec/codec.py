"""`ReedSolomon(k, m)`: a systematic erasure code over packets, parity identical to reedsolo's.

A block is k data shards of equal length; the code adds m parity shards, and any k of the k + m
shards give the data back. Shard i of the block is codeword position i: data first, then parity.
Byte position j of every shard, read down the block, is one reedsolo codeword: `RSCodec(m)`
encoding the k bytes `data[0][j], ..., data[k-1][j]` yields exactly `parity[0][j], ...,
parity[m-1][j]`. So reedsolo can check us, and another implementation that follows reedsolo's
conventions (field 0x11d, generator 2, first consecutive root 0) can decode our blocks.

Decoding solves for the missing data only. With e data shards missing and e parity shards in
hand, the k x k submatrix of the generator [I; P] for the received shards is block triangular,
and its inverse's rows for the missing data are

    missing = A^-1 @ parity_received  +  A^-1 @ B @ data_received

where A (e x e) and B (e x (k - e)) are the columns of the received parity rows of P for the
missing and the received data. Inverting A costs O(e^3) instead of O(k^3) for the full k x k
inverse, which matters at 223+32. The resulting e x k recovery matrix is cached per erasure
pattern (10+3 has only 378 patterns; a lossy path repeats them).
"""

from __future__ import annotations

import operator
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

import numpy as np

from nyx.fec import gf256
from nyx.fec.errors import FecError
from nyx.fec.gf256 import U8
from nyx.fec.kernel import MatrixKernel

MAX_SHARDS: Final = gf256.ORDER  # a codeword over GF(256) has at most 255 symbols

ShardBytes = bytes | bytearray | memoryview


class ReedSolomon:
    """A systematic Reed-Solomon erasure code with k data and m parity shards (k + m <= 255).

    Construction builds the parity matrix and its packed tables once (milliseconds at 223+32),
    so keep one instance per (k, m). Not thread-safe: decode updates the recovery cache, so give
    each thread its own instance (the asyncio shells are single-threaded).
    """

    def __init__(self, k: int, m: int, *, recovery_cache_size: int = 512) -> None:
        if not isinstance(k, int) or not isinstance(m, int):
            raise FecError(f"k and m must be integers, got k={k!r}, m={m!r}")
        if k < 1 or m < 0:
            raise FecError(f"need k >= 1 data shards and m >= 0 parity shards, got k={k}, m={m}")
        if k + m > MAX_SHARDS:
            raise FecError(
                f"k + m = {k + m} exceeds {MAX_SHARDS}, the longest codeword over GF(256); "
                "split the data into more blocks"
            )
        self.k: Final = k
        self.m: Final = m
        self.parity_matrix: Final[U8] = gf256.systematic_parity_matrix(k, m)
        self.parity_matrix.setflags(write=False)
        self._encoder = MatrixKernel.build(self.parity_matrix) if m else None
        self._recovery: OrderedDict[tuple[tuple[int, ...], tuple[int, ...]], MatrixKernel]
        self._recovery = OrderedDict()
        self._recovery_cache_size = recovery_cache_size

    def __repr__(self) -> str:
        return f"ReedSolomon(k={self.k}, m={self.m})"

    @property
    def n(self) -> int:
        """Shards per block: k + m."""
        return self.k + self.m

    # -- encoding -------------------------------------------------------------------------------

    def encode(self, data_shards: Sequence[ShardBytes]) -> list[bytes]:
        """The m parity shards for k equal-length data shards."""
        if len(data_shards) != self.k:
            raise FecError(f"{self!r} encodes exactly {self.k} data shards, got {len(data_shards)}")
        length = _common_length(enumerate(data_shards))
        parity = self.encode_array(_stack(data_shards, length))
        return [row.tobytes() for row in parity]

    def encode_array(self, data: U8) -> U8:
        """Parity for a (k, length) uint8 array; returns (m, length). The zero-copy form."""
        if data.ndim != 2 or data.shape[0] != self.k or data.dtype != np.uint8:
            raise FecError(f"{self!r} encodes a (k={self.k}, length) uint8 array, got {data.dtype} {data.shape}")
        if self._encoder is None:
            return np.zeros((0, data.shape[1]), dtype=np.uint8)
        return self._encoder.apply(data)

    # -- decoding -------------------------------------------------------------------------------

    def decode(self, shards: Mapping[int, ShardBytes]) -> list[bytes]:
        """The k data shards from any k (or more) of the k + m shards, keyed by shard index.

        Extra shards beyond k are ignored (data shards are preferred: they need no arithmetic).
        """
        shards = {self._index(index): shard for index, shard in shards.items()}
        if len(shards) < self.k:
            raise FecError(
                f"{self!r} needs any {self.k} of {self.n} shards to decode, got {len(shards)} "
                f"(indices {sorted(shards)}); the block is lost unless more arrive or are resent"
            )
        length = _common_length(shards.items())
        missing = tuple(i for i in range(self.k) if i not in shards)
        if not missing:
            return [bytes(shards[i]) for i in range(self.k)]
        parity_used = tuple(sorted(i for i in shards if i >= self.k))[: len(missing)]
        present = tuple(i for i in range(self.k) if i in shards)
        received = present + parity_used
        kernel = self._recovery_kernel(missing, parity_used)
        recovered = kernel.apply(_stack([shards[i] for i in received], length))
        out: list[bytes] = [b""] * self.k
        for i in present:
            out[i] = bytes(shards[i])
        for row, i in enumerate(missing):
            out[i] = recovered[row].tobytes()
        return out

    def _index(self, index: object) -> int:
        """A shard index as a plain int: any integer type (numpy's too), never a bool or a str."""
        try:
            position = operator.index(index)  # type: ignore[arg-type]
        except TypeError:
            raise FecError(f"shard indices must be integers, got {type(index).__name__} {index!r}") from None
        if isinstance(index, bool):
            raise FecError(f"shard indices must be integers, got the bool {index!r}")
        if not 0 <= position < self.n:
            raise FecError(f"shard index {position} is outside 0..{self.n - 1} for {self!r}")
        return position

    def _recovery_kernel(self, missing: tuple[int, ...], parity_used: tuple[int, ...]) -> MatrixKernel:
        """The e x k matrix mapping (received data, received parity) to the missing data, cached."""
        key = (missing, parity_used)
        kernel = self._recovery.get(key)
        if kernel is not None:
            self._recovery.move_to_end(key)
            return kernel
        rows = np.array([i - self.k for i in parity_used], dtype=np.intp)
        present = [i for i in range(self.k) if i not in missing]
        a = self.parity_matrix[np.ix_(rows, np.array(missing, dtype=np.intp))]
        b = self.parity_matrix[np.ix_(rows, np.array(present, dtype=np.intp))]
        a_inv = gf256.inverse_matrix(a)
        # parity_r = A @ missing + B @ present  =>  missing = A^-1 B present + A^-1 parity_r
        recovery = np.concatenate([gf256.matmul(a_inv, b), a_inv], axis=1)
        kernel = MatrixKernel.build(recovery)
        self._recovery[key] = kernel
        if len(self._recovery) > self._recovery_cache_size:
            self._recovery.popitem(last=False)
        return kernel


def _common_length(indexed: Iterable[tuple[int, ShardBytes]]) -> int:
    """The shared length of the shards, or a FecError naming the first one that differs."""
    length: int | None = None
    first = -1
    for index, shard in indexed:
        if not isinstance(shard, (bytes, bytearray, memoryview)):
            raise FecError(f"shard {index} is {type(shard).__name__}, not bytes")
        size = len(shard)
        if length is None:
            length, first = size, index
        elif size != length:
            raise FecError(
                f"shard {index} is {size} bytes but shard {first} is {length}; "
                "every shard of a block has the same length (pad with nyx.fec.framing)"
            )
    if length is None:
        raise FecError("no shards given")
    return length


def _stack(rows: Sequence[ShardBytes], length: int) -> U8:
    """Rows of equal length as one (len(rows), length) uint8 array, with a single copy."""
    if length == 0:
        return np.zeros((len(rows), 0), dtype=np.uint8)
    return np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(len(rows), length)
