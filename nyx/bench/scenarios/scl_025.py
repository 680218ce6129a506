"""SCL-025 カバレッジ検証試験: every data-plane SLI is exported by a running node; 0 missing.

The audit job of the scenario, against a real node: a mix node is started in-process exactly as
`python -m nyx.mix` starts one (`NodeRuntime` with the mix service, fresh keys in a temporary
directory, QUIC on 127.0.0.1, `/metrics` on a free port). The audit scrapes `/metrics` over HTTP
three times (the load model: three audits a day; the node has
one QUIC link to a neighbour, as a node in service does) and looks for the monitoring metric of every
in-scope scenario of the SCL catalogue (a counter family `x` is scraped as `x_total`). The value
is the number of names missing from the last scrape; the notes list them. A name that only
another node kind (gateway, client) will export counts as missing until that kind exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
import tempfile
import time

from nyx.bench import catalogue
from nyx.bench.report import Measurement
from nyx.bench.scenarios import RunOptions
from nyx.mix.__main__ import MixSettings, embedded_default, make_service
from nyx.node.config import with_overrides
from nyx.node.runtime import NodeRuntime
from nyx.transport.certs import NodeIdentity
from nyx.transport.quic import QuicTransport

AUDITS = 3
DEFAULT_DURATION_S = 3.0
QUICK = (2.5, 1.0)


def required_names() -> list[str]:
    """The monitoring metric of every in-scope scenario, in catalogue order, without repeats."""
    own = catalogue.by_id("SCL-025").metric  # the audit's result, not something a node exports
    return list(dict.fromkeys(s.metric for s in catalogue.load() if s.in_scope and s.metric != own))


async def scrape(host: str, port: int) -> str:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(f"GET /metrics HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        response = await reader.read()
    finally:
        writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"/metrics answered {head.splitlines()[0]!r}")
    return body.decode()


def exported(exposition: str) -> set[str]:
    """Sample names in a Prometheus text exposition (labels and values stripped)."""
    return {m[1] for m in re.finditer(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{|\s)", exposition, re.M)}


async def replay(options: RunOptions) -> Measurement:
    wanted = required_names()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="nyx-scl-025-") as data_dir:
        config = with_overrides(embedded_default(data_dir), port=0, metrics_port=0, role="mix", log_level="WARNING")
        runtime = NodeRuntime(config)
        neighbour = QuicTransport("mix-2", NodeIdentity.generate("mix-2"))
        # The mix prints its directory record on stdout; keep it off the report while it runs.
        with contextlib.redirect_stdout(io.StringIO()):
            node = asyncio.create_task(runtime.run(make_service(MixSettings())))
            try:
                while runtime.metrics is None or runtime.metrics.port == 0:
                    if node.done():
                        node.result()  # the node failed to start: raise its error
                    await asyncio.sleep(0.05)
                # A node in service has links: give it one, so per-link figures have a sample.
                runtime.transport.add_peer("mix-2", await neighbour.listen())
                await runtime.transport.connect("mix-2")
                names: set[str] = set()
                for audit in range(AUDITS):
                    await asyncio.sleep(max(0.0, (audit + 1) * options.duration_s / AUDITS - (time.perf_counter() - started)))
                    names = exported(await scrape(runtime.metrics.host, runtime.metrics.port))
                    if options.tick is not None:
                        options.tick(time.perf_counter() - started)
            finally:
                node.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await node
                await neighbour.close()
    missing = [name for name in wanted if name not in names and f"{name}_total" not in names]
    present = len(wanted) - len(missing)
    return Measurement(
        value=float(len(missing)),
        duration_s=time.perf_counter() - started,
        detail=f"{present} of {len(wanted)} data-plane SLI names exported by a running mix node ({AUDITS} audits of /metrics)",
        notes=(f"missing: {', '.join(missing)}" if missing else "nothing missing",),
    )
