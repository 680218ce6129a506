"""FEC section of `python -m nyx.bench micro`: encode and decode throughput beside reedsolo.

Throughput records put MB/s (10^6 data bytes per second, k x shard bytes per block) in
`ops_per_s`, and say so in the name, so `ratio` is the speedup over the reference. reedsolo is
timed in the same run on the same layout: a block is `length` reedsolo codewords of k + m bytes,
one per byte position, which is exactly what our parity reproduces. reedsolo is pure Python and
its cost per byte does not depend on the number of columns, so it is timed on a slice of the
block to keep the section within its budget. Decode figures are for the worst case the code
can repair: m data shards lost, rebuilt from all m parity shards.

If zfec (C, not a dependency) is importable, a record compares us with it at the same shapes.
"""

from __future__ import annotations

import importlib
import random
from typing import Any

import reedsolo

from nyx.bench.timing import MicroRecord, seconds_per_op
from nyx.fec import ReedSolomon

SHARD_BYTES = 1280
SHAPES = ((10, 3), (223, 32))
# reedsolo columns timed per call: about 10 ms of pure Python each
_REEDSOLO_COLUMNS = {(10, 3): {"encode": 1280, "decode": 256}, (223, 32): {"encode": 16, "decode": 4}}


def _mb_per_s(data_bytes: int, seconds: float) -> float:
    return data_bytes / seconds / 1e6


def _reedsolo_rates(k: int, m: int, budget_s: float) -> tuple[float, float]:
    """reedsolo encode and erasure-decode MB/s for k + m codewords, m data bytes erased in each."""
    rng = random.Random(k)
    n = k + m
    codec = reedsolo.RSCodec(m, nsize=n)
    columns = _REEDSOLO_COLUMNS[(k, m)]
    message = rng.randbytes(k * columns["encode"])
    encode_s = seconds_per_op(lambda: codec.encode(message), budget_s)
    cols = columns["decode"]
    damaged = bytearray(codec.encode(message[: k * cols]))
    erased = [c * n + i for c in range(cols) for i in range(m)]
    for position in erased:
        damaged[position] = 0
    decode_s = seconds_per_op(lambda: codec.decode(damaged, erase_pos=erased, only_erasures=True), budget_s)
    return _mb_per_s(len(message), encode_s), _mb_per_s(k * cols, decode_s)


def _zfec_rates(zfec: Any, k: int, m: int, data: list[bytes], parity: list[bytes], budget_s: float) -> tuple[float, float]:
    n = k + m
    encoder, decoder = zfec.Encoder(k, n), zfec.Decoder(k, n)
    inblocks, wanted = tuple(data), tuple(range(k, n))
    received = tuple(data[m:]) + tuple(parity)
    numbers = tuple(range(m, n))
    encode_s = seconds_per_op(lambda: encoder.encode(inblocks, wanted), budget_s)
    decode_s = seconds_per_op(lambda: decoder.decode(received, numbers), budget_s)
    return _mb_per_s(k * SHARD_BYTES, encode_s), _mb_per_s(k * SHARD_BYTES, decode_s)


def records(budget_s: float) -> list[MicroRecord]:
    """Encode and decode MB/s at 10+3 and 223+32 with 1,280-byte shards, each beside reedsolo."""
    try:
        zfec: Any = importlib.import_module("zfec")
    except ImportError:
        zfec = None
    out: list[MicroRecord] = []
    decode_rate: dict[tuple[int, int], float] = {}
    for k, m in SHAPES:
        rng = random.Random(k * 31 + m)
        codec = ReedSolomon(k, m)
        data = [rng.randbytes(SHARD_BYTES) for _ in range(k)]
        parity = codec.encode(data)
        # worst repairable loss: the first m data shards, rebuilt from every parity shard
        received = {i: shard for i, shard in enumerate(data + parity) if i >= m}
        assert codec.decode(received) == data
        encode = _mb_per_s(k * SHARD_BYTES, seconds_per_op(lambda: codec.encode(data), budget_s))
        decode = _mb_per_s(k * SHARD_BYTES, seconds_per_op(lambda: codec.decode(received), budget_s))
        decode_rate[(k, m)] = decode
        ref_encode, ref_decode = _reedsolo_rates(k, m, budget_s)
        shape = f"{k}+{m} x{SHARD_BYTES}B"
        out += [
            MicroRecord(f"fec encode {shape} (MB/s)", encode, f"reedsolo RSCodec({m}) per column", ref_encode),
            MicroRecord(f"fec decode {shape}, {m} lost (MB/s)", decode, "reedsolo erasure decode per column", ref_decode),
        ]
        if zfec is not None:
            zfec_encode, zfec_decode = _zfec_rates(zfec, k, m, data, parity, budget_s)
            out += [
                MicroRecord(f"fec encode {shape} vs zfec (MB/s)", encode, "zfec (C)", zfec_encode),
                MicroRecord(f"fec decode {shape} vs zfec (MB/s)", decode, "zfec (C)", zfec_decode),
            ]
    # A pattern never seen before pays for its e x e inverse; at 223+32 that is the cold path.
    k, m = SHAPES[1]
    rng = random.Random(1)
    codec = ReedSolomon(k, m, recovery_cache_size=1)
    data = [rng.randbytes(SHARD_BYTES) for _ in range(k)]
    shards = dict(enumerate(data + codec.encode(data)))
    patterns = [{i: s for i, s in shards.items() if i not in lost} for lost in (set(range(m)), set(range(1, m + 1)))]
    flip = [0]

    def decode_new_pattern() -> None:
        flip[0] ^= 1
        codec.decode(patterns[flip[0]])

    cold = _mb_per_s(k * SHARD_BYTES, seconds_per_op(decode_new_pattern, budget_s))
    out.append(
        MicroRecord(f"fec decode {k}+{m} x{SHARD_BYTES}B, new pattern (MB/s)", cold, "same, cached pattern", decode_rate[(k, m)])
    )
    return out
