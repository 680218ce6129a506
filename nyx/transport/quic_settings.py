"""`QuicSettings`: every tunable of a `QuicTransport`, in one frozen value.

A node's transport is configured once (from the node config, a benchmark, a test) and then not
changed, so its settings are a value that can be compared, logged and derived with
`dataclasses.replace` rather than seventeen constructor arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

from nyx.transport.admission import AdmissionLimits
from nyx.transport.supervisor import LinkTimers


@dataclass(frozen=True, slots=True)
class QuicSettings:
    """How a `QuicTransport` listens, queues, supervises its links and admits peers.

    host, port: the UDP socket (port 0: chosen by the OS). backend: "aioquic" or "qh3".
    queue_packets: per-peer bound on packets waiting (while connecting, and in the backend's
    DATAGRAM queue). idle_timeout_s: QUIC's idle timeout. idle_close_s: close an outbound link
    nothing was sent on for this long. keepalive_s: PING quiet links this often.
    peer_silence_s: an outbound link that sent but heard nothing for this long is dead.
    connect_timeout_s: give up a handshake after this long. backoff_initial_s, backoff_max_s:
    the reconnect backoff. socket_buffer_bytes: SO_RCVBUF / SO_SNDBUF asked of the kernel.
    resumption: issue and redeem TLS 1.3 session tickets. admission: limits on inbound
    connection state (admission.py).
    """

    host: str = "127.0.0.1"
    port: int = 0
    backend: str = "aioquic"
    queue_packets: int = 1024
    idle_timeout_s: float = 30.0
    idle_close_s: float = 300.0
    keepalive_s: float = 5.0
    peer_silence_s: float = 3.0
    connect_timeout_s: float = 5.0
    backoff_initial_s: float = 0.05
    backoff_max_s: float = 5.0
    socket_buffer_bytes: int = 4 * 1024 * 1024
    resumption: bool = True
    admission: AdmissionLimits = field(default_factory=AdmissionLimits)

    def __post_init__(self) -> None:
        if self.queue_packets < 1:
            raise ValueError(f"queue_packets must be at least 1, not {self.queue_packets}")
        for name in ("idle_timeout_s", "idle_close_s", "keepalive_s", "peer_silence_s", "connect_timeout_s",
                     "backoff_initial_s", "backoff_max_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, not {getattr(self, name)}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0..65535, not {self.port}")

    @property
    def link_timers(self) -> LinkTimers:
        """The link supervisor's share of these settings."""
        return LinkTimers(
            connect_timeout_s=self.connect_timeout_s,
            keepalive_s=self.keepalive_s,
            idle_close_s=self.idle_close_s,
            peer_silence_s=self.peer_silence_s,
            backoff_initial_s=self.backoff_initial_s,
            backoff_max_s=self.backoff_max_s,
        )

    def with_keywords(self, **keywords: Any) -> QuicSettings:
        """These settings with `keywords` replaced: the `QuicTransport(..., queue_packets=8)`
        spelling. `max_inbound` sets `admission.max_established` (its name before admission
        limits existed); an unknown name is a TypeError that lists the known ones."""
        if not keywords:
            return self
        max_inbound = keywords.pop("max_inbound", None)
        known = {f.name for f in fields(self)}
        unknown = sorted(set(keywords) - known)
        if unknown:
            raise TypeError(f"unknown QUIC setting(s) {unknown}; known: {sorted(known | {'max_inbound'})}")
        settings = replace(self, **keywords)
        if max_inbound is not None and "admission" not in keywords:
            settings = replace(settings, admission=replace(settings.admission, max_established=max_inbound))
        return settings
