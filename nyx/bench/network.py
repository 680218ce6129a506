"""The in-process network builder: N real transports, all peers of each other, closed at the end.

`sim` attaches `SimTransport`s to one `SimNetwork` (latency, bandwidth, loss as the replay's
`LinkProfile` says); `quic` starts one `QuicTransport` per node on 127.0.0.1 with a fresh
self-signed identity, and gives every node the others' addresses with their pinned fingerprints,
exactly as a directory would.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence

from nyx.bench.scenarios import TransportKind
from nyx.transport import LinkProfile, SimNetwork, Transport


@contextlib.asynccontextmanager
async def nodes(
    kind: TransportKind, node_ids: Sequence[str], profile: LinkProfile | None = None, seed: int = 1
) -> AsyncIterator[dict[str, Transport]]:
    """Listening transports by node id; every one knows every other's address."""
    transports: dict[str, Transport] = {}
    network: SimNetwork | None = None
    try:
        if kind == "sim":
            network = SimNetwork(profile or LinkProfile(), seed=seed)
            for node_id in node_ids:
                transports[node_id] = network.transport(node_id)
        else:
            from nyx.transport.certs import NodeIdentity
            from nyx.transport.quic import QuicTransport

            for node_id in node_ids:
                transports[node_id] = QuicTransport(node_id, NodeIdentity.generate(node_id))
        addresses = {node_id: await transport.listen() for node_id, transport in transports.items()}
        for node_id, transport in transports.items():
            for peer, address in addresses.items():
                if peer != node_id:
                    transport.add_peer(peer, address)
        yield transports
    finally:
        for transport in transports.values():
            await transport.close()
        if network is not None:
            await network.close()
