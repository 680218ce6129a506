"""nyx.telemetry: catalogue names, publish-from-attributes, exposition parses, HTTP endpoint."""

from __future__ import annotations

import asyncio
import math
import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from nyx.telemetry import CATALOGUE, MetricRegistry, MetricsServer, SampleWindow
from nyx.transport import LinkProfile, SimNetwork

# The copy of the SCL source in tests/ (checked against the original by test_bench_catalogue.py).
SPEC = Path(__file__).parent / "spec" / "scalability.md"
DATA_PLANE = {
    "stream_latency_p95", "api_handshake_errors_total", "route_update_latency", "cover_traffic_compliance",
    "transport_packet_loss", "mix_failover_duration", "stream_queue_latency", "latency_cross_region",
    "cover_drift_percent", "tls_handshake_duration", "pq_handshake_success", "key_reload_duration",
    "fec_encode_latency", "mix_packet_drop", "directory_lookup_latency", "directory_rebuild_duration",
}


def test_catalogue_holds_the_data_plane_names_of_the_scl_spec():
    names = {spec.name for spec in CATALOGUE}
    assert DATA_PLANE <= names
    spec_names = set(re.findall(r"監視メトリクス SCL-\d+-06\*\*: `([a-z0-9_]+)`", SPEC.read_text(encoding="utf-8")))
    assert DATA_PLANE <= spec_names


def test_every_catalogue_name_is_documented():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "metrics.md").read_text()
    missing = [spec.name for spec in CATALOGUE if f"`{spec.name}`" not in doc]
    assert missing == []


async def test_sources_are_read_at_publish_and_exposition_parses():
    net = SimNetwork(LinkProfile(latency_s=0.0, loss=0.5), seed=2)
    a, b = net.transport("a"), net.transport("b")
    await a.listen(), await b.listen()
    b.set_handler(lambda p, d: None)
    registry = MetricRegistry({"node": "a"})
    registry.add_source("transport", a.metric_values)
    registry.add_source("mix", lambda: {"mix_packet_drop": 7})
    for _ in range(100):
        a.send("b", b"x")
    assert registry.value("transport_packets_sent_total") is None  # nothing until publish
    registry.publish()
    assert registry.value("transport_packets_sent_total", node="a") == 100
    families = {f.name: f for f in text_string_to_metric_families(registry.exposition().decode())}
    assert families["mix_packet_drop"].type == "counter"
    assert families["mix_packet_drop"].samples[0].value == 7
    loss = families["transport_packet_loss"].samples[0]
    assert loss.labels == {"node": "a"} and 0.3 < loss.value < 0.7
    assert "telemetry_freshness" in families and "uptime_global" in families
    await net.close()


def test_failing_or_unknown_source_is_counted_and_others_still_publish():
    registry = MetricRegistry()
    registry.add_source("bad", lambda: 1 / 0)
    registry.add_source("typo", lambda: {"mix_packet_drops": 1})
    registry.add_source("good", lambda: {"mix_packet_drop": 3})
    registry.publish()
    assert registry.publish_errors == 2
    assert registry.value("mix_packet_drop") == 3


def test_sample_window_quantiles_are_nearest_rank_over_the_last_samples():
    window = SampleWindow(capacity=100)
    for i in range(1, 201):
        window.record(float(i))
    assert window.quantile(0.95) == 195.0  # only 101..200 are held
    assert window.count == 200
    assert math.isnan(SampleWindow().quantile(0.5))


async def _get(port: int, path: str, method: str = "GET") -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    response = await reader.read()
    writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def test_http_endpoint_serves_metrics_and_health():
    registry = MetricRegistry({"node": "n1"})
    registry.add_source("mix", lambda: {"mix_packet_drop": 1})
    registry.publish()
    healthy = [True]
    async with MetricsServer(registry, lambda: (healthy[0], "ok" if healthy[0] else "draining")) as server:
        status, body = await _get(server.port, "/metrics")
        assert status == 200
        assert any(f.name == "mix_packet_drop" for f in text_string_to_metric_families(body.decode()))
        assert await _get(server.port, "/healthz") == (200, b"ok\n")
        healthy[0] = False
        assert await _get(server.port, "/healthz") == (503, b"draining\n")
        assert (await _get(server.port, "/nope"))[0] == 404
        assert (await _get(server.port, "/metrics", "POST"))[0] == 405
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"garbage\r\n\r\n")
        assert b"400" in await reader.read()
        writer.close()
