"""nyx: the asyncio reference implementation of the Nyx anonymity network data plane.

Layers (each imports only the layers before it, see docs/architecture.md):
crypto, fec, transport, mix, cover, stream; telemetry may be used by any layer, the node
runtime (nyx.node) sits above transport and telemetry, and nothing imports bench.
"""

__version__ = "0.1.0"
