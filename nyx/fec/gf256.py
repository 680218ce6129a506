"""Arithmetic in GF(2^8) with reedsolo's conventions, as numpy tables.

The field is GF(2)[x] / (x^8 + x^4 + x^3 + x^2 + 1), polynomial 0x11d, with generator alpha = 2:
the same field reedsolo builds by default (`init_tables(prim=0x11d, generator=2)`). Matching it
element for element is what lets reedsolo act as the oracle for our parity.

Everything here works on whole arrays: a product of two arrays is one lookup in the full 256 x 256
multiplication table (64 KiB, built once), never a Python loop over bytes. The only Python loops
left are over matrix pivots and polynomial degrees, which are bounded by 255.
"""

from __future__ import annotations

from typing import Final

import numpy as np
from numpy.typing import NDArray

from nyx.fec.errors import FecError

FIELD_POLY: Final = 0x11D
GENERATOR: Final = 2
ORDER: Final = 255  # size of the multiplicative group: alpha^255 == 1

U8 = NDArray[np.uint8]


def _build_tables() -> tuple[U8, NDArray[np.int16], U8, U8]:
    """exp (doubled, so exp[log a + log b] needs no modulo), log, inverse and the product table."""
    exp = np.zeros(2 * ORDER, dtype=np.uint8)
    log = np.full(256, -1, dtype=np.int16)  # log(0) is undefined; -1 marks it
    x = 1
    for power in range(ORDER):  # 255 steps, once at import
        exp[power] = x
        log[x] = power
        x <<= 1
        if x & 0x100:
            x ^= FIELD_POLY
    exp[ORDER:] = exp[:ORDER]
    logs = log[1:].astype(np.intp)
    product = np.zeros((256, 256), dtype=np.uint8)
    product[1:, 1:] = exp[logs[:, None] + logs[None, :]]
    inverse = np.zeros(256, dtype=np.uint8)  # inverse[0] is meaningless and left 0
    inverse[1:] = exp[(ORDER - logs) % ORDER]
    for table in (exp, log, product, inverse):
        table.setflags(write=False)
    return exp, log, inverse, product


EXP, LOG, INVERSE, PRODUCT = _build_tables()


def mul(a: int, b: int) -> int:
    """The product of two field elements (a scalar convenience over `PRODUCT`)."""
    return int(PRODUCT[a, b])


def power(a: int, exponent: int) -> int:
    """a ** exponent in the field (alpha ** i is how RS generator roots are named)."""
    if a == 0:
        return 1 if exponent == 0 else 0
    return int(EXP[(int(LOG[a]) * exponent) % ORDER])


def matmul(a: U8, b: U8) -> U8:
    """Matrix product over GF(256): XOR-sum of table products, vectorised over all three axes.

    Used for the small matrices of the code (at most 255 x 255), not for shard data: shards go
    through `nyx.fec.kernel`, which is several times faster for long rows.
    """
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"cannot multiply {a.shape} by {b.shape}")
    products = PRODUCT[a[:, :, None], b[None, :, :]]  # (rows, inner, cols)
    return np.bitwise_xor.reduce(products, axis=1).astype(np.uint8, copy=False)


def inverse_matrix(matrix: U8) -> U8:
    """The inverse of a square matrix over GF(256), by Gauss-Jordan elimination.

    One Python iteration per pivot column; each eliminates that column from every other row at
    once with a table lookup. Raises FecError for a singular matrix, which for a Reed-Solomon
    code would mean a bug (every square submatrix we invert is non-singular by construction).
    """
    size = matrix.shape[0]
    if matrix.shape != (size, size):
        raise ValueError(f"inverse of a non-square matrix {matrix.shape}")
    work = np.concatenate([matrix.astype(np.uint8), np.eye(size, dtype=np.uint8)], axis=1)
    for col in range(size):
        candidates = np.nonzero(work[col:, col])[0]
        if candidates.size == 0:
            raise FecError(f"singular {size}x{size} matrix over GF(256) (column {col})")
        pivot = col + int(candidates[0])
        if pivot != col:
            work[[col, pivot]] = work[[pivot, col]]
        work[col] = PRODUCT[INVERSE[work[col, col]], work[col]]
        factors = work[:, col].copy()
        factors[col] = 0
        work ^= PRODUCT[factors[:, None], work[col][None, :]]
    return work[:, size:].copy()


def poly_mul(p: U8, q: U8) -> U8:
    """Product of two polynomials, coefficients highest degree first (reedsolo's order)."""
    out = np.zeros(len(p) + len(q) - 1, dtype=np.uint8)
    for j, coefficient in enumerate(q):  # len(q) is 2 when building a generator polynomial
        out[j : j + len(p)] ^= PRODUCT[coefficient, p]
    return out


def rs_generator_poly(nsym: int, fcr: int = 0) -> U8:
    """g(x) = prod_{i<nsym} (x - alpha^(i+fcr)), highest degree first, as reedsolo builds it.

    reedsolo's `rs_generator_poly(nsym, fcr=0, generator=2)` multiplies the factors [1, alpha^i]
    in increasing i; in characteristic 2, minus is plus, so [1, alpha^i] is (x - alpha^i).
    """
    g = np.ones(1, dtype=np.uint8)
    for i in range(nsym):
        g = poly_mul(g, np.array([1, power(GENERATOR, i + fcr)], dtype=np.uint8))
    return g


def systematic_parity_matrix(k: int, m: int) -> U8:
    """The m x k matrix P with parity = P @ data for reedsolo's systematic encoding.

    reedsolo encodes a message d_0..d_{k-1} (d_0 the highest-degree coefficient) as the message
    followed by the remainder of d(x) * x^m divided by g(x), remainder highest degree first.
    That map is linear, so column i of P is the remainder of x^(k-1-i+m) mod g(x). We compute
    those remainders by repeated multiplication by x (a shift and one reduction by the monic
    g), lowest power first, so building P costs O(k * m) table lookups.
    """
    if m == 0:
        return np.zeros((0, k), dtype=np.uint8)
    g = rs_generator_poly(m)  # monic, degree m: g[0] == 1
    tail = g[1:]  # x^m == tail(x) modulo g (characteristic 2)
    columns = np.zeros((k, m), dtype=np.uint8)  # row j: x^(m + j) mod g, highest degree first
    remainder = tail.copy()
    columns[0] = remainder
    for j in range(1, k):
        lead = remainder[0]
        shifted = np.concatenate([remainder[1:], np.zeros(1, dtype=np.uint8)])
        remainder = shifted ^ PRODUCT[lead, tail]
        columns[j] = remainder
    # data index i carries power x^(k-1-i) before the shift by x^m
    return columns[::-1].T.copy()
