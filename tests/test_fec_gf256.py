"""GF(256) arithmetic agrees with reedsolo's field and behaves as a field."""

from __future__ import annotations

import numpy as np
import pytest
import reedsolo
from hypothesis import given
from hypothesis import strategies as st

from nyx.fec import FecError, gf256

element = st.integers(min_value=0, max_value=255)
nonzero = st.integers(min_value=1, max_value=255)


def test_exp_and_log_tables_are_reedsolos() -> None:
    log, exp = reedsolo.init_tables(prim=0x11D, generator=2)[:2]  # it returns log first
    assert list(gf256.EXP[:255]) == list(exp[:255])
    assert [int(v) for v in gf256.LOG[1:]] == list(log[1:256])


@given(element, element)
def test_product_table_agrees_with_reedsolo_gf_mul(a: int, b: int) -> None:
    reedsolo.init_tables(prim=0x11D, generator=2)
    assert gf256.mul(a, b) == reedsolo.gf_mul(a, b)


@given(nonzero)
def test_every_nonzero_element_times_its_inverse_is_one(a: int) -> None:
    assert gf256.mul(a, int(gf256.INVERSE[a])) == 1


@pytest.mark.parametrize("nsym", [1, 2, 3, 10, 32, 100])
def test_generator_polynomial_is_reedsolos(nsym: int) -> None:
    reedsolo.init_tables(prim=0x11D, generator=2)
    assert list(gf256.rs_generator_poly(nsym)) == list(reedsolo.rs_generator_poly(nsym))


@given(st.integers(min_value=1, max_value=24), st.randoms(use_true_random=False))
def test_inverse_matrix_times_matrix_is_identity(size: int, random: object) -> None:
    rng = np.random.default_rng(random.getrandbits(32))  # type: ignore[attr-defined]
    while True:
        matrix = rng.integers(0, 256, (size, size), dtype=np.uint8)
        try:
            inverse = gf256.inverse_matrix(matrix)
        except FecError:
            continue  # singular draws are rare; try another
        break
    assert (gf256.matmul(matrix, inverse) == np.eye(size, dtype=np.uint8)).all()


def test_singular_matrix_is_a_clear_error() -> None:
    matrix = np.array([[1, 2], [1, 2]], dtype=np.uint8)
    with pytest.raises(FecError, match="singular"):
        gf256.inverse_matrix(matrix)
