"""Cover packets are real mix packets: built here with `nyx.mix.create_packet` over routes from
the directory, so no mix (nor anyone watching links) can tell them from real traffic.

- **loop**: routed through one mix per layer and delivered back to the sender; the message is
  `LOOP_TAG | loop id (16 random bytes)`, which the sender recognises on return. A *mix's* loop
  visits the layers after its own, wraps round to those before it, and ends at the mix itself
  as the final hop, so its `MixNode` delivers it locally (`on_deliver`).
- **fill** (an empty payload slot) and **drop**: routed through one mix per layer to a
  destination that discards them (a gateway from the directory when there is one, otherwise the
  route's last mix); the message is `DROP_TAG | random bytes`.

The tags sit inside the innermost encryption layer: only the final hop's recipient sees them.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from nyx.cover.slots import Kind
from nyx.mix.directory import Directory, DirectoryError, select_route
from nyx.mix.packet import DEFAULT_FORMAT, Hop, PacketFormat, create_packet

LOOP_TAG = b"nyx/1 cover loop"
DROP_TAG = b"nyx/1 cover drop"
LOOP_ID_BYTES = 16


@dataclass(frozen=True, slots=True)
class CoverPacket:
    """A built cover packet: where to send it first, the packet, and for a loop its id and route
    (the route lets loop losses be tallied per mix)."""

    first_hop: str
    packet: bytes
    loop_id: bytes | None = None
    route: tuple[str, ...] = ()


PacketFactory = Callable[[Kind], CoverPacket]
"""What the emitters call to build one cover packet of a kind (LOOP, FILL or DROP)."""


def loop_id_of(message: bytes) -> bytes | None:
    """The loop id if `message` (a delivered payload) is one of our loop packets, else None."""
    if len(message) == len(LOOP_TAG) + LOOP_ID_BYTES and message.startswith(LOOP_TAG):
        return message[len(LOOP_TAG):]
    return None


def is_drop_cover(message: bytes) -> bool:
    """True for the payload of a fill or drop cover packet (the recipient discards it)."""
    return message.startswith(DROP_TAG)


class MixCoverPackets:
    """Builds cover packets for `own_id` from `directory`.

    `epoch` returns the key epoch to build for (the one the directory publishes keys for now).
    For a mix (`own_id` is a mix in the directory) loops end at the mix itself; for a client they
    go through every layer and are delivered back to `own_id` by the last mix (or by `exit_node`,
    the client's gateway, when given).
    """

    def __init__(
        self,
        directory: Directory,
        own_id: str,
        epoch: Callable[[], int],
        rng: random.Random | None = None,
        *,
        exit_node: str | None = None,
        drop_destinations: Sequence[str] | None = None,
        packet_format: PacketFormat = DEFAULT_FORMAT,
    ) -> None:
        self.directory = directory
        self.own_id = own_id
        self.epoch = epoch
        self.rng = rng or random.SystemRandom()
        self.exit_node = exit_node
        self.packet_format = packet_format
        if drop_destinations is None:
            drop_destinations = [r.node_id for r in directory.nodes.values() if r.role != "mix" and r.node_id != own_id]
        self.drop_destinations = list(drop_destinations)
        own = directory.nodes.get(own_id)
        self.mix_layer = own.layer if own is not None and own.role == "mix" else None

    def __call__(self, kind: Kind) -> CoverPacket:
        if kind is Kind.LOOP:
            return self.loop()
        if kind in (Kind.FILL, Kind.DROP):
            return self.drop()
        raise ValueError(f"real packets are built by the stream layer, not as cover ({kind!r})")

    def _route(self, epoch: int) -> list[Hop]:
        if self.mix_layer is None:
            return select_route(self.directory, epoch, exit_node=self.exit_node, rng=self.rng)
        layers = self.directory.layers()
        at = layers.index(self.mix_layer)
        others = layers[at + 1:] + layers[:at]
        route = select_route(self.directory, epoch, layers=others, rng=self.rng) if others else []
        record = self.directory.nodes[self.own_id]
        if epoch not in record.sphinx_keys:
            raise DirectoryError(f"{self.own_id} publishes no Sphinx key for epoch {epoch}")
        return route + [record.hop(epoch)]

    def loop(self) -> CoverPacket:
        epoch = self.epoch()
        route = self._route(epoch)
        loop_id = os.urandom(LOOP_ID_BYTES)
        first, packet = create_packet(route, self.own_id, LOOP_TAG + loop_id, epoch, self.packet_format)
        return CoverPacket(first, packet, loop_id, tuple(hop.node_id for hop in route))

    def drop(self) -> CoverPacket:
        epoch = self.epoch()
        route = select_route(self.directory, epoch, rng=self.rng)
        destination = self.rng.choice(self.drop_destinations) if self.drop_destinations else route[-1].node_id
        message = DROP_TAG + os.urandom(LOOP_ID_BYTES)
        first, packet = create_packet(route, destination, message, epoch, self.packet_format)
        return CoverPacket(first, packet)
