"""Applying a fixed GF(256) matrix to rows of shard bytes, fast, with numpy alone.

Encoding (parity = P @ data) and decoding (missing = R @ received) are the same operation: a
small matrix, fixed for many blocks, applied column by column to k rows of shard bytes. The
obvious numpy form, one table lookup per (row, input) pair, costs a numpy call per coefficient
(k * m calls per block) and stalls on call overhead at packet sizes.

Instead we precompute, for each input row i and each byte value v, the products of v with the
whole column i of the matrix, packed side by side into 64-bit words (8 products per word, so
ceil(rows / 8) words). One gather then yields, for every input byte, all its contributions to
every output row at once, and an XOR reduction over the inputs finishes the product:

    out_words[col] = XOR_i  TABLE[i, data[i, col]]

That is one `take` and one `bitwise_xor.reduce` per block however many rows there are, and a
gathered word carries 8 field multiplications. Tables cost k * 256 * 8 * ceil(rows / 8) bytes
(20 KiB for 10+3, 1.8 MiB for 223+32), built once per matrix.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from nyx.fec.gf256 import PRODUCT, U8

_WORD_BYTES = 8
# Columns processed per gather: keeps the index and gathered arrays inside L2 for large k.
_CHUNK_ELEMENTS = 1 << 16


@dataclass(frozen=True, slots=True)
class MatrixKernel:
    """A GF(256) matrix (rows x inputs) ready to be applied to shard rows; build once, reuse."""

    matrix: U8
    _table: NDArray[np.uint64] = field(repr=False)  # (inputs * 256, words)
    _offsets: NDArray[np.intp] = field(repr=False)  # (inputs, 1): i * 256

    @classmethod
    def build(cls, matrix: U8) -> MatrixKernel:
        rows, inputs = matrix.shape
        words = max(1, -(-rows // _WORD_BYTES))
        packed = np.zeros((inputs, 256, words * _WORD_BYTES), dtype=np.uint8)
        # packed[i, v, r] = matrix[r, i] * v : the product table's rows picked by the matrix
        packed[:, :, :rows] = PRODUCT[matrix.T].transpose(0, 2, 1)
        table = packed.view(np.uint64).reshape(inputs * 256, words)
        offsets = (np.arange(inputs, dtype=np.intp) * 256)[:, None]
        return cls(matrix.copy(), table, offsets)

    @property
    def rows(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def inputs(self) -> int:
        return int(self.matrix.shape[1])

    def apply(self, data: U8) -> U8:
        """matrix @ data over GF(256) for data of shape (inputs, length); returns (rows, length)."""
        inputs, length = data.shape
        if inputs != self.inputs:
            raise ValueError(f"kernel takes {self.inputs} input rows, got {inputs}")
        words = self._table.shape[1]
        out = np.empty((length, words), dtype=np.uint64)
        step = max(1, _CHUNK_ELEMENTS // max(1, inputs * words))
        index = np.empty((inputs, min(step, length)), dtype=np.intp)
        for start in range(0, length, step):
            stop = min(start + step, length)
            idx = index[:, : stop - start]
            np.add(data[:, start:stop], self._offsets, out=idx, casting="unsafe")
            gathered = self._table.take(idx, axis=0)  # (inputs, chunk, words)
            np.bitwise_xor.reduce(gathered, axis=0, out=out[start:stop])
        return out.view(np.uint8).reshape(length, words * _WORD_BYTES)[:, : self.rows].T
