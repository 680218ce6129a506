"""nyx.transport: how nodes exchange packets.

`Transport` (base.py) is the interface node code uses; `QuicTransport` (quic.py, configured by a
`QuicSettings`) carries packets as QUIC DATAGRAM frames over one UDP socket per node with pinned
self-signed certificates; `SimTransport` (sim.py) runs many nodes over an in-memory network with
latency, jitter, loss, bandwidth, regions and failure injection. See docs/transport.md.

`QuicTransport` and `QuicSettings` are imported on first use (module `__getattr__`): with them,
`import nyx.transport` would cost about 330 ms instead of 90 ms (`python -X importtime`, the
QUIC modules pull in aioquic, cryptography's x509 and the telemetry window), which simulated
nodes and sans-I/O tests never need.
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

_LAZY = {"QuicTransport": "nyx.transport.quic", "QuicSettings": "nyx.transport.quic_settings"}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'nyx.transport' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "Fate",
    "LinkProfile",
    "LinkStats",
    "OversizeError",
    "PacketHandler",
    "PeerAddress",
    "PeerId",
    "QuicSettings",
    "QuicTransport",
    "SimModel",
    "SimNetwork",
    "SimTransport",
    "Transport",
    "TransportClosedError",
    "TransportError",
    "UnknownPeerError",
    "three_regions",
]
