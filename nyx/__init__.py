"""nyx: the asyncio reference implementation of the Nyx anonymity network data plane.

Layers (each imports only the layers before it, see docs/architecture.md):
crypto, fec, transport, mix, cover, stream; telemetry may be used by any layer, the node
runtime (nyx.node) sits above transport and telemetry, and nothing imports bench.
"""

__version__ = "0.1.0"

__all__ = ["Client", "__version__"]


def __getattr__(name: str) -> object:
    """`nyx.Client` without importing the whole stack for `import nyx` (the version, the CLI)."""
    if name == "Client":
        from nyx.stream.client import Client

        return Client
    raise AttributeError(f"module 'nyx' has no attribute {name!r}")
