"""Two `Session`s over a simulated mix path, on a virtual clock: the stream core's test bench.

The channel models what a Sphinx route does to records: each record is delayed by the sum of
`hops` exponential per-hop delays plus a fixed link latency (so nearly every record is reordered),
lost at random or in bursts (a failed mix takes every record for a while), and sometimes
duplicated. No sockets and no event loop: `run` advances time to the next delivery or deadline,
so an hour of traffic takes seconds, and every run is reproducible from its seed.

    pair = SessionPair.from_handshake(seed=1)
    pair.client_sends(stream_payloads)            # bytes per stream, written as room allows
    report = pair.run(until_s=600.0)
    assert report.received == expected
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from nyx.crypto.suites import Suite
from nyx.stream.blocks import BlockReceiver, BlockSender
from nyx.stream.handshake import Initiator, Responder
from nyx.stream.session import (
    FecLossReported,
    Session,
    SessionClosed,
    SessionConfig,
    StreamOpened,
    StreamReadable,
    StreamWritable,
)


@dataclass(frozen=True, slots=True)
class PathModel:
    """What one direction of a route does to records."""

    hops: int = 3
    mean_hop_delay_s: float = 0.05
    latency_s: float = 0.005
    loss: float = 0.0  # independent loss per record
    burst_every_s: float = 0.0  # a burst of total loss starts this often on average (0: never)
    burst_length_s: float = 0.0
    duplicate: float = 0.0  # probability a delivered record arrives twice

    def delay(self, rng: random.Random) -> float:
        return self.latency_s + sum(rng.expovariate(1.0 / self.mean_hop_delay_s) for _ in range(self.hops)) if self.mean_hop_delay_s > 0 else self.latency_s


@dataclass(slots=True)
class _Direction:
    model: PathModel
    rng: random.Random
    burst_until: float = -1.0
    next_burst_at: float = float("inf")
    sent: int = 0
    lost: int = 0
    duplicated: int = 0

    def __post_init__(self) -> None:
        if self.model.burst_every_s > 0:
            self.next_burst_at = self.rng.expovariate(1.0 / self.model.burst_every_s)

    def fates(self, now: float) -> list[float]:
        """Arrival times of one record sent at `now` (none if lost, two if duplicated)."""
        self.sent += 1
        model = self.model
        while now >= self.next_burst_at:
            self.burst_until = self.next_burst_at + model.burst_length_s
            self.next_burst_at += model.burst_length_s + self.rng.expovariate(1.0 / model.burst_every_s)
        if now < self.burst_until or self.rng.random() < model.loss:
            self.lost += 1
            return []
        arrivals = [now + model.delay(self.rng)]
        if model.duplicate and self.rng.random() < model.duplicate:
            self.duplicated += 1
            arrivals.append(now + model.delay(self.rng))
        return arrivals


@dataclass(slots=True)
class Endpoint:
    """One side's session and its application: what it still has to write, what it has read."""

    session: Session
    to_write: dict[int, bytearray] = field(default_factory=dict)
    finish_after: set[int] = field(default_factory=set)
    received: dict[int, bytearray] = field(default_factory=dict)
    eof: set[int] = field(default_factory=set)
    read_budget_bytes: int | None = None  # None: read everything at once; else per wake-up
    echo: bool = False  # write back what is read (the exit's `echo` service)
    closed: SessionClosed | None = None
    fec_sender: BlockSender | None = None  # FEC blocks over this side's records
    fec_receiver: BlockReceiver | None = None  # and over the peer's

    def feed_fec(self) -> None:
        """Report the peer's shard loss we saw, in a FEC_REPORT frame."""
        if self.fec_receiver is not None and (report := self.fec_receiver.take_report()) is not None:
            self.session.report_fec(*report)

    def pump_writes(self) -> None:
        for stream_id, pending in list(self.to_write.items()):
            if pending:
                taken = self.session.write(stream_id, bytes(pending))
                del pending[:taken]
            if not pending and stream_id in self.finish_after:
                self.session.finish(stream_id)
                self.finish_after.discard(stream_id)
                del self.to_write[stream_id]

    def handle_events(self) -> None:
        # A budgeted reader that left bytes behind reads on at every wake-up (each step of the
        # run), not only when a new STREAM frame says "readable": the frames may all be in
        # already, and a reader that waited for another would wait for ever (a stall of the
        # harness, not of the session: a real application reads until it has what it wants).
        for stream_id in [s for s in self.received if s not in self.eof]:
            self._read(stream_id)
        for event in self.session.events():
            if isinstance(event, (StreamReadable, StreamOpened)):
                self._read(event.stream_id)
            elif isinstance(event, StreamWritable):
                pass  # pump_writes runs after every step
            elif isinstance(event, FecLossReported):
                if self.fec_sender is not None:
                    self.fec_sender.observe(event.shards_expected, event.shards_expected - event.shards_received)
            elif isinstance(event, SessionClosed):
                self.closed = event

    def read_all(self) -> None:
        for stream_id in self.session.streams():
            self._read(stream_id)

    def _read(self, stream_id: int) -> None:
        session = self.session
        if not session.has_stream(stream_id):
            return
        data = session.read(stream_id, -1 if self.read_budget_bytes is None else self.read_budget_bytes)
        if data:
            self.received.setdefault(stream_id, bytearray()).extend(data)
            if self.echo:
                self.to_write.setdefault(stream_id, bytearray()).extend(data)
        if session.at_eof(stream_id) and stream_id not in self.eof:
            self.eof.add(stream_id)
            if self.echo:
                self.to_write.setdefault(stream_id, bytearray())
                self.finish_after.add(stream_id)


