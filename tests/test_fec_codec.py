"""ReedSolomon(k, m): parity is reedsolo's per column, any k shards decode, bad input is an error."""

from __future__ import annotations

import functools
import random

import numpy as np
import pytest
import reedsolo
from hypothesis import given, settings
from hypothesis import strategies as st

from nyx.fec import MAX_SHARDS, FecError, ReedSolomon


@functools.lru_cache(maxsize=None)
def codec(k: int, m: int) -> ReedSolomon:
    return ReedSolomon(k, m)


@functools.lru_cache(maxsize=None)
def oracle(m: int) -> reedsolo.RSCodec:
    return reedsolo.RSCodec(m)


@st.composite
def blocks(draw: st.DrawFn, max_k: int = 40, max_m: int = 24, max_length: int = 48) -> tuple[int, int, list[bytes]]:
    k = draw(st.integers(min_value=1, max_value=max_k))
    m = draw(st.integers(min_value=0, max_value=max_m))
    length = draw(st.integers(min_value=0, max_value=max_length))
    data = [draw(st.binary(min_size=length, max_size=length)) for _ in range(k)]
    return k, m, data


def reedsolo_parity(m: int, data: list[bytes]) -> list[bytes]:
    """Parity as reedsolo computes it: each byte position, read down the block, is one message."""
    k, length = len(data), len(data[0])
    columns = [bytes(oracle(m).encode(bytes(shard[j] for shard in data)))[k:] for j in range(length)]
    return [bytes(column[r] for column in columns) for r in range(m)]


@given(blocks(max_m=24).filter(lambda b: b[1] >= 1))
def test_parity_equals_reedsolo_column_by_column(block: tuple[int, int, list[bytes]]) -> None:
    k, m, data = block
    assert codec(k, m).encode(data) == reedsolo_parity(m, data)


@pytest.mark.parametrize(("k", "m"), [(10, 3), (223, 32), (1, 254), (254, 1), (128, 127)])
def test_parity_equals_reedsolo_at_the_edges_of_the_field(k: int, m: int) -> None:
    rng = random.Random(k * 1000 + m)
    data = [rng.randbytes(3) for _ in range(k)]
    assert codec(k, m).encode(data) == reedsolo_parity(m, data)


@given(blocks(), st.randoms(use_true_random=False))
def test_any_k_of_k_plus_m_shards_decode_to_the_data(block: tuple[int, int, list[bytes]], rnd: random.Random) -> None:
    k, m, data = block
    rs = codec(k, m)
    shards = data + rs.encode(data)
    lost = set(rnd.sample(range(k + m), rnd.randint(0, m)))
    received = {i: shard for i, shard in enumerate(shards) if i not in lost}
    assert rs.decode(received) == data


@settings(max_examples=20)
@given(st.randoms(use_true_random=False))
def test_rs_255_223_recovers_32_erasures_anywhere(rnd: random.Random) -> None:
    rs = codec(223, 32)
    data = [rnd.randbytes(16) for _ in range(223)]
    shards = data + rs.encode(data)
    lost = set(rnd.sample(range(255), 32))
    assert rs.decode({i: s for i, s in enumerate(shards) if i not in lost}) == data


def test_decoding_the_same_erasure_pattern_twice_reuses_the_recovery_matrix() -> None:
    rs = ReedSolomon(10, 3)
    data = [bytes([i]) * 8 for i in range(10)]
    shards = dict(enumerate(data + rs.encode(data)))
    for lost in (0, 4, 7):
        del shards[lost]
    assert rs.decode(shards) == data
    cached = dict(rs._recovery)
    assert rs.decode(shards) == data
    assert rs._recovery == cached and len(cached) == 1


def test_extra_shards_beyond_k_are_accepted() -> None:
    rs = ReedSolomon(4, 2)
    data = [b"abcd", b"efgh", b"ijkl", b"mnop"]
    shards = dict(enumerate(data + rs.encode(data)))
    del shards[1]
    assert rs.decode(shards) == data


