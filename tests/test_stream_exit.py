"""`nyx.stream.exit.ExitCore`: clients open sessions through it with real handshakes and carry
streams over a simulated channel in the style of tests/test_stream_opening.py: the client's
envelopes reach the exit in order, the exit's answers come back only on SURBs the client created,
each used once, and each is routed to the client that made its SURB."""

from __future__ import annotations

import collections
import functools
import random

import pytest

from nyx.crypto.kem import PrivateKey
from nyx.crypto.suites import Suite
from nyx.stream import envelope as E
from nyx.stream.events import SessionClosed, StreamOpened, StreamReadable
from nyx.stream.exit import LINGER_LOSS_TIMEOUTS, ExitCore
from nyx.stream.handshake import Initiator, Responder
from nyx.stream.opening import FINISH_ID, ClientOpening
from nyx.stream.session import Session, SessionConfig
from nyx.stream.surbs import SURB_BYTES, SurbPolicy

NOW = 1_800_000_000.0
CONFIG = SessionConfig(surbs=SurbPolicy())
SUITES = [Suite.CLASSIC, Suite.HYBRID]


@functools.cache
def static_key(suite: Suite) -> tuple[PrivateKey, bytes]:
    return suite.kem().generate()


class Client:
    """One client: its opening, then its Session; the SURBs it made and which came back."""

    def __init__(self, net: Net, suite: Suite) -> None:
        self.net = net
        self.session_id = E.new_session_id()
        self.created: set[bytes] = set()
        self.opening = ClientOpening(Initiator({suite: static_key(suite)[1]}), self.session_id, self.make_surbs, CONFIG, net.now)
        self.received = bytearray()

    def make_surbs(self, count: int) -> list[bytes]:
        surbs = [self.session_id + self.net.rng.randbytes(SURB_BYTES - E.SESSION_ID_BYTES) for _ in range(count)]
        self.created.update(surbs)
        return surbs

    @property
    def session(self) -> Session:
        assert self.opening.session is not None
        return self.opening.session

    def outgoing(self, now: float) -> list[bytes]:
        """What the client sends this turn: SURBs it owes (in records), its records, resends."""
        out = self.opening.on_timer(now)
        if self.opening.session is None:
            return out
        session = self.session
        if session.closed is None:
            session.send_surbs(self.make_surbs(session.surbs_wanted()))
        while (record := session.next_record(now)) is not None:
            out.append(E.wrap(E.RECORD, self.session_id, record))
        return out


class Net:
    """Clients and one ExitCore; the exit echoes every stream back (the test's 'service')."""

    def __init__(self, suite: Suite = Suite.CLASSIC, seed: int = 0, **core_options: object) -> None:
        self.suite = suite
        self.rng = random.Random(seed)
        self.now = NOW
        self.core = ExitCore(Responder({suite: static_key(suite)[0]}), CONFIG, **core_options)  # type: ignore[arg-type]
        self.clients: dict[bytes, Client] = {}
        self.used: set[bytes] = set()
        self.exit_events: list[tuple[bytes, object]] = []
        self.order: list[bytes] = []  # session id of each reply, in poll order

    def add_client(self) -> Client:
        client = Client(self, self.suite)
        self.clients[client.session_id] = client
        self.to_exit(client.opening.start(self.now))
        return client

    def to_exit(self, messages: list[bytes]) -> None:
        for message in messages:
            self.core.receive(message, self.now)

    def to_clients(self, pairs: list[tuple[bytes, bytes]]) -> list[bytes]:
        forward = []
        for surb, message in pairs:
            env = E.unwrap(message)
            client = self.clients[env.session_id]
            assert surb in client.created and surb not in self.used, "every reply rides a fresh SURB its own client made"
            self.used.add(surb)
            self.order.append(env.session_id)
            if env.kind is E.HANDSHAKE:
                forward += client.opening.receive(message, self.now)
            else:
                client.session.receive_record(env.body, self.now)
        return forward

    def serve(self) -> None:
        """The exit's service: echo every readable stream, finish after the client's FIN."""
        for sid, event in self.core.events():
            self.exit_events.append((sid, event))
            if isinstance(event, StreamReadable):
                session = self.core.session(sid)
                if session is None or not session.has_stream(event.stream_id):
                    continue  # closed, or the stream finished both ways (forgotten)
                data = session.read(event.stream_id)
                if data:
                    assert session.write(event.stream_id, data) == len(data)
                if session.at_eof(event.stream_id) and session.can_finish(event.stream_id):
                    session.finish(event.stream_id)

    def step(self, dt: float = 0.05) -> None:
        self.now += dt
        for client in list(self.clients.values()):
            self.to_exit(client.outgoing(self.now))
        self.serve()
        deadline = self.core.deadline()
        if deadline is not None and deadline <= self.now:
            self.core.on_timer(self.now)
            self.serve()
        self.to_exit(self.to_clients(self.core.poll(self.now)))
        for client in self.clients.values():
            if client.opening.session is not None:
                session = client.session
                for event in session.events():
                    if isinstance(event, StreamReadable) and session.has_stream(event.stream_id):
                        client.received += session.read(event.stream_id)

    def open(self, client: Client) -> None:
        self.to_exit(self.to_clients(self.core.poll(self.now)))
        assert client.opening.session is not None and client.session_id in self.core


