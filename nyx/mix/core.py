"""`MixCore`: one mix's protocol logic, sans-I/O (bytes and a clock in, one event out).

The asyncio shell (`nyx.mix.node.MixNode`) feeds every received packet to `process`, schedules a
`Forward` for `now + delay_s`, hands a `Deliver` to whatever is local, and counts a `Drop` by its
reason. Nothing here knows about sockets, tasks or the event loop.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TypeAlias

from nyx.mix.delay import PoissonDelay
from nyx.mix.keys import KeyRing
from nyx.mix.packet import DEFAULT_FORMAT, DELIVER_SURB, RELAY, PacketFormat, peel
from nyx.mix.replay import ReplayCache

Buffer: TypeAlias = bytes | bytearray | memoryview
"""What `MixCore.process` accepts: any bytes-like object (collections.abc.Buffer from 3.12)."""

# Every reason a Drop can carry (the label values of the `mix_packet_drop` counter).
DROP_REASONS = (
    "size",  # not exactly one packet long
    "epoch",  # no key of ours for the packet's epoch byte at this time
    "key",  # the group element is a low-order point
    "mac",  # header MAC mismatch: corrupted, tagged, or not for us
    "replay",  # this hop has processed the packet before
    "replay_full",  # the epoch's replay table is at capacity
    "route",  # routing slot names no valid node
    "flag",  # unknown routing instruction
    "payload",  # final hop: the body's zero prefix is gone (tagged on the way)
)


@dataclass(frozen=True, slots=True)
class Forward:
    """Send `packet` to `next_hop` after `delay_s` seconds."""

    next_hop: str
    packet: bytes
    delay_s: float


@dataclass(frozen=True, slots=True)
class Deliver:
    """This node is the packet's last hop: hand `payload` to `destination`.

    For a reply on a SURB, `surb_id` is set and `payload` is still encrypted for the SURB's
    creator (`nyx.mix.packet.open_reply`).
    """

    destination: str
    payload: bytes
    surb_id: bytes | None = None


@dataclass(frozen=True, slots=True)
class Drop:
    """The packet is discarded; `reason` is one of DROP_REASONS."""

    reason: str


class MixCore:
    """One mix (or a gateway's exit role): keys by epoch, replay tags, delay policy.

    `now` is the clock the key ring's epochs are defined on (wall-clock seconds in a node).
    Counts are plain attributes (a prometheus call per packet would cost more than the hop's
    hashing); the shell publishes them periodically.
    """

    def __init__(
        self,
        keyring: KeyRing,
        *,
        delay: PoissonDelay | None = None,
        replay_capacity: int = 1 << 20,
        packet_format: PacketFormat = DEFAULT_FORMAT,
    ) -> None:
        self.keyring = keyring
        self.delay = delay
        self.replay = ReplayCache(replay_capacity)
        self.packet_format = packet_format
        self.forwarded = 0
        self.delivered = 0
        self.drops: Counter[str] = Counter()

    def process(self, packet: Buffer, now: float) -> Forward | Deliver | Drop:
        """Remove this hop's layer from `packet`.

        `packet` is any bytes-like object (a receive buffer may be a bytearray or a memoryview);
        a `bytes` packet is used as it is, anything else is copied once here, after the size check,
        so the layer below sees immutable bytes. A non-bytes-like value is a caller's bug: TypeError.
        """
        fmt = self.packet_format
        if type(packet) is not bytes:
            view = memoryview(packet)  # TypeError: "a bytes-like object is required, not 'str'"
            if view.nbytes != fmt.packet_bytes:
                return self._drop("size")
            packet = view.tobytes()
        elif len(packet) != fmt.packet_bytes:
            return self._drop("size")
        key = self.keyring.lookup(packet[0], now)
        if key is None:
            return self._drop("epoch")
        epoch, replay = key.epoch, self.replay
        result = peel(fmt, key.private_key, packet, lambda tag: replay.check(epoch, tag))
        if isinstance(result, str):
            return self._drop(result)
        if result.flag == RELAY:
            self.forwarded += 1
            return Forward(result.address, result.data, self.delay.sample() if self.delay else 0.0)
        self.delivered += 1
        return Deliver(result.address, result.data, result.surb_id if result.flag == DELIVER_SURB else None)

    def rotate(self, now: float) -> list[int]:
        """Advance the key ring to `now` and free the replay tables of retired epochs."""
        retired = self.keyring.rotate(now)
        for epoch in retired:
            self.replay.retire(epoch)
        return retired

    def _drop(self, reason: str) -> Drop:
        self.drops[reason] += 1
        return Drop(reason)
