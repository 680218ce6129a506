"""nyx.transport: how nodes exchange packets.

`Transport` (base.py) is the interface node code uses; `QuicTransport` (quic.py) carries packets
as QUIC DATAGRAM frames over one UDP socket per node with pinned self-signed certificates;
`SimTransport` (sim.py) runs many nodes over an in-memory network with latency, jitter, loss,
bandwidth, regions and failure injection. See docs/transport.md.
"""

from nyx.transport.base import (
    LinkStats,
    OversizeError,
    PacketHandler,
    PeerAddress,
    PeerId,
    Transport,
    TransportClosedError,
    TransportError,
    UnknownPeerError,
)
from nyx.transport.sim import SimNetwork, SimTransport
from nyx.transport.simnet import Fate, LinkProfile, SimModel, three_regions

__all__ = [
    "Fate",
    "LinkProfile",
    "LinkStats",
    "OversizeError",
    "PacketHandler",
    "PeerAddress",
    "PeerId",
    "SimModel",
    "SimNetwork",
    "SimTransport",
    "Transport",
    "TransportClosedError",
    "TransportError",
    "UnknownPeerError",
    "three_regions",
]
