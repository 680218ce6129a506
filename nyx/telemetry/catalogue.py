"""The metric catalogue: every name a Nyx node exports, with its SCL scenario where it has one.

Names come from the SCL catalogue (../shared/spec/scalability.md, "monitoring metric" of each
scenario) for the data plane, so a benchmark report and a live node speak of the same quantity
under the same name. Control-plane and infrastructure names from that catalogue (etcd, Helm,
Vault, ...) are not emitted by this data plane and are not listed. docs/metrics.md documents each.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["counter", "gauge"]


@dataclass(frozen=True, slots=True)
class MetricSpec:
    name: str
    kind: Kind
    help: str
    layer: str
    scl: str | None = None
    unit: str = ""


CATALOGUE: tuple[MetricSpec, ...] = (
    # -- SCL monitoring metrics (data plane) --
    MetricSpec("stream_latency_p95", "gauge", "95th percentile end-to-end stream frame latency", "stream", "SCL-001", "seconds"),
    MetricSpec("api_handshake_errors_total", "counter", "Client handshakes that failed at the gateway", "stream", "SCL-002"),
    MetricSpec("cpu_user_pct", "gauge", "Process user CPU time as a percentage of one core over the last interval", "node", "SCL-003", "percent"),
    MetricSpec("route_update_latency", "gauge", "Time from a route failure to traffic on the replacement route (last event)", "stream", "SCL-004", "seconds"),
    MetricSpec("cover_traffic_compliance", "gauge", "Share of windows in which emitted traffic matched the target Poisson process", "cover", "SCL-005", "ratio"),
    MetricSpec("transport_packet_loss", "gauge", "Share of packets offered to the transport that were dropped or known lost", "transport", "SCL-006", "ratio"),
    MetricSpec("directory_rebuild_duration", "gauge", "Duration of the last directory rebuild", "directory", "SCL-011", "seconds"),
    MetricSpec("mix_failover_duration", "gauge", "Time to route around a failed mix (last event)", "mix", "SCL-012", "seconds"),
    MetricSpec("stream_queue_latency", "gauge", "Time data waits in a stream's send queue under backpressure (p95 over the interval)", "stream", "SCL-013", "seconds"),
    MetricSpec("latency_cross_region", "gauge", "Median end-to-end latency of streams whose path crosses regions", "stream", "SCL-014", "seconds"),
    MetricSpec("sdk_session_success", "gauge", "Share of client session attempts that succeeded", "stream", "SCL-016", "ratio"),
    MetricSpec("region_failover_duration", "gauge", "Time for clients to move off a failed region (last event)", "stream", "SCL-030", "seconds"),
    MetricSpec("cover_drift_percent", "gauge", "Deviation of the emitted cover rate from its target", "cover", "SCL-032", "percent"),
    MetricSpec("telemetry_freshness", "gauge", "Age of the published metric values at scrape time", "telemetry", "SCL-033", "seconds"),
    MetricSpec("tls_handshake_duration", "gauge", "Mean QUIC/TLS handshake duration of the last 256 outbound links", "transport", "SCL-035", "seconds"),
    MetricSpec("pq_handshake_success", "gauge", "Share of post-quantum (hybrid or pq suite) handshakes that succeeded", "stream", "SCL-036", "ratio"),
    MetricSpec("key_reload_duration", "gauge", "Duration of the last key rotation or reload", "mix", "SCL-037", "seconds"),
    MetricSpec("client_version_errors", "counter", "Handshakes refused for an unsupported protocol version or suite", "stream", "SCL-039"),
    MetricSpec("fec_encode_latency", "gauge", "Mean Reed-Solomon encode time per block over the interval", "fec", "SCL-044", "seconds"),
    MetricSpec("mix_packet_drop", "counter", "Packets a mix dropped (replay, bad MAC, expired, queue full)", "mix", "SCL-045"),
    MetricSpec("directory_lookup_latency", "gauge", "Mean directory lookup time over the interval", "directory", "SCL-046", "seconds"),
    MetricSpec("traefik_active_connections", "gauge", "Client connections an entry gateway holds (SCL-038's ingress proxy: clients reach gateways directly)", "stream", "SCL-038"),
    MetricSpec("uptime_global", "gauge", "Seconds since this node started", "node", "SCL-050", "seconds"),
    # -- transport detail (no SCL scenario; they explain transport_packet_loss) --
    MetricSpec("transport_packets_sent_total", "counter", "Packets handed to a link", "transport"),
    MetricSpec("transport_packets_received_total", "counter", "Packets received from links", "transport"),
    MetricSpec("transport_packets_dropped_total", "counter", "Packets refused by a full per-peer queue", "transport"),
    MetricSpec("transport_bytes_sent_total", "counter", "Payload bytes handed to links", "transport", unit="bytes"),
    MetricSpec("transport_bytes_received_total", "counter", "Payload bytes received from links", "transport", unit="bytes"),
    MetricSpec("transport_peers", "gauge", "Peers with traffic in either direction", "transport"),
    MetricSpec("transport_links_up", "gauge", "Outbound links currently connected", "transport"),
    MetricSpec("transport_inbound_connections", "gauge", "Inbound QUIC connections currently open", "transport"),
    MetricSpec("transport_handshakes_total", "counter", "Completed QUIC handshakes (both directions)", "transport"),
    MetricSpec("transport_handshakes_resumed_total", "counter", "Completed QUIC handshakes that resumed a TLS session (ticket)", "transport"),
    MetricSpec("transport_auth_failures_total", "counter", "Links refused because the certificate fingerprint did not match", "transport"),
    MetricSpec("transport_unroutable_total", "counter", "UDP datagrams that matched no connection and started none", "transport"),
    MetricSpec("transport_inbound_half_open", "gauge", "Inbound QUIC connections still in their handshake", "transport"),
    MetricSpec("transport_inbound_refused_total", "counter", "Inbound connections refused because established inbound connections were at their limit", "transport"),
    MetricSpec("transport_half_open_evicted_total", "counter", "Half-open inbound connections evicted (oldest first) because the half-open budget was full", "transport"),
    MetricSpec("transport_half_open_source_evicted_total", "counter", "Half-open inbound connections evicted because their source address was at its half-open limit", "transport"),
    MetricSpec("transport_half_open_expired_total", "counter", "Half-open inbound connections dropped at the handshake timeout", "transport"),
    MetricSpec("transport_retry_sent_total", "counter", "Client Initials answered with a stateless QUIC Retry (address validation under load)", "transport"),
    MetricSpec("transport_retry_token_rejected_total", "counter", "Client Initials dropped for an invalid, expired or misaddressed Retry token", "transport"),
    # -- cover detail (no SCL scenario) --
    MetricSpec("mix_loop_success", "gauge", "Share of a mix's judged loop cover packets that came back (lost loops flag failing or attacking mixes)", "cover", unit="ratio"),
    MetricSpec("cover_loops_returned_total", "counter", "Loop cover packets that came back", "cover"),
    MetricSpec("cover_loops_lost_total", "counter", "Loop cover packets that did not come back within the loop timeout", "cover"),
    # -- directory detail (no SCL scenario; docs/directory.md) --
    MetricSpec("directory_epoch", "gauge", "Epoch of the newest document this directory serves", "directory"),
    MetricSpec("directory_nodes_registered", "gauge", "Nodes registered with this directory authority (up or not)", "directory"),
    MetricSpec("directory_nodes_listed", "gauge", "Nodes listed in the newest document (registered and up)", "directory"),
    MetricSpec("directory_lookups_total", "counter", "Lookups of a node record by id", "directory"),
    MetricSpec("directory_statements_total", "counter", "Signed node statements received (register, heartbeat, drain, report)", "directory"),
    MetricSpec("directory_statements_refused_total", "counter", "Node statements refused (bad signature, replay, stale, unregistered, malformed)", "directory"),
    # -- gateway detail (no SCL scenario; docs/stream.md) --
    MetricSpec("gateway_clients", "gauge", "Clients admitted at this entry gateway and not yet forgotten", "stream"),
    MetricSpec("gateway_sessions_open", "gauge", "End-to-end sessions open at this exit gateway", "stream"),
    MetricSpec("gateway_sessions_opened_total", "counter", "End-to-end sessions this exit gateway opened", "stream"),
    MetricSpec("gateway_streams_open", "gauge", "Streams this exit gateway is serving (service or TCP relay)", "stream"),
    MetricSpec("gateway_replies_sent_total", "counter", "Reply packets this exit sent on clients' SURBs", "stream"),
    MetricSpec("gateway_client_deliveries_total", "counter", "Packets this entry gateway delivered to its clients (SURB replies, loops)", "stream"),
    MetricSpec("gateway_client_admitted_total", "counter", "Client handshakes admitted by the per-address rate limit", "stream"),
    MetricSpec("gateway_client_rate_limited_total", "counter", "Client handshakes refused by the per-address rate limit (correct refusals, not errors)", "stream"),
    MetricSpec("gateway_exit_drops_total", "counter", "Envelopes the exit dropped (malformed, unknown session, failed handshakes, full)", "stream"),
    MetricSpec("gateway_drops_total", "counter", "Packets the gateway itself dropped (not a packet, refused client, client gone, bad SURB)", "stream"),
    # -- client detail (nyx.Client.metric_values) --
    MetricSpec("client_sessions_open", "gauge", "Sessions this client holds open (one per exit)", "stream"),
    MetricSpec("client_packets_sent_total", "counter", "Real packets this client handed to a payload slot or the transport", "stream"),
    MetricSpec("client_drops_total", "counter", "What this client dropped (unknown SURB, tampered reply, no route, not from its entry)", "stream"),
    MetricSpec("client_surbs_outstanding", "gauge", "SURBs this client made whose replies have not come back (their keys are held)", "stream"),
    MetricSpec("client_packets_waiting", "gauge", "Real packets waiting for a payload slot (the cover queue is full)", "stream"),
    # -- node --
    MetricSpec("node_draining", "gauge", "1 while the node drains for shutdown, else 0", "node"),
)

BY_NAME: dict[str, MetricSpec] = {spec.name: spec for spec in CATALOGUE}
