"""FEC blocks over sealed records: k records and m parity shards per block, so a lost packet is
rebuilt at the receiver instead of costing a round trip through six mixes.

The code runs over *sealed* records (`nyx.fec` framing: block, index, k, m, then the body), below
the session: the sender pulls a burst of records from `Session.next_record` (at most `max_k`),
and `BlockSender.encode` turns them into k data messages (each record behind the shard header,
padded to the fixed message size, which costs nothing on the wire: every Sphinx packet is the
same size) and m parity messages. The receiver hands every data message's record to the session
at once (`BlockReceiver.receive` returns it without waiting for the block) and feeds all of them
to the decoder; when a block becomes decodable with records missing, the rebuilt records follow.
A rebuilt record is opened by the record layer like any other, so FEC can never forge a packet
(docs/fec.md, "Integrity"): a corrupted or forged shard yields a record that fails to open.

m comes from `nyx.fec.RedundancyController` for the burst's k, fed with the path's raw shard
loss, which only the receiver sees: `BlockReceiver` counts, per block, the shards it got out of
the k + m the header announces, settles a block once `settle_blocks` newer ones have been seen
(shards of one block arrive in any order and late), and `take_report()` hands the totals to the
session, which sends them in a FEC_REPORT frame; the sender's shell passes the peer's report to
`BlockSender.observe`. A block none of whose shards arrived is invisible; it is counted from
the gap in block numbers at the size of the last block seen.
"""

from __future__ import annotations

from nyx.fec import HEADER_BYTES, LENGTH_PREFIX_BYTES, BlockDecoder, BlockEncoder, FecError, RedundancyController, Shard, unpad

#: Bytes a message spends on FEC framing before the record: the shard header and length prefix.
FEC_OVERHEAD = HEADER_BYTES + LENGTH_PREFIX_BYTES


class BlockSender:
    """Bursts of sealed records in, fixed-size data and parity messages out."""

    def __init__(self, message_bytes: int, *, max_k: int = 8, expected_loss: float = 0.05, min_m: int = 0) -> None:
        self.message_bytes = message_bytes
        self.max_k = max_k
        self._encoder = BlockEncoder(message_bytes)
        self._expected_loss = expected_loss
        self._min_m = min_m
        self._controllers: dict[int, RedundancyController] = {}
        self._next_block = 0
        self.parity_sent = 0

    @property
    def max_record_bytes(self) -> int:
        """The largest record a data message holds (configure the session with it)."""
        return self._encoder.max_payload_bytes

    def _controller(self, k: int) -> RedundancyController:
        controller = self._controllers.get(k)
        if controller is None:
            controller = self._controllers[k] = RedundancyController(
                k, min_m=self._min_m, prior_loss_rate=self._expected_loss, max_m=max(self._min_m, min(2 * k, 8))
            )
        return controller

    def encode(self, records: list[bytes]) -> list[bytes]:
        """Messages for one burst: its records as data shards, then the block's parity shards."""
        out: list[bytes] = []
        for start in range(0, len(records), self.max_k):
            burst = records[start : start + self.max_k]
            m = self._controller(len(burst)).m
            out += self._encoder.encode(self._next_block, burst, m)
            self._next_block = (self._next_block + 1) & 0xFFFFFFFF
            self.parity_sent += m
        return out

    def observe(self, sent: int, lost: int) -> None:
        """The peer's report: `lost` of `sent` shards did not arrive (feeds every k's controller)."""
        for controller in self._controllers.values():
            controller.observe(sent, lost)


class BlockReceiver:
    """Data and parity messages in, in any order; records out as soon as they are known."""

    def __init__(self, max_open_blocks: int = 64, settle_blocks: int = 8, report_shards: int = 64) -> None:
        self._decoder = BlockDecoder(max_open_blocks)
        self.recovered = 0
        self.malformed = 0
        self.settle_blocks = settle_blocks
        self.report_shards = report_shards
        self._seen: dict[int, tuple[int, set[int]]] = {}  # block -> (k + m, indices received)
        self._newest = -1
        self._settled_through = -1  # every block up to this number is counted
        self._last_size = 0
        self._expected = 0
        self._received = 0

    def receive(self, message: bytes) -> list[bytes]:
        """The records this message makes known: its own (a data shard), and any rebuilt ones."""
        try:
            shard = Shard.parse(message)
            own = [unpad(shard.body)] if shard.is_data else []
            block = self._decoder.receive(message)
        except FecError:
            self.malformed += 1  # a counted drop: the session never sees it
            return []
        self._count(shard)
        if block is None:
            return own
        rebuilt = [block.payloads[i] for i in block.recovered]
        self.recovered += len(rebuilt)
        return own + rebuilt

    def _count(self, shard: Shard) -> None:
        if shard.block <= self._settled_through:
            return  # a late shard of a settled block: its loss was already reported
        entry = self._seen.get(shard.block)
        if entry is None:
            entry = self._seen[shard.block] = (shard.k + shard.m, set())
        entry[1].add(shard.index)
        if shard.block > self._newest:
            self._newest = shard.block
            self._settle(self._newest - self.settle_blocks)

    def _settle(self, through: int) -> None:
        for number in range(self._settled_through + 1, through + 1):
            entry = self._seen.pop(number, None)
            if entry is None:  # no shard of it arrived at all
                self._expected += self._last_size
                continue
            size, indices = entry
            self._last_size = size
            self._expected += size
            self._received += len(indices)
        self._settled_through = max(self._settled_through, through)

    def take_report(self) -> tuple[int, int] | None:
        """(shards expected, shards received) over the blocks settled since the last report,
        once they reach `report_shards`; None until then."""
        if self._expected < self.report_shards:
            return None
        report = (self._expected, self._received)
        self._expected = self._received = 0
        return report
