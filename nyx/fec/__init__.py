"""nyx.fec: Reed-Solomon erasure coding over packets, and the redundancy that adapts to loss.

- `ReedSolomon(k, m)`: systematic code over GF(2^8), parity byte-for-byte reedsolo's `RSCodec(m)`
  applied to each byte position of the block (`codec.py`, arithmetic in `gf256.py`, the
  vectorised kernel in `kernel.py`).
- Shard framing: a header naming block, index, k and m, and a length prefix so short payloads
  survive padding (`framing.py`).
- `RedundancyController`: m per block from the observed loss rate, so that losing more than m
  of k + m shards stays under a target probability (`redundancy.py`, law in docs/fec.md).

Sans-I/O throughout: bytes and counts in, bytes and decisions out.
"""

from nyx.fec.codec import MAX_SHARDS, ReedSolomon
from nyx.fec.errors import FecError
from nyx.fec.framing import (
    HEADER_BYTES,
    LENGTH_PREFIX_BYTES,
    BlockDecoder,
    BlockEncoder,
    RecoveredBlock,
    Shard,
    pad,
    unpad,
)
from nyx.fec.redundancy import RedundancyController, RedundancyDecision, block_loss_probability

__all__ = [
    "HEADER_BYTES",
    "LENGTH_PREFIX_BYTES",
    "MAX_SHARDS",
    "BlockDecoder",
    "BlockEncoder",
    "FecError",
    "RecoveredBlock",
    "RedundancyController",
    "RedundancyDecision",
    "ReedSolomon",
    "Shard",
    "block_loss_probability",
    "pad",
    "unpad",
]