def handshake_keys(suite: Suite = Suite.CLASSIC, now: float = 1_800_000_000.0):  # type: ignore[no-untyped-def]
    """A real handshake's two SessionKeys (initiator, responder)."""
    private_key, public_key = suite.kem().generate()
    initiator = Initiator({suite: public_key}, preference=(suite,))
    responder = Responder({suite: private_key})
    accept, pending = responder.respond(initiator.start(now), now)
    finish, client_keys = initiator.receive(accept)
    return client_keys, pending.finish(finish)


@dataclass(slots=True)
class RunReport:
    now: float
    steps: int
    records: dict[str, int]


class SessionPair:
    """A client and a server session joined by two simulated path directions."""

    def __init__(
        self,
        forward: PathModel = PathModel(),
        backward: PathModel = PathModel(),
        *,
        seed: int = 1,
        client_config: SessionConfig = SessionConfig(),
        server_config: SessionConfig = SessionConfig(),
        suite: Suite = Suite.CLASSIC,
    ) -> None:
        rng = random.Random(seed)
        client_keys, server_keys = handshake_keys(suite)
        self.now = 0.0
        self.client = Endpoint(Session(client_keys, self.now, client_config))
        self.server = Endpoint(Session(server_keys, self.now, server_config))
        self._paths = {
            "client": _Direction(forward, random.Random(rng.random())),
            "server": _Direction(backward, random.Random(rng.random())),
        }
        self._queue: list[tuple[float, int, str, bytes]] = []
        self._seq = 0
        self._surb_counter = 0
        self.surbs_created: set[bytes] = set()
        self.surbs_spent: set[bytes] = set()
        self.on_step: Callable[[SessionPair], None] | None = None

    def client_sends(self, payloads: dict[int, bytes] | list[bytes], finish: bool = True) -> list[int]:
        """Open one client stream per payload and queue its bytes (and FIN)."""
        items = payloads.values() if isinstance(payloads, dict) else payloads
        ids = []
        for payload in items:
            stream_id = self.client.session.open_stream()
            self.client.to_write[stream_id] = bytearray(payload)
            if finish:
                self.client.finish_after.add(stream_id)
            ids.append(stream_id)
        return ids

    def enable_fec(self, message_bytes: int = 646 - 8, max_k: int = 8, expected_loss: float = 0.05) -> None:
        """Carry both directions' records in FEC blocks (call before any record is sent; the
        sessions' max_record_bytes must leave room for the shard framing)."""
        for endpoint in (self.client, self.server):
            endpoint.fec_sender = BlockSender(message_bytes, max_k=max_k, expected_loss=expected_loss)
            endpoint.fec_receiver = BlockReceiver()

    def _flush(self, name: str, endpoint: Endpoint) -> None:
        endpoint.pump_writes()
        endpoint.feed_fec()
        session = endpoint.session
        wanted = session.surbs_wanted()
        if wanted:  # stand-ins for real SURBs: unique 552-byte blobs, checked single-use below
            first = self._surb_counter + 1
            self._surb_counter += wanted
            blobs = [n.to_bytes(8, "big") + bytes(544) for n in range(first, first + wanted)]
            self.surbs_created.update(blobs)
            session.send_surbs(blobs)
        burst = []
        if session.surb_pool is not None:
            while (reply := session.next_reply(self.now)) is not None:
                surb, record = reply
                if surb not in self.surbs_created or surb in self.surbs_spent:
                    raise AssertionError("a reply went out on a SURB the client never sent, or twice")
                self.surbs_spent.add(surb)
                burst.append(record)
        else:
            while (record := session.next_record(self.now)) is not None:
                burst.append(record)
        messages = endpoint.fec_sender.encode(burst) if endpoint.fec_sender is not None and burst else burst
        direction = self._paths[name]
        for message in messages:
            for arrival in direction.fates(self.now):
                self._seq += 1
                heapq.heappush(self._queue, (arrival, self._seq, name, message))

    def run(self, until_s: float, stop: Callable[[SessionPair], bool] | None = None, max_steps: int = 5_000_000) -> RunReport:
        """Advance the virtual clock until `until_s`, `stop(pair)` is true, or nothing is left."""
        steps = 0
        endpoints = {"client": self.client, "server": self.server}
        while steps < max_steps:
            steps += 1
            for name, endpoint in endpoints.items():
                endpoint.handle_events()
                self._flush(name, endpoint)
                endpoint.handle_events()
            if stop is not None and stop(self):
                break
            times = [t for t in (e.session.deadline() for e in endpoints.values()) if t is not None]
            if self._queue:
                times.append(self._queue[0][0])
            if not times:
                break
            self.now = max(self.now, min(times))
            if self.now > until_s:
                self.now = until_s
                break
            while self._queue and self._queue[0][0] <= self.now:
                _, _, sender, message = heapq.heappop(self._queue)
                receiver = self.server if sender == "client" else self.client
                if receiver.fec_receiver is None:
                    receiver.session.receive_record(message, self.now)
                else:
                    for record in receiver.fec_receiver.receive(message):
                        receiver.session.receive_record(record, self.now)
            for endpoint in endpoints.values():
                deadline = endpoint.session.deadline()
                if deadline is not None and deadline <= self.now:
                    endpoint.session.on_timer(self.now)
            if self.on_step is not None:
                self.on_step(self)
        records = {
            f"{name}_{key}": value
            for name, d in self._paths.items()
            for key, value in (("sent", d.sent), ("lost", d.lost), ("duplicated", d.duplicated))
        }
        return RunReport(self.now, steps, records)
