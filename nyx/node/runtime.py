"""The node runtime shared by every node kind: identity, transport, metrics, signals, drain.

A node kind (mix, gateway) supplies a *service*: an async callable that receives the runtime and
runs until cancelled, plus optional drain hooks. The runtime owns everything else:

- The transport: by default a `QuicTransport` built from the config (with the node's TLS identity
  from `data_dir`); a benchmark or test passes any other `Transport` (or a factory for one), e.g.
  a `SimTransport`, and the same service runs over it. The runtime uses only the `Transport`
  interface.

- SIGTERM drains: /healthz turns 503, drain hooks run (a mix stops accepting and flushes its delay
  queue), the transport's queues empty, then the node exits 0 (or EXIT_DRAIN_INCOMPLETE if
  `drain_timeout_s` passed first).
- SIGINT stops at once (exit 130, the shell convention for an interrupt).
- Configuration and key errors exit EXIT_CONFIG before anything listens.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable

from nyx.node.config import NodeConfig, resolve_backend
from nyx.node.keys import load_or_create_identity
from nyx.telemetry import MetricRegistry, MetricsServer
from nyx.transport.base import PeerAddress, Transport
from nyx.transport.sockbuf import SocketBuffers, cap_message

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_DRAIN_INCOMPLETE = 3
EXIT_SOFTWARE = 70  # sysexits EX_SOFTWARE: a bug
EXIT_CONFIG = 78  # sysexits EX_CONFIG: bad configuration or unsafe key file
EXIT_INTERRUPTED = 130

Service = Callable[["NodeRuntime"], Awaitable[None]]
DrainHook = Callable[[], Awaitable[None]]
TransportFactory = Callable[[NodeConfig], Transport]


def quic_transport(config: NodeConfig) -> Transport:
    """The default transport: QUIC on the configured address, with the node's TLS identity from
    `data_dir` (created on first start; an unsafe key file raises CertificateError)."""
    from nyx.transport.quic import QuicSettings, QuicTransport  # only QUIC nodes pay its import

    backend = resolve_backend(config.backend)  # "auto": qh3 when installed, else aioquic
    identity = load_or_create_identity(config.data_dir, config.node_id)
    settings = QuicSettings(host=config.host, port=config.port, backend=backend, queue_packets=config.queue_packets)
    return QuicTransport(config.node_id, identity, settings)


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    """"uvloop" or "asyncio": the event loop a node runs on, as its start line says."""
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


class NodeRuntime:
    """One node process. Create with a validated config, then `exit_code = await run(service)`.

    `transport`: the `Transport` to serve on, or a factory called with the config; by default
    `quic_transport`. The runtime closes it when `run` returns.
    """

    def __init__(self, config: NodeConfig, transport: Transport | TransportFactory | None = None) -> None:
        self.config = config
        if transport is None:
            transport = quic_transport
        self.transport: Transport = transport if isinstance(transport, Transport) else transport(config)
        self.identity = getattr(self.transport, "identity", None)  # QUIC only: the TLS identity
        self.address: PeerAddress | None = None  # what listen() returned: the record to publish
        for peer, address in config.peers.items():
            self.transport.add_peer(peer, address)
        self.registry = MetricRegistry({"node": config.node_id, "role": config.role})
        self.registry.add_source("transport", self.transport.metric_values)
        self.registry.add_source("node", self._node_metrics)
        self.metrics: MetricsServer | None = None
        if config.metrics_port >= 0:
            self.metrics = MetricsServer(self.registry, self.health, config.metrics_host, config.metrics_port)
        self.draining = False
        self._drain_hooks: list[DrainHook] = []
        self._signal: asyncio.Future[signal.Signals] | None = None
        self._cpu_last = (time.monotonic(), os.times().user)

    def on_drain(self, hook: DrainHook) -> None:
        """Run `hook` on SIGTERM, before the transport drains (e.g. flush a mix's delay queue)."""
        self._drain_hooks.append(hook)

    def health(self) -> tuple[bool, str]:
        if self.draining:
            return False, "draining"
        return True, "ok"

    def _node_metrics(self) -> dict[str, float]:
        now, user = time.monotonic(), os.times().user
        last_now, last_user = self._cpu_last
        self._cpu_last = (now, user)
        cpu = 100.0 * (user - last_user) / (now - last_now) if now > last_now else 0.0
        return {"cpu_user_pct": cpu, "node_draining": 1.0 if self.draining else 0.0}

    def _on_signal(self, signum: signal.Signals) -> None:
        if self._signal is not None and not self._signal.done():
            self._signal.set_result(signum)
        elif signum == signal.SIGINT:  # a second Ctrl-C during a drain: stop now
            raise KeyboardInterrupt

    def stop(self, drain: bool = True) -> None:
        """Ask a running node to stop, as SIGTERM (drain first) or SIGINT (at once) would: for
        nodes run in-process (benchmarks, tests), where signals would reach every node."""
        if self._signal is not None and not self._signal.done():
            self._signal.set_result(signal.SIGTERM if drain else signal.SIGINT)

    async def run(self, service: Service | None = None, handle_signals: bool = True) -> int:
        """Listen, serve, wait for SIGTERM/SIGINT (or `stop()`); return the process exit code.

        `handle_signals=False` leaves the process's signal handlers alone, for several runtimes
        in one process; stop them with `stop()`.
        """
        loop = asyncio.get_running_loop()
        self._signal = loop.create_future()
        signums = (signal.SIGTERM, signal.SIGINT) if handle_signals else ()
        for signum in signums:
            loop.add_signal_handler(signum, self._on_signal, signum)
        try:
            address = self.address = await self.transport.listen()
            if self.metrics is not None:
                await self.metrics.start()
            self.registry.publish()
            log.info(
                "%s (%s) listening on udp %s:%d (transport %s on %s), fingerprint %s; metrics on %s",
                self.config.node_id, self.config.role, address.host, address.port, self._transport_name(),
                loop_name(loop), address.fingerprint,
                f"http://{self.metrics.host}:{self.metrics.port}/metrics" if self.metrics else "off",
            )
            self._warn_of_capped_buffers()
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(self.registry.run(1.0), name="metrics-publisher")]
                if service is not None:
                    tasks.append(tg.create_task(service(self), name="service"))
                signum = await self._signal
                code = EXIT_INTERRUPTED
                if signum == signal.SIGTERM:
                    code = await self._drain()
                for task in tasks:
                    task.cancel()
            log.info("%s stopped (%s), exit %d", self.config.node_id, signal.Signals(signum).name, code)
            return code
        finally:
            for signum in signums:
                loop.remove_signal_handler(signum)
            await self.transport.close()
            if self.metrics is not None:
                await self.metrics.close()

    def _transport_name(self) -> str:
        backend = getattr(self.transport, "backend", None)
        return getattr(backend, "name", None) or type(self.transport).__name__

    def _warn_of_capped_buffers(self) -> None:
        """A node's operator can lift a kernel cap on its socket buffers; say how (sockbuf.py).
        Transports without a UDP socket (SimTransport) have nothing to report."""
        buffers = getattr(self.transport, "socket_buffers", None)
        message = cap_message(self.config.node_id, buffers) if isinstance(buffers, SocketBuffers) else None
        if message is not None:
            log.warning("%s", message)

    async def _drain(self) -> int:
        self.draining = True
        deadline = time.monotonic() + self.config.drain_timeout_s
        log.info("%s draining (up to %.1f s)", self.config.node_id, self.config.drain_timeout_s)
        try:
            async with asyncio.timeout(self.config.drain_timeout_s):
                for hook in self._drain_hooks:
                    await hook()
        except TimeoutError:
            log.warning("%s: drain hooks did not finish in time", self.config.node_id)
            return EXIT_DRAIN_INCOMPLETE
        remaining = max(0.0, deadline - time.monotonic())
        if not await self.transport.drain(remaining):
            log.warning("%s: packets still queued at the drain deadline", self.config.node_id)
            return EXIT_DRAIN_INCOMPLETE
        return EXIT_OK
