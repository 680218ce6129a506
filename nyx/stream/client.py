"""`nyx.Client`: the embedding API. An application opens streams whose bytes cross the mixnet.

    async with nyx.Client("directory.json") as client:
        reader, writer = await client.open_connection("echo")      # or "example.org:443"
        writer.write(b"hello")
        await writer.drain()
        print(await reader.read(100))
        writer.close()
        await writer.wait_closed()

What one `Client` holds (docs/stream.md, "Embedding the client"):

- **A directory** (`nyx.mix.Directory` or the path of its JSON file): the mixes of every layer,
  the gateways with their Sphinx keys and their static handshake keys (`stream_keys`).
- **One entry gateway** (given, or drawn at random) and one QUIC connection to it. The client
  names itself with a random 96-bit id (16 URL-safe characters); the gateway delivers replies to
  that id, so the id is the only thing that links this client's replies to its connection.
- **Routes.** A message goes `[entry, L1, L2, L3, exit]`: the entry removes the first layer (as a
  Loopix provider), one mix per layer is drawn per packet by weight, and the exit gateway removes
  the last. Replies come back on SURBs routed `[L1, L2, L3, entry]`, delivered to our id.
- **Cover** (`nyx.cover.CoverEmitter`, on by default): packets leave at Poisson times whether or
  not the application writes; a real packet takes the next payload slot, otherwise the slot
  carries drop cover, and loop cover comes back through the layers. So the wire looks the same
  idle or busy, and throughput is the cover rate (`CoverConfig.policy.base_pps`, raised by the
  adaptive controller under sustained load). `cover=None` sends at once: for tests and
  benchmarks that measure the network, never for users who want unobservability.
- **Sessions**: one end-to-end session per exit gateway (`ClientCore`: the hybrid post-quantum
  handshake, then records), opened on the first stream to that exit and reused by later ones.
  Streams have asyncio-streams semantics (`nyx.stream.shell.NyxStreamReader`/`NyxStreamWriter`).
- **A target prelude** on every stream (`nyx.stream.target`): the exit answers OK or why not.

Errors say what failed: `NoRouteError` (the directory cannot make a route, or the entry
gateway cannot be reached), `GatewayRefusedError` (the entry refused us: rate limited, full,
draining), `SessionOpenError` (the exit never answered the handshake, or refused it),
`nyx.stream.target.TargetError` (the exit refused the target: not allowed, refused, unknown
service...), `nyx.stream.shell.StreamClosedError` (a stream was reset or its session ended).
Each carries `connect_failure` (a `nyx.stream.socks.ConnectFailure`) for the SOCKS front.

One task (owned, started by `__aenter__`, cancelled and awaited by `__aexit__`) drives every
session: it sleeps until a session's deadline or a wake-up (a write, a read that opened a
window, a reply), then pumps writes into sessions, builds and sends their packets, and routes
their events to streams. Replies are handled as they arrive, in the transport's handler.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import random
import secrets
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from nyx.cover.client import CoverConfig
from nyx.cover.emitter import CoverEmitter
from nyx.cover.packets import DROP_TAG, LOOP_ID_BYTES, LOOP_TAG, CoverPacket
from nyx.cover.slots import Kind
from nyx.crypto.session import HEADER
from nyx.crypto.suites import DEFAULT_PREFERENCE, Suite
from nyx.directory.paths import select_layers
from nyx.mix.directory import Directory, DirectoryError, NodeRecord, select_route
from nyx.mix.node import decode_delivery
from nyx.mix.packet import DEFAULT_FORMAT, Hop, MixPacketError, PacketFormat, SurbKeys, create_packet, create_surb, open_reply
from nyx.stream.client_core import ClientCore
from nyx.stream.entry_wire import Refusal, RefusalReason, decode_refusal
from nyx.stream import envelope as E
from nyx.stream.events import DeliveryReport, SessionClosed
from nyx.stream.handshake import Initiator
from nyx.stream.handshake.messages import SUPPORTED_VERSIONS
from nyx.stream.shell import NyxStreamReader, NyxStreamWriter, SessionStreams, wake_or_deadline
from nyx.stream.routes import (
    DEFAULT_WIDTH,
    MAX_WIDTH,
    MixEvidence,
    Route,
    RouteBuildError,
    RouteScheduler,
    SurbWatch,
    disjoint_first,
)
from nyx.stream.socks import ConnectFailure
from nyx.stream.session import SessionConfig
from nyx.stream.surbs import SurbPolicy
from nyx.stream.target import Target, request_target
from nyx.telemetry.window import SampleWindow
from nyx.transport.base import Transport, TransportError

__all__ = ["Client", "ClientError", "GatewayRefusedError", "NoRouteError", "SessionOpenError"]

if TYPE_CHECKING:  # aiohttp is imported only by clients that use a directory service
    from nyx.directory.agent import DirectoryClient

log = logging.getLogger(__name__)

CLIENT_ID_CHARS = 16  # a node id on the wire holds 16 ASCII bytes: 96 random bits in URL-safe base64
#: SURB keys kept at most this long (an unused SURB's route has long lost its epoch by then).
SURB_KEEP_S = 3 * 3600.0
MAX_SURB_KEYS = 200_000
BACKLOG_RECHECK_S = 0.01
LOOP_CHECK_S = 1.0  # how often loop-cover suspects are looked at
SILENT_FAILOVERS = 2  # forward routes failed in a row without an ACK: suspect the reply routes


class ClientError(ConnectionError):
    """Base class: the client could not do what was asked; `connect_failure` says why in general."""

    connect_failure = ConnectFailure.OTHER


class NoRouteError(ClientError):
    """No route: the directory lacks a layer, a gateway or keys for the epoch, or the entry
    gateway cannot be reached."""

    connect_failure = ConnectFailure.NO_ROUTE


class GatewayRefusedError(ClientError):
    """The entry gateway refused this client (`reason`: rate limited, full, draining)."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(f"the entry gateway refused this client ({refusal.reason.name.lower()}): {refusal.text}")
        self.refusal = refusal
        self.connect_failure = (
            ConnectFailure.RATE_LIMITED if refusal.reason is RefusalReason.RATE_LIMITED else ConnectFailure.NO_ROUTE
        )


