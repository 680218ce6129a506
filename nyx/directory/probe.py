"""Health probes: can a node's advertised address complete a QUIC handshake with the certificate
its record pins?

A heartbeat proves that the node's process runs and holds its key; only a probe proves that peers
can reach it where the document says (a node behind a broken firewall, a wrong advertised address,
or an address taken over by someone without the key all heartbeat fine). Each round uses a fresh
client transport, so every probe is a full handshake rather than a link kept from the last round,
and the pinned fingerprint is checked by the transport as on every link between nodes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from nyx.directory.records import NodeRecord
from nyx.node.config import resolve_backend
from nyx.transport.base import TransportError
from nyx.transport.certs import NodeIdentity
from nyx.transport.quic import QuicTransport
from nyx.transport.quic_settings import QuicSettings

log = logging.getLogger(__name__)

PROBER_ID = "directory-probe"


async def probe_round(records: Iterable[NodeRecord], identity: NodeIdentity, timeout_s: float = 3.0,
                      concurrency: int = 8) -> dict[str, bool]:
    """Probe every record with an address and a fingerprint; {node id: reachable}."""
    targets = [r for r in records if r.fingerprint and r.port > 0]
    if not targets:
        return {}
    transport = QuicTransport(PROBER_ID, identity, QuicSettings(host="0.0.0.0", port=0, backend=resolve_backend("auto")))
    await transport.listen()
    gate = asyncio.Semaphore(concurrency)
    results: dict[str, bool] = {}

    async def one(record: NodeRecord) -> None:
        async with gate:
            transport.add_peer(record.node_id, record.address())
            try:
                async with asyncio.timeout(timeout_s):
                    await transport.connect(record.node_id)
                results[record.node_id] = True
            except (TimeoutError, TransportError, ConnectionError, OSError) as exc:
                log.debug("probe of %s at %s:%d failed: %r", record.node_id, record.host, record.port, exc)
                results[record.node_id] = False

    try:
        async with asyncio.TaskGroup() as tg:
            for record in targets:
                tg.create_task(one(record))
    finally:
        await transport.close()
    return results
