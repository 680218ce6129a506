"""pytest-benchmark suite for nyx.fec: encode and decode beside reedsolo on the same block shape.

CI runs these once with --benchmark-disable (so each is also a correctness check); time them with
`python -m pytest bench/bench_fec.py --benchmark-enable`. reedsolo is timed on a few columns only:
its per-byte cost does not depend on how many columns there are, and a whole block would take
seconds.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
import reedsolo

from nyx.fec import BlockDecoder, BlockEncoder, RedundancyController, ReedSolomon

SHARD_BYTES = 1280
SHAPES = [(10, 3), (223, 32)]


def _block(k: int, m: int) -> tuple[ReedSolomon, list[bytes], list[bytes]]:
    rng = random.Random(k + m)
    codec = ReedSolomon(k, m)
    data = [rng.randbytes(SHARD_BYTES) for _ in range(k)]
    return codec, data, codec.encode(data)


@pytest.mark.parametrize(("k", "m"), SHAPES)
def test_encode_block(benchmark: Any, k: int, m: int) -> None:
    codec, data, parity = _block(k, m)
    assert benchmark(codec.encode, data) == parity


@pytest.mark.parametrize(("k", "m"), SHAPES)
def test_decode_block_with_m_data_shards_lost(benchmark: Any, k: int, m: int) -> None:
    codec, data, parity = _block(k, m)
    received = {i: s for i, s in enumerate(data + parity) if i >= m}
    assert benchmark(codec.decode, received) == data


@pytest.mark.parametrize(("k", "m"), SHAPES)
def test_reedsolo_encode_four_columns_reference(benchmark: Any, k: int, m: int) -> None:
    codec, data, parity = _block(k, m)
    columns = bytes(shard[j] for j in range(4) for shard in data)  # 4 codewords, column-major
    encoded = benchmark(reedsolo.RSCodec(m, nsize=k + m).encode, columns)
    assert bytes(encoded[k : k + m]) == bytes(p[0] for p in parity)


def test_frame_encode_and_decode_a_block_of_short_packets(benchmark: Any) -> None:
    encoder, decoder = BlockEncoder(SHARD_BYTES), BlockDecoder()
    payloads = [bytes([i]) * (100 + 90 * i) for i in range(10)]
    blocks = iter(range(1 << 32))

    def round_trip() -> list[bytes]:
        wire = encoder.encode(next(blocks), payloads, m=3)
        result = None
        for shard in wire[3:]:
            result = decoder.receive(shard) or result
        assert result is not None
        return result.payloads

    assert benchmark(round_trip) == payloads


def test_controller_decision_per_block(benchmark: Any) -> None:
    controller = RedundancyController(10)
    assert 1 <= benchmark(controller.observe, 13, 1) <= controller.max_m