def send(net: Net, client: Client, payload: bytes) -> int:
    stream = client.session.open_stream()
    assert client.session.write(stream, payload) == len(payload)
    client.session.finish(stream)
    return stream


@pytest.mark.parametrize("suite", SUITES)
def test_a_client_opens_through_the_core_and_its_stream_comes_back_on_surbs(suite: Suite) -> None:
    net = Net(suite)
    client = net.add_client()
    net.open(client)
    payload = net.rng.randbytes(40_000)  # about 70 reply records: more than the first SURBs
    send(net, client, payload)
    for _ in range(200):
        net.step()
        if bytes(client.received) == payload:
            break
    assert bytes(client.received) == payload
    pool = net.core.session(client.session_id).surb_pool  # type: ignore[union-attr]
    assert pool is not None and pool.received > CONFIG.surbs.initial  # type: ignore[union-attr]  # topped up in-session
    assert any(isinstance(e, StreamOpened) for _, e in net.exit_events)
    assert sum(net.core.all_drops().values()) == 0


def test_two_clients_at_once_never_mix() -> None:
    net = Net(Suite.HYBRID, seed=3)
    alice, bob = net.add_client(), net.add_client()
    net.open(alice)
    net.open(bob)
    payloads = {alice.session_id: b"alice " * 3000, bob.session_id: b"bob! " * 2000}
    for client in (alice, bob):
        send(net, client, payloads[client.session_id])
    for _ in range(200):
        net.step()
        if all(bytes(c.received) == payloads[sid] for sid, c in net.clients.items()):
            break
    for sid, client in net.clients.items():
        assert bytes(client.received) == payloads[sid]  # the channel also checked each SURB's owner
    assert len(net.core) == 2


def test_garbage_and_a_record_for_an_unknown_session_are_counted_drops() -> None:
    net = Net()
    for message in (b"", b"\x02abc", bytes(E.MESSAGE_BYTES + 1), b"\x09" + bytes(7)):
        net.core.receive(message, net.now)
    net.core.receive(E.wrap(E.RECORD, E.new_session_id(), b"sealed?"), net.now)
    drops = net.core.all_drops()
    assert (drops["truncated"], drops["size"], drops["kind"], drops["unknown_session"]) == (2, 1, 1, 1)
    assert len(net.core) == 0 and net.core.poll(net.now) == []


def test_a_late_finish_and_fec_shards_for_an_open_session_are_counted_and_change_nothing() -> None:
    net = Net()
    client = net.add_client()
    answers = net.core.poll(net.now)
    finish = net.to_clients(answers)
    net.to_exit(finish)
    assert client.session_id in net.core
    net.to_exit(finish)
    net.core.receive(E.wrap(E.FEC_SHARD, client.session_id, b"shard"), net.now)
    assert net.core.drops["late_handshake"] == 1 and net.core.drops["fec_unsupported"] == 1
    assert E.parse_fragment(E.unwrap(finish[0]).body).message_id == FINISH_ID
    send(net, client, b"still works")
    for _ in range(40):
        net.step()
    assert bytes(client.received) == b"still works"


def test_a_surb_envelope_for_an_open_session_goes_to_its_pool() -> None:
    net = Net()
    client = net.add_client()
    net.open(client)
    pool = net.core.session(client.session_id).surb_pool  # type: ignore[union-attr]
    before = len(pool)  # type: ignore[arg-type]
    net.to_exit([E.wrap(E.SURB, client.session_id, surb) for surb in client.make_surbs(3)])
    assert len(pool) == before + 3  # type: ignore[arg-type]


def test_a_session_the_client_closes_leaves_the_table() -> None:
    net = Net()
    client = net.add_client()
    net.open(client)
    client.session.close()
    net.step()
    assert client.session_id not in net.core and net.core.session(client.session_id) is None
    closed = [e for sid, e in net.exit_events if isinstance(e, SessionClosed)]
    assert closed and closed[0].by_peer and net.core.sessions_closed == 1
    assert net.core.deadline() == net.core.openings.deadline()  # only the openings' own timer is left


def test_a_session_the_exit_closes_lingers_then_leaves() -> None:
    net = Net()
    client = net.add_client()
    net.open(client)
    net.core.session(client.session_id).close()  # type: ignore[union-attr]
    net.to_clients(net.core.poll(net.now))  # the CLOSE
    exit_session = net.core.session(client.session_id)
    assert client.session.closed is not None and exit_session is not None and exit_session.lingering
    linger_s = LINGER_LOSS_TIMEOUTS * exit_session.loss_timeout_s
    assert net.core.deadline() == min(net.now + linger_s, net.core.openings.deadline())  # type: ignore[type-var]
    net.core.on_timer(net.now + linger_s - 0.01)
    assert client.session_id in net.core
    net.core.on_timer(net.now + linger_s)
    assert client.session_id not in net.core