class SessionOpenError(ClientError):
    """The exit gateway never completed the handshake (no answer after every retry, or it refused)."""

    connect_failure = ConnectFailure.TIMEOUT


def _record_pn(envelope: bytes) -> int | None:
    """The packet number of a RECORD envelope (None for handshake fragments and SURBs)."""
    if len(envelope) < E.HEADER_BYTES + HEADER.size or envelope[0] != E.Kind.RECORD:
        return None
    return HEADER.unpack_from(envelope, E.HEADER_BYTES)[1]


class _ClientSession:
    """One session to one exit: its core, and its streams once the exit accepted."""

    __slots__ = ("exit_id", "core", "streams", "opened", "routes", "reply_routes", "surb_watch", "surb_seq",
)

    def __init__(self, exit_id: str, core: ClientCore, opened: asyncio.Future[None]) -> None:
        self.exit_id = exit_id
        self.core = core
        self.streams: SessionStreams | None = None
        self.opened = opened
        self.routes: RouteScheduler | None = None  # forward routes [L1..Ln] to the exit
        self.reply_routes: RouteScheduler | None = None  # the routes of the SURBs we hand the exit
        self.surb_watch = SurbWatch()  # loss on reply routes: SURBs overtaken by later ones
        self.surb_seq = 0

    @property
    def usable(self) -> bool:
        session = self.core.session
        return self.core.failed is None and (session is None or session.closed is None)


