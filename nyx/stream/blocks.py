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

m comes from `nyx.fec.RedundancyController` for the burst's k, fed with the loss the session's
recovery declares (`observe`). That is the loss left after FEC, so it under-reports the path's
raw loss; the controller's prior (`expected_loss`) keeps m from collapsing to nothing. Feeding it
the receiver's raw shard loss needs a feedback frame, which is not there yet.
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
        """Loss the session's recovery declared among `sent` records (feeds every k's controller)."""
        for controller in self._controllers.values():
            controller.observe(sent, lost)


class BlockReceiver:
    """Data and parity messages in, in any order; records out as soon as they are known."""

    def __init__(self, max_open_blocks: int = 64) -> None:
        self._decoder = BlockDecoder(max_open_blocks)
        self.recovered = 0
        self.malformed = 0

    def receive(self, message: bytes) -> list[bytes]:
        """The records this message makes known: its own (a data shard), and any rebuilt ones."""
        try:
            shard = Shard.parse(message)
            own = [unpad(shard.body)] if shard.is_data else []
            block = self._decoder.receive(message)
        except FecError:
            self.malformed += 1  # a counted drop: the session never sees it
            return []
        if block is None:
            return own
        rebuilt = [block.payloads[i] for i in block.recovered]
        self.recovered += len(rebuilt)
        return own + rebuilt
