"""The metric registry: sources of plain numbers, published to prometheus about once a second.

Layers do not call prometheus-client on their hot paths. Each registers a *source*: a callable
returning `{catalogue name: value}` from attributes it already keeps. `publish()` reads every
source and stores one snapshot; a custom collector serves that snapshot at scrape time. So the
per-packet cost is an integer add, and the per-second cost is one dict per source.

No global state: each node owns a `MetricRegistry` (and its own prometheus `CollectorRegistry`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from nyx.telemetry.catalogue import BY_NAME, MetricSpec

log = logging.getLogger(__name__)

Source = Callable[[], Mapping[str, float]]
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class UnknownMetricError(KeyError):
    """A source reported a name that is not in the catalogue (add it there and to docs/metrics.md)."""


class MetricRegistry:
    """Sources in, a prometheus exposition out.

    `labels` are attached to every sample (e.g. {"node": "mix-1-03", "role": "mix"}).
    """

    def __init__(self, labels: Mapping[str, str] | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.labels = dict(labels or {})
        self._clock = clock
        self._sources: list[tuple[str, Source, dict[str, str]]] = []
        self._snapshot: dict[str, list[tuple[dict[str, str], float]]] = {}
        self._published_at: float | None = None
        self._started_at = clock()
        self.publish_errors = 0
        self.prometheus = CollectorRegistry(auto_describe=False)
        self.prometheus.register(_SnapshotCollector(self))

    def add_source(self, name: str, source: Source, labels: Mapping[str, str] | None = None) -> None:
        """Register `source` (called at each publish); `labels` distinguish several of a kind."""
        self._sources.append((name, source, dict(labels or {})))

    def publish(self) -> None:
        """Read every source into a fresh snapshot. A failing source is logged, counted, skipped."""
        snapshot: dict[str, list[tuple[dict[str, str], float]]] = {}
        for source_name, source, labels in self._sources:
            try:
                values = dict(source())
            except Exception:
                self.publish_errors += 1
                log.exception("metric source %s failed", source_name)
                continue
            for name, value in values.items():
                if name not in BY_NAME:
                    self.publish_errors += 1
                    log.error("metric source %s reported %r, which is not in the catalogue", source_name, name)
                    continue
                snapshot.setdefault(name, []).append(({**self.labels, **labels}, float(value)))
        snapshot.setdefault("uptime_global", []).append((dict(self.labels), self._clock() - self._started_at))
        self._snapshot = snapshot
        self._published_at = self._clock()

    def value(self, name: str, **labels: str) -> float | None:
        """The published value of `name` whose labels include `labels` (for tests and health checks)."""
        for sample_labels, value in self._snapshot.get(name, ()):
            if all(sample_labels.get(k) == v for k, v in labels.items()):
                return value
        return None

    def freshness_s(self) -> float:
        return math.inf if self._published_at is None else self._clock() - self._published_at

    def exposition(self) -> bytes:
        """The Prometheus text format of the last snapshot."""
        return generate_latest(self.prometheus)

    async def run(self, interval_s: float = 1.0) -> None:
        """Publish every `interval_s` until cancelled (run it in the node's TaskGroup)."""
        while True:
            self.publish()
            await asyncio.sleep(interval_s)


class _SnapshotCollector:
    """Serves the registry's last snapshot to prometheus-client (no work per packet)."""

    def __init__(self, registry: MetricRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        snapshot = dict(self.registry._snapshot)
        freshness = self.registry.freshness_s()
        if math.isfinite(freshness):
            snapshot["telemetry_freshness"] = [(dict(self.registry.labels), freshness)]
        for name, samples in snapshot.items():
            spec: MetricSpec = BY_NAME[name]
            label_names = sorted({k for labels, _ in samples for k in labels})
            family: Metric
            if spec.kind == "counter":
                family = CounterMetricFamily(name.removesuffix("_total"), spec.help, labels=label_names)
            else:
                family = GaugeMetricFamily(name, spec.help, labels=label_names)
            for labels, value in samples:
                family.add_metric([labels.get(k, "") for k in label_names], value)
            yield family