class Client:
    """A mixnet client (async context manager); see the module docstring."""

    def __init__(
        self,
        directory: Directory | Path | str,
        *,
        gateway: str | None = None,
        exit: str | None = None,
        transport: Transport | Callable[[str], Transport] | None = None,
        cover: CoverConfig | None = CoverConfig(),
        session_config: SessionConfig | None = None,
        suites: tuple[Suite, ...] = DEFAULT_PREFERENCE,
        versions: Sequence[int] = SUPPORTED_VERSIONS,
        client_id: str | None = None,
        connect_timeout_s: float = 10.0,
        resend_s: float = 2.0,
        max_tries: int = 5,
        packet_format: PacketFormat = DEFAULT_FORMAT,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
        directory_service: DirectoryClient | None = None,
        directory_refresh_s: float = 10.0,
        routes: int = DEFAULT_WIDTH,
        low_latency: bool = False,
    ) -> None:
        """`gateway`: the entry (default: drawn among the directory's gateways). `exit`: the
        default exit for streams (default: drawn among gateways other than the entry when there
        is one). `transport`: a Transport, or a factory called with the client id (default: QUIC
        on an ephemeral UDP port with a fresh certificate; the backend is qh3 when installed).
        `directory_service`: a `nyx.directory.DirectoryClient` (entered by the caller) from which
        the client takes each newer verified document every `directory_refresh_s`; see
        `Client.from_directory_service`. `routes`: how many disjoint routes each session spreads
        its records over (1..8; 1 is a single route, replaced when it fails), and as many reply
        routes for its SURBs (nyx.stream.routes, docs/stream.md "Multipath"). `low_latency`: keep
        routes inside the entry gateway's region while that region has a usable mix in every
        layer (cross-region links cost tens of milliseconds per hop), else use any region; this
        narrows the set of mixes a route can take, which is the anonymity it costs."""
        self.directory = directory if isinstance(directory, Directory) else Directory.load(Path(directory))
        self.directory_service = directory_service
        self.directory_refresh_s = directory_refresh_s
        if not 1 <= routes <= MAX_WIDTH:
            raise ValueError(f"routes: 1..{MAX_WIDTH}, got {routes}")
        self.route_width = routes
        self._loop_suspects: set[str] = set()
        self._loop_check_at = 0.0
        self.rng = rng or random.SystemRandom()
        self.client_id = client_id or secrets.token_urlsafe(12)
        if len(self.client_id) != CLIENT_ID_CHARS and client_id is None:
            raise AssertionError("token_urlsafe(12) is 16 characters")
        gateways = [g for g in self.directory.gateways() if g.sphinx_keys]
        if not gateways:
            raise NoRouteError("the directory lists no gateway with Sphinx keys")
        if gateway is None:
            entry = self.rng.choice(gateways)
        elif (entry := self.directory.nodes.get(gateway)) is None or entry.role != "gateway":
            raise NoRouteError(f"gateway {gateway!r} is not a gateway in the directory")
        self.entry: NodeRecord = entry
        self.home_region = entry.region if low_latency else None
        self.mix_evidence = MixEvidence()  # what every route of every session showed about each mix
        self.default_exit = exit
        self._transport_arg = transport
        self.cover_config = cover
        self.session_config = session_config or SessionConfig(surbs=SurbPolicy())
        if self.session_config.surbs is None:
            raise ValueError("session_config needs a SurbPolicy: exits answer on SURBs only")
        self.suites = suites
        self.versions = tuple(versions)  # protocol versions offered, preferred first
        self.connect_timeout_s = connect_timeout_s
        self.resend_s, self.max_tries = resend_s, max_tries
        self.packet_format = packet_format
        self.clock = clock
        self.transport: Transport | None = None
        self.emitter: CoverEmitter | None = None
        self.refusal: Refusal | None = None
        self.drops: collections.Counter[str] = collections.Counter()
        self.packets_sent = 0
        self.sessions_attempted = 0
        self.sessions_opened = 0
        self.directory_updates = 0
        self.records_resent = 0  # records given up on a failed route and resent at once
        self.cross_region_rtt = SampleWindow(1024)  # record -> ACK on routes that cross regions
        self._crossing: dict[tuple[tuple[str, ...], str | None], bool] = {}
        self.queue_wait = SampleWindow(1024)  # write() to taken by the session, per write
        self._sessions: dict[str, _ClientSession] = {}
        self._backlog: collections.deque[tuple[str, bytes]] = collections.deque()
        # surb id -> (issued at, keys, session, the session's SURB sequence number)
        self._surb_keys: collections.OrderedDict[bytes, tuple[float, SurbKeys, _ClientSession, int]] = (
            collections.OrderedDict())
        self._wakeup = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._started: asyncio.Future[None] | None = None

    @classmethod
    async def from_directory_service(cls, service: DirectoryClient, **kwargs: Any) -> Client:
        """A client whose directory is the verified document `service` fetches (k of n authority
        signatures, validity, no rollback: nyx.directory.document), refreshed while it runs.
        Routes are drawn from the whole document, never from lookups (docs/directory.md)."""
        if service.holder.current is None:
            await service.refresh()
        body = service.holder.current
        assert body is not None  # refresh raises DirectoryUnavailable otherwise
        return cls(body.directory(), directory_service=service, **kwargs)

    async def _follow_directory(self) -> None:
        """Until cancelled: adopt each newer verified document. The entry stays (its connection
        is the client's identity to the network); routes and exits come from the new document."""
        assert self.directory_service is not None
        while True:
            await asyncio.sleep(self.directory_refresh_s)
            try:
                body = await self.directory_service.refresh()
            except DirectoryError as exc:
                log.warning("directory refresh failed, keeping epoch %s: %s", self.directory_service.holder.epoch, exc)
                continue
            if body is not None:
                self.update_directory(body.directory())

    def route_schedulers(self) -> list[tuple[str, RouteScheduler, RouteScheduler]]:
        """(exit id, forward routes, reply routes) of every session: for measurements and
        operators (failovers_s, reconfigurations_s, the routes in use). Read-only use."""
        return [(exit_id, s.routes, s.reply_routes) for exit_id, s in self._sessions.items()
                if s.routes is not None and s.reply_routes is not None]

    def update_directory(self, directory: Directory) -> None:
        """Adopt a newer directory (the refresh task calls this for each verified document; an
        application with its own source of directories may too). Routes through mixes it no
        longer lists (a draining mix leaves the directory before it stops) are replaced at once,
        their records in flight resent on the others."""
        self.directory = directory
        self.directory_updates += 1
        self._crossing.clear()  # regions come from the directory
        self._on_directory()

    def _on_directory(self) -> None:
        now, listed = self.clock(), self.directory.nodes.keys()
        for session in self._sessions.values():
            for scheduler in (session.routes, session.reply_routes):
                if scheduler is not None and scheduler.on_directory(listed, now):
                    self._resend_orphans(session, now)
        self._wakeup.set()

    # -- lifecycle ----------------------------------------------------------------------------------

    async def __aenter__(self) -> Client:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Connect to the entry gateway and start the driving task (and cover)."""
        transport = self._make_transport()
        self.transport = transport
        transport.set_handler(self._on_datagram)
        await transport.listen()
        transport.add_peer(self.entry.node_id, self.entry.address())
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                await transport.connect(self.entry.node_id)
        except (TimeoutError, ConnectionError, TransportError) as exc:
            await transport.close()
            raise NoRouteError(f"cannot reach the entry gateway {self.entry.node_id}: {exc!r}") from exc
        if self.cover_config is not None:
            self.emitter = CoverEmitter(transport, self._cover_packet, self.cover_config, rng=self.rng)
        self._started = asyncio.get_running_loop().create_future()
        self._runner = asyncio.create_task(self._run(), name=f"client {self.client_id[:4]}")
        await self._started

    def _make_transport(self) -> Transport:
        arg = self._transport_arg
        if isinstance(arg, Transport):
            return arg
        if arg is not None:
            return arg(self.client_id)
        from nyx.node.config import resolve_backend
        from nyx.transport.certs import NodeIdentity
        from nyx.transport.quic import QuicSettings, QuicTransport

        host = "127.0.0.1" if self.entry.host in ("127.0.0.1", "localhost") else "0.0.0.0"
        settings = QuicSettings(host=host, port=0, backend=resolve_backend("auto"))
        return QuicTransport(self.client_id, NodeIdentity.generate(self.client_id), settings)

    async def _run(self) -> None:
        assert self._started is not None
        try:
            async with asyncio.TaskGroup() as tg:
                if self.emitter is not None:
                    tg.create_task(self.emitter.run(), name="client cover")
                tg.create_task(self._drive(), name="client sessions")
                if self.directory_service is not None:
                    tg.create_task(self._follow_directory(), name="client directory")
                self._started.set_result(None)
        finally:
            if not self._started.done():
                self._started.set_result(None)

    async def close(self) -> None:
        """Close every session (CLOSE sent when it can be), stop the task and the transport.

        A cancellation of the caller while closing propagates (it is never swallowed with the
        driver's own), and the transport is closed whatever happens."""
        try:
            for session in self._sessions.values():
                if session.core.session is not None and session.core.session.closed is None:
                    session.core.session.close()
            if self._sessions and self._runner is not None and not self._runner.done():
                self._wakeup.set()
                await asyncio.sleep(0.05)  # one turn of the driver: the CLOSEs take their slots
        finally:
            try:
                if self._runner is not None:
                    self._runner.cancel()
                    await asyncio.wait([self._runner])  # never raises the runner's cancellation as ours
                    self._runner = None
            finally:
                for session in self._sessions.values():
                    if session.streams is not None:
                        session.streams.end_all()
                    if not session.opened.done():
                        session.opened.set_exception(ClientError("the client closed"))
                        session.opened.exception()  # retrieved: nobody may be waiting
                if self.transport is not None:
                    await self.transport.close()

    # -- streams ------------------------------------------------------------------------------------

    async def open_connection(
        self, target: str | Target, *, exit: str | None = None
    ) -> tuple[NyxStreamReader, NyxStreamWriter]:
        """A stream to `target` (a service name like "echo", or "host:port" on the exit's
        allowlist) through `exit` (default: the client's). Raises a `ClientError`, or
        `TargetError` when the exit refuses the target."""
        parsed = target if isinstance(target, Target) else Target.parse(target)
        session = await self._session_to(exit or self.choose_exit())
        assert session.streams is not None
        reader, writer = session.streams.open()
        self._wakeup.set()
        await request_target(reader, writer, parsed)
        return reader, writer

    def choose_exit(self) -> str:
        """The default exit (drawn once, among gateways other than the entry when possible)."""
        if self.default_exit is None:
            exits = [g for g in self.directory.gateways() if g.stream_keys and g.sphinx_keys]
            others = [g for g in exits if g.node_id != self.entry.node_id]
            if not exits:
                raise NoRouteError("the directory lists no exit gateway with stream keys")
            self.default_exit = self.rng.choice(others or exits).node_id
        return self.default_exit

    async def _session_to(self, exit_id: str) -> _ClientSession:
        if self._runner is None:
            raise ClientError("the client is not started: use `async with Client(...)` or `await start()`")
        if self.refusal is not None:
            raise GatewayRefusedError(self.refusal)
        session = self._sessions.get(exit_id)
        if session is None or not session.usable:
            session = self._open_session(exit_id)
        await asyncio.shield(session.opened)
        return session

    def _open_session(self, exit_id: str) -> _ClientSession:
        record = self.directory.nodes.get(exit_id)
        if record is None or record.role != "gateway":
            raise NoRouteError(f"exit {exit_id!r} is not a gateway in the directory")
        keys = {}
        for suite in self.suites:
            key = record.stream_keys.get(suite.label)
            if key is not None:
                keys[suite] = key
        if not keys:
            raise NoRouteError(f"exit {exit_id} publishes no handshake key for suites {[s.label for s in self.suites]}")
        opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        holder: list[_ClientSession] = []
        now = self.clock()
        forward = RouteScheduler(self._route_builder(exit_id), now, width=self.route_width, evidence=self.mix_evidence)
        replies = RouteScheduler(self._route_builder(None), now, width=self.route_width, evidence=self.mix_evidence)
        core = ClientCore(
            Initiator(keys, preference=[s for s in self.suites if s in keys], versions=self.versions),
            dataclasses.replace(self.session_config, report_deliveries=True),
            lambda n: self._make_surbs(holder[0], n),
            self.clock(),
            resend_s=self.resend_s,
            max_tries=self.max_tries,
        )
        session = _ClientSession(exit_id, core, opened)
        session.routes, session.reply_routes = forward, replies
        self.sessions_attempted += 1
        holder.append(session)
        self._sessions[exit_id] = session
        self._send_envelopes(session, core.start(self.clock()))
        self._wakeup.set()
        return session

    # -- packets ------------------------------------------------------------------------------------

    def _epoch(self, *nodes: NodeRecord) -> int:
        """The epoch to build for: the oldest one every gateway on the path publishes a key for
        (mixes publish the current and the next; the current is the one every node accepts)."""
        common = set.intersection(*(set(n.sphinx_keys) for n in nodes))
        if not common:
            raise NoRouteError("the gateways on this path publish no Sphinx key for a common epoch")
        return min(common)

    def _forward_route(self, epoch: int, exit_id: str) -> list[Hop]:
        return [self.entry.hop(epoch), *select_route(self.directory, epoch, exit_node=exit_id, rng=self.rng)]

    def _route_builder(self, exit_id: str | None) -> Callable[[frozenset[str], frozenset[str]], tuple[str, ...]]:
        """Builds the mixes of one route (one per layer) from the whole directory: never through
        `avoid`, disjoint from `spread` where it can be; for a forward route to `exit_id`, or a
        reply route back to the entry (None). A low-latency client gives up disjointness before it
        leaves its home region, and leaves it only when the region cannot serve a route."""

        def pick(avoid: frozenset[str]) -> tuple[str, ...]:
            try:
                ends = [self.entry] + ([self.directory.nodes[exit_id]] if exit_id is not None else [])
                epoch = self._epoch(*ends)
                chosen = select_layers(self.directory, epoch, self.rng, avoid=avoid)
            except (DirectoryError, NoRouteError, KeyError) as exc:
                raise RouteBuildError(str(exc)) from exc
            return tuple(r.node_id for r in chosen)

        def build(avoid: frozenset[str], spread: frozenset[str]) -> tuple[str, ...]:
            if self.home_region is not None:
                abroad = frozenset(n for n, r in self.directory.nodes.items()
                                   if r.role == "mix" and r.region != self.home_region)
                for within in (avoid | spread | abroad, avoid | abroad):
                    try:
                        return pick(within)
                    except RouteBuildError:
                        pass  # the home region cannot serve this route: leave it
            return disjoint_first(pick)(avoid, spread)

        return build

    def _hops(self, scheduler: RouteScheduler, epoch: int, now: float) -> tuple[Route, list[Hop]] | None:
        """A route from `scheduler` whose mixes all publish a key for `epoch` (a route through a
        mix that left the directory, or lost its key, is suspected and another taken)."""
        for _ in range(MAX_WIDTH + 1):
            route = scheduler.pick(now)
            if route is None:
                return None
            try:
                return route, [self.directory.nodes[m].hop(epoch) for m in route.mixes]
            except (KeyError, DirectoryError):
                missing = next((m for m in route.mixes if epoch not in getattr(self.directory.nodes.get(m), "sphinx_keys", {})),
                               route.mixes[0])
                scheduler.suspect_node(missing, now, f"no key for epoch {epoch}")
                scheduler.maintain(now)
        return None

    def _send_envelopes(self, session: _ClientSession, envelopes: list[bytes]) -> None:
        if not envelopes:
            return
        exit_record = self.directory.nodes.get(session.exit_id)
        now = self.clock()
        try:
            if exit_record is None:
                raise DirectoryError(f"exit {session.exit_id} left the directory")
            epoch = self._epoch(self.entry, exit_record)
            for envelope in envelopes:
                picked = self._hops(session.routes, epoch, now) if session.routes is not None else None
                if picked is None:
                    hops = self._forward_route(epoch, session.exit_id)
                else:
                    hops = [self.entry.hop(epoch), *picked[1], exit_record.hop(epoch)]
                first, packet = create_packet(hops, session.exit_id, envelope, epoch, self.packet_format)
                if picked is not None:
                    assert session.routes is not None
                    session.routes.on_sent(picked[0], _record_pn(envelope), now)
                self._send_packet(first, packet)
        except (DirectoryError, MixPacketError) as exc:
            self.drops["no_route"] += len(envelopes)
            log.warning("cannot build a route: %s", exc)

    def _send_packet(self, first_hop: str, packet: bytes) -> None:
        """A real packet: into the next payload slot (cover on), or out now (cover off). With
        cover, packets the slot queue has no room for wait in `_backlog` (never dropped): the
        driver offers them as slots free and polls no session while any wait, so records are
        made no faster than the cover rate sends them."""
        if self.emitter is not None:
            self._backlog.append((first_hop, packet))
            self._offer_backlog()
            return
        assert self.transport is not None
        try:
            if self.transport.send(first_hop, packet):
                self.packets_sent += 1
            else:
                self.drops["queue_full"] += 1
        except TransportError:
            self.drops["transport"] += 1

    def _offer_backlog(self) -> bool:
        """Move waiting packets into free payload slots; True when none is left waiting."""
        emitter, backlog = self.emitter, self._backlog
        if emitter is None or emitter.core is None:
            return not backlog
        now = asyncio.get_running_loop().time()
        while backlog and emitter.core.offer(backlog[0], now):
            backlog.popleft()
            self.packets_sent += 1
        return not backlog

    def _make_surbs(self, session: _ClientSession, count: int) -> list[bytes]:
        """`count` SURBs routed [L1, L2, L3, entry] to this client; their keys filed by id."""
        out: list[bytes] = []
        now = self.clock()
        try:
            epoch = self._epoch(self.entry)
            for _ in range(count):
                picked = self._hops(session.reply_routes, epoch, now) if session.reply_routes is not None else None
                layers = select_route(self.directory, epoch, rng=self.rng) if picked is None else picked[1]
                seq = session.surb_seq
                session.surb_seq += 1
                if picked is not None:
                    assert session.reply_routes is not None
                    session.reply_routes.on_sent(picked[0], seq, now)
                    session.surb_watch.issued(seq)
                route = [*layers, self.entry.hop(epoch)]
                surb, keys = create_surb(route, self.client_id, epoch, fmt=self.packet_format)
                self._surb_keys[keys.surb_id] = (now, keys, session, seq)
                out.append(surb.to_bytes())
        except (DirectoryError, MixPacketError) as exc:
            self.drops["surb_route"] += 1
            log.warning("cannot build a SURB: %s", exc)
        self._prune_surbs(now)
        return out

    def _prune_surbs(self, now: float) -> None:
        keys = self._surb_keys
        while keys and (len(keys) > MAX_SURB_KEYS or next(iter(keys.values()))[0] < now - SURB_KEEP_S):
            keys.popitem(last=False)

    def _cover_packet(self, kind: Kind) -> CoverPacket:
        """Cover on the same route shapes as real packets: loops [entry, L1, L2, L3, entry] back
        to us, fills and drops [entry, L1, L2, L3, gateway] to a gateway that discards them."""
        epoch = self._epoch(self.entry)
        layers = select_route(self.directory, epoch, rng=self.rng)
        if kind is Kind.LOOP:
            loop_id = secrets.token_bytes(LOOP_ID_BYTES)
            route = [self.entry.hop(epoch), *layers, self.entry.hop(epoch)]
            first, packet = create_packet(route, self.client_id, LOOP_TAG + loop_id, epoch, self.packet_format)
            return CoverPacket(first, packet, loop_id, tuple(h.node_id for h in route))
        sinks = [g for g in self.directory.gateways() if epoch in g.sphinx_keys]
        sink = self.rng.choice(sinks)
        route = [self.entry.hop(epoch), *layers, sink.hop(epoch)]
        first, packet = create_packet(route, sink.node_id, DROP_TAG + secrets.token_bytes(LOOP_ID_BYTES), epoch,
                                      self.packet_format)
        return CoverPacket(first, packet)

    # -- receiving ----------------------------------------------------------------------------------

    def _on_datagram(self, peer: str, data: bytes) -> None:
        if peer != self.entry.node_id:
            self.drops["not_from_entry"] += 1
            return
        if len(data) >= self.packet_format.packet_bytes:
            # Deliveries and refusals are shorter than a packet; a whole packet here is one a
            # peer routed to us as a "next hop" through our gateway. Never read it as a refusal.
            self.drops["not_a_delivery"] += 1
            return
        refusal = decode_refusal(data)
        if refusal is not None:
            self._refused(refusal)
            return
        try:
            surb_id, payload = decode_delivery(data)
        except ValueError:
            self.drops["not_a_delivery"] += 1
            return
        if surb_id is None:
            if self.emitter is None or not self.emitter.on_delivery(payload):
                self.drops["unexpected_message"] += 1
            return
        filed = self._surb_keys.pop(surb_id, None)
        if filed is None:
            self.drops["unknown_surb"] += 1  # spent already (a replay) or never ours
            return
        issued_at, keys, session, seq = filed
        try:
            message = open_reply(keys, payload, self.packet_format)
        except MixPacketError:
            self.drops["reply_tampered"] += 1
            return
        now = self.clock()
        session.core.receive(message, now)
        self._reply_came_back(session, seq, now - issued_at, now)
        self._wakeup.set()

    def _reply_came_back(self, session: _ClientSession, seq: int, age_s: float, now: float) -> None:
        """A reply on SURB `seq`: its route delivered; SURBs it overtook by far were lost."""
        replies = session.reply_routes
        if replies is None:
            return
        replies.on_acked(seq, age_s, now)
        if replies.width < 2:
            return  # one reply route: a SURB lost on the way to the exit looks the same (see _delivery)
        lost = session.surb_watch.returned(seq)
        for earlier in lost:
            replies.on_lost(earlier, now)
        if lost and replies.take_orphans():  # a reply route was suspected: its unspent SURBs are
            replies.maintain(now)             # likely dead too; the exit asks for more as it runs low

    def _refused(self, refusal: Refusal) -> None:
        self.refusal = refusal
        log.warning("entry gateway %s refused this client: %s", self.entry.node_id, refusal.text)
        for session in self._sessions.values():
            if not session.opened.done():
                session.opened.set_exception(GatewayRefusedError(refusal))

    # -- the driver ---------------------------------------------------------------------------------

    async def _drive(self) -> None:
        wakeup = self._wakeup
        while True:
            wakeup.clear()
            await wake_or_deadline(wakeup, self._pump(), self.clock)

    def _pump(self) -> float | None:
        """One pass over every session; returns the earliest deadline."""
        now = self.clock()
        earliest: float | None = None
        room = self._offer_backlog()
        if not room:
            earliest = now + BACKLOG_RECHECK_S  # slots free at the cover rate: look again soon
        self._check_loops(now)
        for exit_id, session in list(self._sessions.items()):
            core = session.core
            due = core.deadline()
            if due is not None and due <= now:
                core.on_timer(now)
            if session.streams is not None:
                session.streams.pump_writes()
            if room:
                self._send_envelopes(session, core.poll(now))
                room = self._offer_backlog()
            self._events(session)
            if session.streams is not None:
                session.streams.reap()
            due = core.deadline()
            if due is not None:
                earliest = due if earliest is None else min(earliest, due)
            if self._backlog:  # this pass filled the slot queue: offer the rest as slots free
                recheck = now + BACKLOG_RECHECK_S
                earliest = recheck if earliest is None else min(earliest, recheck)
            if not session.usable and session.opened.done() and self._sessions.get(exit_id) is session:
                if session.core.session is None or not session.core.session.lingering:
                    del self._sessions[exit_id]
        return earliest

    def _events(self, session: _ClientSession) -> None:
        core = session.core
        if session.streams is None and core.session is not None:
            self._opened(session)  # before its events: they are for these streams
        for event in core.events():
            if isinstance(event, DeliveryReport):
                self._delivery(session, event)
                continue
            if session.streams is not None:
                session.streams.dispatch(event)
            if isinstance(event, SessionClosed) and not session.opened.done():
                session.opened.set_exception(SessionOpenError(
                    f"the exit {session.exit_id} did not open a session: {event.reason or 'no answer'}"
                ))

    def _delivery(self, session: _ClientSession, report: DeliveryReport) -> None:
        routes = session.routes
        if routes is None:
            return
        now = self.clock()
        exit_region = getattr(self.directory.nodes.get(session.exit_id), "region", None)
        for pn, rtt_s in report.acked:
            route = routes.on_acked(pn, rtt_s, now)
            if route is not None and self._crosses_regions(route, exit_region):
                self.cross_region_rtt.record(rtt_s)
        for pn in report.lost:
            routes.on_lost(pn, now)
        self._resend_orphans(session, now)

    def _crosses_regions(self, route: Route, exit_region: str | None) -> bool:
        """Whether the route's hops lie in more than one region (asked per ACK: remembered per
        route and exit region, which never change)."""
        key = (route.mixes, exit_region)
        crosses = self._crossing.get(key)
        if crosses is None:
            nodes = self.directory.nodes
            regions = {self.entry.region, exit_region, *(getattr(nodes.get(m), "region", None) for m in route.mixes)}
            regions.discard(None)
            crosses = self._crossing[key] = len(regions) > 1
            if len(self._crossing) > 4096:
                self._crossing.clear()
        return crosses

    def _check_reply_path(self, session: _ClientSession, now: float) -> None:
        """Route after route given up and no ACK on any: what they share is the way back. The
        reply routes are replaced too (with one reply route nothing else can tell)."""
        routes, replies = session.routes, session.reply_routes
        if routes is None or replies is None or routes.silent_suspicions < SILENT_FAILOVERS:
            return
        routes.silent_suspicions = 0
        for route in replies.active():
            replies.suspect_route(route, now, "no ACK through any forward route")
        replies.take_orphans()
        replies.maintain(now)

    def _resend_orphans(self, session: _ClientSession, now: float) -> None:
        """Records in flight on routes just suspected go again now, on the routes that remain.
        (A suspected reply route's orphans are SURBs, not records: nothing to resend.)"""
        if session.routes is not None:
            session.routes.maintain(now)  # first: routes whose grace ran out are suspected here
            orphans = session.routes.take_orphans()
            if orphans and session.core.session is not None:
                self.records_resent += session.core.session.resend_now(orphans, now)
            session.routes.maintain(now)
            self._check_reply_path(session, now)
        if session.reply_routes is not None:
            session.reply_routes.take_orphans()
            session.reply_routes.maintain(now)
        self._wakeup.set()

    def _check_loops(self, now: float) -> None:
        """Mixes our loop cover names as failing (nyx.cover LoopTracker.suspects) leave our routes."""
        if self.emitter is None or now < self._loop_check_at:
            return
        self._loop_check_at = now + LOOP_CHECK_S
        for node in self.emitter.loops.suspects().keys() - self._loop_suspects:
            self._loop_suspects.add(node)
            log.info("loop cover names %s as failing: routes through it are replaced", node)
            for session in self._sessions.values():
                for scheduler in (session.routes, session.reply_routes):
                    if scheduler is not None:
                        scheduler.suspect_node(node, now, "loop cover lost through it")
                self._resend_orphans(session, now)

    def _opened(self, session: _ClientSession) -> None:
        assert session.core.session is not None
        session.streams = SessionStreams(session.core.session, self._wakeup.set, queue_wait=self.queue_wait)
        self.sessions_opened += 1
        if not session.opened.done():
            session.opened.set_result(None)

    # -- telemetry ----------------------------------------------------------------------------------

    def metric_values(self) -> dict[str, float]:
        """The client's SLIs (docs/metrics.md) and counters, for an application's registry.

        `stream_latency_p95`: the 95th percentile of the round trip of a record and its ACK over
        every open session (one-way delay cannot be measured without shared clocks);
        `stream_queue_latency`: p95 of the time written bytes waited for their session;
        `sdk_session_success`: sessions opened / sessions attempted."""
        rtts = [q for s in self._sessions.values() if s.core.session is not None
                and (q := s.core.session.rtt.quantile_of(0.95)) is not None]
        values = {
            "sdk_session_success": self.sessions_opened / self.sessions_attempted if self.sessions_attempted else 1.0,
            "stream_queue_latency": self.queue_wait.quantile(0.95) if self.queue_wait.count else 0.0,
            "client_sessions_open": float(sum(1 for s in self._sessions.values() if s.core.session is not None)),
            "client_packets_sent_total": float(self.packets_sent),
            "client_drops_total": float(sum(self.drops.values())),
            "client_surbs_outstanding": float(len(self._surb_keys)),
            "client_packets_waiting": float(len(self._backlog)),
        }
        if rtts:
            values["stream_latency_p95"] = max(rtts)
        # Exported once a route has failed over (a gauge of the last event, absent before one).
        failovers = [f for s in self._sessions.values() if s.routes is not None for f in s.routes.failovers_s[-1:]]
        if failovers:
            values["mix_failover_duration"] = max(failovers)
        reconfigurations = [f for s in self._sessions.values() if s.routes is not None
                            for f in s.routes.reconfigurations_s[-1:]]
        if reconfigurations:
            values["route_update_latency"] = max(reconfigurations)
        if self.cross_region_rtt.count:
            values["latency_cross_region"] = self.cross_region_rtt.quantile(0.5)

        if self.emitter is not None:
            values.update(self.emitter.metric_values())
        return values