def test_an_idle_session_times_out_and_leaves() -> None:
    net = Net()
    client = net.add_client()
    net.open(client)
    net.core.on_timer(net.now + CONFIG.idle_timeout_s)
    assert len(net.core) == 0
    assert [type(e) for _, e in net.core.events()][-1] is SessionClosed


def test_deadline_is_the_minimum_of_the_openings_and_the_sessions() -> None:
    net = Net()
    first = net.add_client()
    net.open(first)
    session = net.core.session(first.session_id)
    assert session is not None
    assert net.core.deadline() == min(net.core.openings.deadline(), session.deadline())  # type: ignore[type-var]
    net.core.on_timer(net.now + CONFIG.idle_timeout_s / 2)  # the opening layer forgets the finished Init
    assert net.core.openings.deadline() is None and net.core.deadline() == session.deadline()
    net.now += 10.0
    net.add_client()  # an opening with no answer from its client yet: its timeout is later
    assert net.core.deadline() == min(net.core.openings.deadline(), session.deadline())  # type: ignore[type-var]
    net.core.openings.timeout_s = 1.0  # now the opening's expiry comes first
    assert net.core.deadline() == net.core.openings.deadline() < session.deadline()  # type: ignore[operator]


def test_beyond_max_sessions_new_openings_are_refused_not_live_sessions_evicted() -> None:
    net = Net(max_sessions=1)
    first = net.add_client()
    net.open(first)
    second = net.add_client()
    assert net.core.drops["sessions_full"] > 0  # refused at its first envelope: no key exchange spent
    assert second.session_id not in net.core.openings and net.core.poll(net.now) == []
    assert first.session_id in net.core
    send(net, first, b"still served")
    for _ in range(40):
        net.step()
    assert bytes(first.received) == b"still served"


def test_round_robin_caps_each_session_per_poll() -> None:
    net = Net(replies_per_poll=4)
    busy, quiet = net.add_client(), net.add_client()
    net.open(busy)
    net.open(quiet)
    for client in (busy, quiet):  # fill both pools (SURB envelopes: the out-of-session path)
        net.to_exit([E.wrap(E.SURB, client.session_id, s) for s in client.make_surbs(40)])
    net.core.session(busy.session_id).write(net.core.session(busy.session_id).open_stream(), bytes(20_000))  # type: ignore[union-attr]
    net.core.session(quiet.session_id).write(net.core.session(quiet.session_id).open_stream(), b"hi")  # type: ignore[union-attr]
    net.order.clear()
    net.to_clients(net.core.poll(net.now))
    assert net.order.count(busy.session_id) == 4 and net.order.count(quiet.session_id) == 1
    assert net.order.index(quiet.session_id) < 2  # interleaved, not behind the busy one's burst
    net.order.clear()
    net.to_clients(net.core.poll(net.now))  # the busy one stayed active
    assert net.order.count(busy.session_id) == 4


class _StubOpenings:
    """An opening layer that files prepared sessions (for a table far larger than handshakes allow)."""

    def __init__(self, responder: Responder, config: SessionConfig) -> None:
        self.drops: collections.Counter[str] = collections.Counter()
        self.ready: list[tuple[bytes, Session]] = []

    def __contains__(self, sid: bytes) -> bool:
        return False

    def receive(self, message: bytes, now: float) -> list[tuple[bytes, bytes]]:
        return []

    def sessions_opened(self) -> list[tuple[bytes, Session]]:
        ready, self.ready = self.ready, []
        return ready

    def deadline(self) -> None:
        return None

    def on_timer(self, now: float) -> None:
        pass


def test_deadline_over_10000_idle_sessions_asks_no_session(monkeypatch: pytest.MonkeyPatch) -> None:
    net = Net()
    client = net.add_client()
    net.open(client)
    keys = net.core.session(client.session_id).keys  # type: ignore[union-attr]
    core = ExitCore(Responder({}), CONFIG, openings=_StubOpenings)  # type: ignore[arg-type]
    stub: _StubOpenings = core.openings  # type: ignore[assignment]
    for index in range(10_000):
        stub.ready.append((index.to_bytes(7, "big"), Session(keys, NOW + index * 1e-3, CONFIG)))
    core.receive(E.wrap(E.HANDSHAKE, bytes(7), b""), NOW)  # any message files the opened sessions
    assert len(core) == 10_000 and not core.all_drops()
    asked = 0
    real_deadline = Session.deadline

    def counting(self: Session) -> float | None:
        nonlocal asked
        asked += 1
        return real_deadline(self)

    monkeypatch.setattr(Session, "deadline", counting)
    for _ in range(1000):
        deadline = core.deadline()
    # The heap answers: no call scans the sessions (speed itself belongs in a benchmark).
    assert deadline == NOW + CONFIG.idle_timeout_s and asked == 0
    monkeypatch.setattr(Session, "deadline", real_deadline)
    core.on_timer(NOW + CONFIG.idle_timeout_s + 5.0)  # the first 5,001 idle out, in deadline order
    assert len(core) == 4_999 and core.deadline() == pytest.approx(NOW + CONFIG.idle_timeout_s + 5.001)
