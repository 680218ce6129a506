"""nyx: the asyncio reference implementation of the Nyx anonymity network data plane.

Layers (each imports only the layers before it, see docs/architecture.md):
crypto, fec, mix, cover, transport, stream; telemetry may be used by any layer, and nothing
imports bench.
"""

__version__ = "0.1.0"