def test_memoryview_and_bytearray_shards_are_accepted() -> None:
    rs = ReedSolomon(2, 1)
    parity = rs.encode([bytearray(b"xy"), memoryview(b"zw")])
    assert rs.decode({1: b"zw", 2: parity[0]}) == [b"xy", b"zw"]


def test_fewer_than_k_shards_is_an_error_that_names_the_shortfall() -> None:
    rs = ReedSolomon(10, 3)
    with pytest.raises(FecError, match="needs any 10 of 13 shards to decode, got 9"):
        rs.decode({i: b"\0" * 4 for i in range(9)})


def test_fec_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        ReedSolomon(10, 3).decode({})


@pytest.mark.parametrize("index", [-1, 13, 255, np.int64(13)])
def test_shard_index_outside_the_block_is_an_error(index: object) -> None:
    shards: dict[object, bytes] = {i: b"\0\0" for i in range(10)}
    shards[index] = b"\0\0"
    with pytest.raises(FecError, match="outside 0..12"):
        ReedSolomon(10, 3).decode(shards)  # type: ignore[arg-type]


@pytest.mark.parametrize("index", ["3", 2.5, None, True])
def test_a_shard_index_that_is_not_an_integer_is_an_error_that_says_so(index: object) -> None:
    shards: dict[object, bytes] = {i: b"\0\0" for i in range(2, 12)}  # no 0 or 1: True == 1
    shards[index] = b"\0\0"
    with pytest.raises(FecError, match="must be integers"):
        ReedSolomon(10, 3).decode(shards)  # type: ignore[arg-type]


def test_numpy_integer_indices_decode_like_ints() -> None:
    codec = ReedSolomon(4, 2)
    data = [bytes([i]) * 8 for i in range(4)]
    shards = dict(enumerate(data + codec.encode(data)))
    survivors = {np.int64(i): shards[i] for i in (1, 3, 4, 5)}
    assert codec.decode(survivors) == data  # type: ignore[arg-type]


def test_shard_of_the_wrong_length_is_an_error_naming_it() -> None:
    rs = ReedSolomon(3, 2)
    with pytest.raises(FecError, match="shard 4 is 3 bytes but shard 0 is 4"):
        rs.decode({0: b"aaaa", 1: b"bbbb", 4: b"ccc"})
    with pytest.raises(FecError, match="shard 2 is 1 bytes"):
        rs.encode([b"aa", b"bb", b"c"])


def test_wrong_number_of_data_shards_to_encode_is_an_error() -> None:
    with pytest.raises(FecError, match="exactly 3 data shards, got 2"):
        ReedSolomon(3, 1).encode([b"a", b"b"])


@pytest.mark.parametrize(("k", "m"), [(0, 3), (3, -1), (200, 56), (255, 1)])
def test_impossible_code_shapes_are_rejected(k: int, m: int) -> None:
    with pytest.raises(FecError):
        ReedSolomon(k, m)


def test_the_longest_code_fits_the_field() -> None:
    assert ReedSolomon(200, 55).n == MAX_SHARDS == 255


def test_zero_parity_is_a_valid_code_with_no_parity() -> None:
    rs = ReedSolomon(3, 0)
    assert rs.encode([b"a", b"b", b"c"]) == []
    assert rs.decode({0: b"a", 1: b"b", 2: b"c"}) == [b"a", b"b", b"c"]


def test_long_shards_are_coded_column_by_column_across_kernel_chunks() -> None:
    rng = random.Random(3)
    rs = ReedSolomon(10, 3)
    data = [rng.randbytes(20_000) for _ in range(10)]  # longer than one kernel chunk
    parity = rs.encode(data)
    cut = 12_345
    assert parity == [a + b for a, b in zip(rs.encode([d[:cut] for d in data]), rs.encode([d[cut:] for d in data]))]
    assert rs.decode({i: s for i, s in enumerate(data + parity) if i not in (2, 5, 9)}) == data
