"""The node runtime shared by every node kind: identity, transport, metrics, signals, drain.

A node kind (mix, gateway) supplies a *service*: an async callable that receives the runtime and
runs until cancelled, plus optional drain hooks. The runtime owns everything else:

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

from nyx.node.config import NodeConfig
from nyx.node.keys import load_or_create_identity
from nyx.telemetry import MetricRegistry, MetricsServer
from nyx.transport.quic import QuicTransport

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_DRAIN_INCOMPLETE = 3
EXIT_SOFTWARE = 70  # sysexits EX_SOFTWARE: a bug
EXIT_CONFIG = 78  # sysexits EX_CONFIG: bad configuration or unsafe key file
EXIT_INTERRUPTED = 130

Service = Callable[["NodeRuntime"], Awaitable[None]]
DrainHook = Callable[[], Awaitable[None]]


class NodeRuntime:
    """One node process. Create with a validated config, then `exit_code = await run(service)`."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.identity = load_or_create_identity(config.data_dir, config.node_id)
        self.transport = QuicTransport(
            config.node_id,
            self.identity,
            host=config.host,
            port=config.port,
            backend=config.backend,
            queue_packets=config.queue_packets,
        )
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

    async def run(self, service: Service | None = None) -> int:
        """Listen, serve, wait for SIGTERM/SIGINT; return the process exit code."""
        loop = asyncio.get_running_loop()
        self._signal = loop.create_future()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_signal, signum)
        try:
            address = await self.transport.listen()
            if self.metrics is not None:
                await self.metrics.start()
            self.registry.publish()
            log.info(
                "%s (%s) listening on udp %s:%d (%s), fingerprint %s; metrics on %s",
                self.config.node_id, self.config.role, address.host, address.port, self.config.backend,
                address.fingerprint,
                f"http://{self.metrics.host}:{self.metrics.port}/metrics" if self.metrics else "off",
            )
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
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
            await self.transport.close()
            if self.metrics is not None:
                await self.metrics.close()

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
