"""`Gateway`: the stream node's asyncio shell, both roles on one `Transport` (docs/stream.md,
"Running a gateway").

    client ══QUIC══> [entry: removes the first Sphinx layer] ──> mix L1 ──> L2 ──> L3
        ──> [exit: removes the last layer] ──> ExitCore ──> a service or an allowed TCP host
    replies: ExitCore ──SURB──> L1 ──> L2 ──> L3 ──> [entry: delivers to its client] ══> client

- **Entry.** A client's packets arrive over its own QUIC connection, labelled with the random
  client id it named itself with. The entry gateway is the first hop of every route its clients
  build (a Loopix provider), so it learns where a packet goes next the way every mix does, by
  removing a layer; no clear-text "next hop" travels beside the packet and the packet a client
  sent cannot be matched by its bytes to the one that leaves for layer 1. The first packet under
  a new client id is a client handshake: it spends a token of `ClientAdmission` (per source
  address); a refused client gets a refusal datagram (`entry_wire`) and its connection closes.
  Messages whose last hop is this gateway and whose recipient is one of its clients (replies on
  SURBs, loop cover coming back) go to that client over its connection.
- **Exit.** Messages whose recipient is this gateway itself are envelopes for `ExitCore`; drop
  cover (`nyx.cover.packets.is_drop_cover`) is discarded. Each stream a client opens is served
  by `serve(reader, writer)` (`nyx.stream.services.ExitServices.serve`: the target prelude,
  then a built-in service, a registered one or an allowed TCP destination) in a task this
  gateway owns. Replies leave on the client's SURBs (`create_reply`, no public-key operation).

One `MixNode` does the Sphinx work (one key ring and one replay table for both roles: a packet
replayed to either role is dropped), one task drives `ExitCore` (one wait for a wake-up or its
deadline, every session in one pass), and one task per open stream runs its service. Drain
(SIGTERM): new sessions are refused, every session is given until `drain_timeout_s` to have
every byte it accepted acknowledged (`Session.settled`), then the mix node flushes.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import time
from collections.abc import Awaitable, Callable

from nyx.cover.packets import is_drop_cover
from nyx.mix.core import Deliver, MixCore
from nyx.mix.delay import PoissonDelay
from nyx.mix.keys import KeyRing
from nyx.mix.node import MixNode, encode_delivery, send_failure_reason
from nyx.mix.packet import DEFAULT_FORMAT, MixPacketError, PacketFormat, Surb, create_reply
from nyx.stream import envelope as E
from nyx.stream.client_admission import ClientAdmission
from nyx.stream.entry_wire import RefusalReason, encode_refusal
from nyx.stream.events import SessionClosed, StreamOpened
from nyx.stream.exit import ExitCore
from nyx.stream.handshake import Responder
from nyx.stream.session import SessionConfig
from nyx.stream.surbs import SurbPolicy
from nyx.stream.shell import NyxStreamReader, NyxStreamWriter, SessionStreams, wake_or_deadline
from nyx.transport.base import Transport, TransportError

__all__ = ["GATEWAY_DROP_REASONS", "Gateway", "StreamService", "build_gateway"]

log = logging.getLogger(__name__)

StreamService = Callable[[NyxStreamReader, NyxStreamWriter], Awaitable[None]]
"""Serves one stream a client opened at this exit (reads the target, answers, relays)."""

#: What the gateway itself (not its mix core, not ExitCore) drops, by reason.
GATEWAY_DROP_REASONS = (
    "not_a_packet",  # a datagram that is not one Sphinx packet long
    "client_refused",  # a packet from a client refused by rate limit, capacity or drain
    "before_hello",  # a client packet on a connection that has not named itself (yet)
    "client_gone",  # a delivery for a client with no live connection here
    "client_queue_full",  # a delivery for a client whose connection queue is full
    "bad_surb",  # ExitCore handed out a SURB that does not decode (a client sent garbage)
    "reply_send_failed",  # the reply's first hop could not be sent to
)
_REFUSAL_CLOSE_DELAY_S = 0.05  # let the refusal datagram leave before CONNECTION_CLOSE


class Gateway:
    """Entry and exit roles on one transport; `await run()` serves until cancelled."""

    def __init__(
        self,
        node_id: str,
        node: MixNode,
        exit_core: ExitCore,
        serve: StreamService,
        *,
        is_node: Callable[[str], bool],
        admission: ClientAdmission | None = None,
        max_clients: int = 100_000,
        packet_format: PacketFormat = DEFAULT_FORMAT,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """`node`: a MixNode made with `install_handler=False` and no `on_deliver` (set here).
        `is_node(peer)`: whether a peer id is a directory node (a mix or gateway), not a client.
        `clock`: the wall clock of key epochs and handshakes; `monotonic` paces the admission."""
        if node.install_handler:
            raise ValueError("give the gateway a MixNode made with install_handler=False")
        self.node_id = node_id
        self.node = node
        self.transport: Transport = node.transport
        self.exit = exit_core
        self.serve = serve
        self.is_node = is_node
        self.admission = admission if admission is not None else ClientAdmission()
        self.max_clients = max_clients
        self.packet_format = packet_format
        self.clock = clock
        self.monotonic = monotonic
        node.on_deliver = self._on_deliver
        self.clients: collections.OrderedDict[str, None] = collections.OrderedDict()  # admitted, LRU
        self.refused_clients: set[str] = set()
        self.drops: collections.Counter[str] = collections.Counter()
        self.counts: collections.Counter[str] = collections.Counter()  # replies, deliveries, cover
        self.accepting_clients = True
        self._streams: dict[bytes, SessionStreams] = {}
        self._dirty: set[bytes] = set()
        self._wakeup = asyncio.Event()
        self._tasks: asyncio.TaskGroup | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle ----------------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve until cancelled: the mix node, the exit loop, one task per open stream."""
        self._loop = asyncio.get_running_loop()
        self.transport.set_handler(self._on_packet)
        try:
            async with asyncio.TaskGroup() as tg:
                self._tasks = tg
                tg.create_task(self.node.run(), name=f"{self.node_id}:mix")
                tg.create_task(self._exit_loop(), name=f"{self.node_id}:exit")
        finally:
            self._tasks = None
            self.transport.set_handler(None)
            for streams in self._streams.values():
                streams.end_all()

    async def drain(self, timeout_s: float = 10.0) -> bool:
        """Refuse new clients and sessions, wait (at most `timeout_s`) until every stream being
        served has ended (its client finished it: the bytes already under way are taken) and
        every session has every byte it accepted acknowledged, then flush the mix node. True if
        all that happened in time."""
        self.accepting_clients = False
        self.exit.max_sessions = len(self.exit)  # openings beyond the live sessions are refused
        deadline = self.monotonic() + timeout_s
        settled = False
        while self.monotonic() < deadline:
            self._wakeup.set()
            await asyncio.sleep(0.05)
            streams_open = self.counts["streams_opened"] - self.counts["streams_ended"]
            if streams_open == 0 and all(self._settled(sid) for sid in list(self._streams)):
                settled = True
                break
        await self.node.drain()
        return settled

    def _settled(self, sid: bytes) -> bool:
        session = self.exit.session(sid)
        streams = self._streams.get(sid)
        if session is None or session.closed is not None:
            return True
        return session.settled and (streams is None or not streams.wants_pump())

    # -- entry: packets from clients and mixes ------------------------------------------------------

    def _on_packet(self, peer: str, data: bytes) -> None:
        if len(data) != self.packet_format.packet_bytes:
            self.drops["not_a_packet"] += 1
            return
        if not self.is_node(peer) and not self._admit(peer):
            return  # counted by reason in _admit
        self.node.receive(peer, data)

    def _admit(self, client: str) -> bool:
        """A packet from a client: known and admitted, or a new client handshake to ration."""
        if client in self.clients:
            self.clients.move_to_end(client)
            return True
        if client.startswith("?"):
            # A datagram that overtook its connection's hello, or a connection that never says
            # hello: admitting it would let a client skip the handshake limit by never naming
            # itself. Dropped (the stream layer resends; a hello overtaken is rare).
            self.drops["before_hello"] += 1
            return False
        if client in self.refused_clients:
            self.drops["client_refused"] += 1
            return False
        reason = None
        source = self.transport.inbound_source(client)
        if not self.accepting_clients:
            reason = RefusalReason.DRAINING, "the gateway is draining; use another"
        elif len(self.clients) >= self.max_clients:
            reason = RefusalReason.FULL, f"the gateway holds its limit of {self.max_clients} clients"
        elif source is not None and not self.admission.admit(source[0], self.monotonic()):
            rate = self.admission.rate_per_s * 60
            reason = RefusalReason.RATE_LIMITED, f"at most {rate:g} client handshakes per minute from one address"
        if reason is not None:
            self._refuse(client, *reason)
            self.drops["client_refused"] += 1
            return False
        self.clients[client] = None
        self.counts["clients_admitted"] += 1
        return True

    def _refuse(self, client: str, reason: RefusalReason, text: str) -> None:
        self.counts[f"clients_refused_{reason.name.lower()}"] += 1
        if len(self.refused_clients) < 4 * self.max_clients:
            self.refused_clients.add(client)  # until its connection ends (see _client_gone)
        try:
            self.transport.send(client, encode_refusal(reason, text))
        except TransportError:
            pass
        loop = self._loop or asyncio.get_running_loop()
        loop.call_later(_REFUSAL_CLOSE_DELAY_S, self._close_client, client, text)

    def _close_client(self, client: str, text: str) -> None:
        self.transport.close_inbound(client, text)
        self.refused_clients.discard(client)

    # -- deliveries: the last hop of a route is this gateway ---------------------------------------

    def _on_deliver(self, event: Deliver) -> None:
        if event.surb_id is None and event.destination == self.node_id:
            if is_drop_cover(event.payload):
                self.counts["cover_dropped"] += 1
                return
            self.exit.receive(event.payload, self.clock())
            sid = event.payload[1 : E.HEADER_BYTES]  # kind u8 | session id: an ACK may end a stream
            if sid in self._streams:
                self._dirty.add(sid)
            self._wakeup.set()
            return
        self._to_client(event.destination, encode_delivery(event))

    def _to_client(self, client: str, datagram: bytes) -> None:
        try:
            if self.transport.send(client, datagram):
                self.counts["client_deliveries"] += 1
            else:
                self.drops["client_queue_full"] += 1
        except TransportError:
            self.drops["client_gone"] += 1
            self.clients.pop(client, None)

    # -- exit: ExitCore's sessions and their streams ------------------------------------------------

    async def _exit_loop(self) -> None:
        try:
            await self._exit_turns()
        finally:
            # Cancelled (the gateway stops): release every stream's waiters now, so the stream
            # tasks the same task group is cancelling can finish (a service closing its stream
            # waits in wait_closed, and nothing else would ever wake it).
            for streams in self._streams.values():
                streams.end_all()

    async def _exit_turns(self) -> None:
        core, wakeup = self.exit, self._wakeup
        while True:
            self._process()
            await wake_or_deadline(wakeup, core.deadline(), self.clock)
            wakeup.clear()
            now = self.clock()
            deadline = core.deadline()
            if deadline is not None and deadline <= now:
                core.on_timer(now)

    def _mark(self, sid: bytes) -> None:
        self._dirty.add(sid)
        self._wakeup.set()

    def _process(self) -> None:
        """Events to streams, writers into sessions, replies out; until nothing moves."""
        core = self.exit
        for _ in range(4):  # a poll can raise events (a session closing) that free more writes
            self._dispatch_events()
            dirty, self._dirty = self._dirty, set()
            for sid in dirty:
                streams = self._streams.get(sid)
                if streams is not None and core.session(sid) is not None:
                    streams.pump_writes()
                    streams.reap()
            replies = core.poll(self.clock())
            for surb, message in replies:
                self._reply(surb, message)
            if not replies and not self._dirty:
                break
        self._dispatch_events()

    def _dispatch_events(self) -> None:
        for sid, event in self.exit.events():
            streams = self._streams.get(sid)
            if streams is None:
                session = self.exit.session(sid)
                if session is None:
                    continue  # the session already left the table; nothing holds streams for it
                streams = self._streams[sid] = SessionStreams(session, functools.partial(self._mark, sid))
            streams.dispatch(event)
            if isinstance(event, StreamOpened):
                reader, writer = streams.accepted.get_nowait()
                self._start_stream(reader, writer)
            elif isinstance(event, SessionClosed):
                streams.end_all()
                del self._streams[sid]

    def _start_stream(self, reader: NyxStreamReader, writer: NyxStreamWriter) -> None:
        if self._tasks is None:
            writer.close()
            return
        self.counts["streams_opened"] += 1
        self._tasks.create_task(self._serve_stream(reader, writer), name=f"{self.node_id}:stream")

    async def _serve_stream(self, reader: NyxStreamReader, writer: NyxStreamWriter) -> None:
        try:
            await self.serve(reader, writer)
        except Exception as exc:  # a service's failure ends its stream, never the gateway
            self.counts["stream_service_errors"] += 1
            log.debug("stream service ended with %r", exc)
        finally:
            writer.close()
            self.counts["streams_ended"] += 1

    def _reply(self, surb_bytes: bytes, message: bytes) -> None:
        try:
            first_hop, packet = create_reply(Surb.from_bytes(surb_bytes, self.packet_format), message,
                                             self.packet_format)
        except MixPacketError:
            self.drops["bad_surb"] += 1
            return
        try:
            if self.transport.send(first_hop, packet):
                self.counts["replies_sent"] += 1
            else:
                self.drops["reply_send_failed"] += 1
        except TransportError as exc:
            self.drops["reply_send_failed"] += 1
            log.debug("reply to %s not sent: %s", first_hop, send_failure_reason(exc))

    # -- telemetry ------------------------------------------------------------------------------------

    def metric_values(self) -> dict[str, float]:
        """Gauges and totals for the registry (names in docs/metrics.md)."""
        exit_drops = self.exit.all_drops()
        handshake_errors = {k: v for k, v in exit_drops.items() if k.startswith("handshake_")}
        failed = sum(handshake_errors.values())
        pq = self.exit.sessions_opened_pq
        return {
            # the suite of a failed handshake is not always known: every failure counts against
            "pq_handshake_success": pq / (pq + failed) if pq + failed else 1.0,
            "api_handshake_errors_total": float(failed),
            "client_version_errors": float(handshake_errors.get("handshake_unsupported_version", 0)
                                           + handshake_errors.get("handshake_unsupported_suite", 0)),
            "gateway_clients": float(len(self.clients)),
            # SCL-038's name (the seed's ingress proxy): client connections this entry holds
            "traefik_active_connections": float(len(self.clients)),
            "gateway_sessions_open": float(len(self.exit)),
            "gateway_sessions_opened_total": float(self.exit.sessions_opened),
            "gateway_streams_open": float(self.counts["streams_opened"] - self.counts["streams_ended"]),
            "gateway_replies_sent_total": float(self.counts["replies_sent"]),
            "gateway_client_deliveries_total": float(self.counts["client_deliveries"]),
            "gateway_client_admitted_total": float(self.admission.admitted),
            "gateway_client_rate_limited_total": float(self.admission.refused),
            "gateway_exit_drops_total": float(sum(exit_drops.values())),
            "gateway_drops_total": float(sum(self.drops.values())),
        }


def build_gateway(
    node_id: str,
    transport: Transport,
    keyring: KeyRing,
    responder: Responder,
    serve: StreamService,
    is_node: Callable[[str], bool],
    *,
    mean_delay_s: float = 0.0,
    replay_capacity: int = 1 << 20,
    session_config: SessionConfig | None = None,
    max_sessions: int = 100_000,
    admission: ClientAdmission | None = None,
    max_clients: int = 100_000,
    clock: Callable[[], float] = time.time,
) -> Gateway:
    """A gateway from its parts, as the program, the testnet and the benchmarks make one.

    `mean_delay_s`: the entry hop's Poisson delay (default none: the mixes behind it delay, and a
    client's first hop adds latency without mixing anyone else's packets in the same batch).
    """
    core = MixCore(keyring, delay=PoissonDelay(mean_delay_s) if mean_delay_s > 0 else None,
                   replay_capacity=replay_capacity)
    node = MixNode(core, transport, install_handler=False, clock=clock, forward_to=is_node)
    exit_core = ExitCore(responder, session_config or SessionConfig(surbs=SurbPolicy()), max_sessions=max_sessions)
    return Gateway(node_id, node, exit_core, serve, is_node=is_node, admission=admission, max_clients=max_clients,
                   clock=clock)
