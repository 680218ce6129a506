"""`nyx.stream.client_core.ClientCore` against a real `ExitCore`, with real handshakes, over an
in-test channel that delays every message by a random time (so it reorders them) and loses some.
The exit echoes every stream (the test is its service); replies travel only on SURBs the client
made, each used once, and each SURB goes back to the ClientCore that made it."""

from __future__ import annotations

import functools
import heapq
import random

import pytest

from nyx.crypto.kem import PrivateKey
from nyx.crypto.suites import Suite
from nyx.stream import envelope as E
from nyx.stream.client_core import ClientCore
from nyx.stream.events import SessionClosed, StreamReadable
from nyx.stream.exit import ExitCore
from nyx.stream.handshake import Initiator, Responder
from nyx.stream.handshake.errors import CloseCode
from nyx.stream.surbs import SURB_BYTES, SurbPolicy
from nyx.stream.session import SessionConfig

NOW = 1_800_000_000.0
CONFIG = SessionConfig(surbs=SurbPolicy())
STEP_S = 0.05


@functools.cache
def static_key(suite: Suite) -> tuple[PrivateKey, bytes]:
    return suite.kem().generate()


class Net:
    """ClientCores and one ExitCore over a shuffling, lossy channel; the exit echoes every stream."""

    def __init__(self, suite: Suite = Suite.CLASSIC, seed: int = 0, loss: float = 0.0) -> None:
        self.suite = suite
        self.rng = random.Random(seed)
        self.loss = loss
        self.now = NOW
        self.exit = ExitCore(Responder({suite: static_key(suite)[0]}), CONFIG)
        self.clients: list[ClientCore] = []
        self.owner: dict[bytes, ClientCore] = {}  # SURB -> the core that made it
        self.used: set[bytes] = set()
        self.received: dict[int, bytearray] = {}  # id(core) -> the echoed bytes it read
        self._in_flight: list[tuple[float, int, str, bytes, ClientCore | None]] = []
        self._seq = 0

    def add_client(self, **options: object) -> ClientCore:
        made: list[ClientCore] = []

        def make_surbs(count: int) -> list[bytes]:
            surbs = [self.rng.randbytes(SURB_BYTES) for _ in range(count)]
            for surb in surbs:
                self.owner[surb] = made[0]
            return surbs

        core = ClientCore(Initiator({self.suite: static_key(self.suite)[1]}), CONFIG, make_surbs, self.now, **options)  # type: ignore[arg-type]
        made.append(core)
        self.clients.append(core)
        self.received[id(core)] = bytearray()
        self.forward(core.start(self.now))
        return core

    def _send(self, direction: str, message: bytes, core: ClientCore | None) -> None:
        if self.rng.random() < self.loss:
            return
        self._seq += 1
        due = self.now + self.rng.uniform(0.02, 0.4)  # random delays: arrivals are shuffled
        heapq.heappush(self._in_flight, (due, self._seq, direction, message, core))

    def forward(self, envelopes: list[bytes]) -> None:
        for envelope in envelopes:
            self._send("exit", envelope, None)

    def _deliver(self) -> None:
        while self._in_flight and self._in_flight[0][0] <= self.now:
            _, _, direction, message, core = heapq.heappop(self._in_flight)
            if core is None:
                self.exit.receive(message, self.now)
            else:
                core.receive(message, self.now)

    def _serve(self) -> None:
        for sid, event in self.exit.events():
            if isinstance(event, StreamReadable):
                session = self.exit.session(sid)
                if session is None or not session.has_stream(event.stream_id):
                    continue
                data = session.read(event.stream_id)
                if data:
                    assert session.write(event.stream_id, data) == len(data)
                if session.at_eof(event.stream_id) and session.can_finish(event.stream_id):
                    session.finish(event.stream_id)

    def step(self) -> None:
        self.now += STEP_S
        self._deliver()
        deadline = self.exit.deadline()
        if deadline is not None and deadline <= self.now:
            self.exit.on_timer(self.now)
        self._serve()
        for surb, message in self.exit.poll(self.now):
            core = self.owner[surb]
            assert surb not in self.used, "a SURB is used once"
            assert E.unwrap(message).session_id == core.session_id, "a reply rides its own client's SURB"
            self.used.add(surb)
            self._send("client", message, core)
        for core in self.clients:
            deadline = core.deadline()
            if deadline is not None and deadline <= self.now:
                core.on_timer(self.now)
            self.forward(core.poll(self.now))
            for event in core.events():
                session = core.session
                if isinstance(event, StreamReadable) and session is not None and session.has_stream(event.stream_id):
                    self.received[id(core)] += session.read(event.stream_id)

    def run_until(self, done: object, max_steps: int) -> None:
        for _ in range(max_steps):
            if done():  # type: ignore[operator]
                return
            self.step()


def send(core: ClientCore, payload: bytes) -> None:
    session = core.session
    assert session is not None
    stream = session.open_stream()
    assert session.write(stream, payload) == len(payload)
    session.finish(stream)


def echo(net: Net, core: ClientCore, payload: bytes, max_steps: int) -> None:
    net.run_until(lambda: core.session is not None, 400)
    send(core, payload)
    net.run_until(lambda: bytes(net.received[id(core)]) == payload, max_steps)


@pytest.mark.parametrize("suite", [Suite.CLASSIC, Suite.HYBRID])
def test_a_50_kb_stream_is_echoed_back_exactly_over_a_shuffling_channel(suite: Suite) -> None:
    net = Net(suite, seed=1)
    core = net.add_client()
    payload = net.rng.randbytes(50_000)
    echo(net, core, payload, 2000)
    assert bytes(net.received[id(core)]) == payload
    assert core.failed is None and core.opening is None  # the Finish was answered: opening released
    assert sum(core.all_drops().values()) == 0


def test_a_50_kb_stream_is_echoed_back_exactly_at_10_percent_loss() -> None:
    net = Net(Suite.HYBRID, seed=2, loss=0.10)
    core = net.add_client()
    payload = net.rng.randbytes(50_000)
    echo(net, core, payload, 6000)
    assert bytes(net.received[id(core)]) == payload
    assert core.failed is None


def test_garbage_replies_are_counted_drops_and_change_nothing() -> None:
    net = Net(seed=3)
    core = net.add_client()
    net.run_until(lambda: core.session is not None, 400)
    for message in (b"", bytes(E.MESSAGE_BYTES + 1), b"\x09" + core.session_id):
        core.receive(message, net.now)
    core.receive(E.wrap(E.RECORD, E.new_session_id(), b"x"), net.now)
    core.receive(E.wrap(E.SURB, core.session_id, b"x"), net.now)
    core.receive(E.wrap(E.RECORD, core.session_id, b"forged record"), net.now)
    drops = core.all_drops()
    assert (drops["truncated"], drops["size"], drops["kind"], drops["session_id"], drops["unexpected_kind"]) == (1, 1, 1, 1, 1)
    assert sum(core.session.drops.values()) == 1  # type: ignore[union-attr]  # the forged record
    echo(net, core, b"still works", 400)
    assert bytes(net.received[id(core)]) == b"still works"


def test_garbage_before_the_accept_is_a_counted_drop() -> None:
    net = Net(seed=4)
    core = net.add_client()
    core.receive(E.wrap(E.RECORD, core.session_id, b"x"), net.now)
    core.receive(E.wrap(E.HANDSHAKE, core.session_id, b"\x00"), net.now)  # a truncated fragment
    drops = core.all_drops()
    assert drops["record_before_open"] == 1 and drops["truncated"] == 1 and core.failed is None


def test_an_exit_that_never_answers_ends_in_failed_without_raising() -> None:
    net = Net(seed=5)
    core = net.add_client(resend_s=1.0, max_tries=3)  # the Init sits in the channel: no step delivers it
    resends = 0
    while (deadline := core.deadline()) is not None:
        core.on_timer(deadline)  # must not raise
        if core.failed is None:
            resent = core.poll(deadline)
            assert resent and all(E.unwrap(m).session_id == core.session_id for m in resent)
            resends += 1
    assert resends == 2 and core.failed is not None and core.session is None  # 3 Init sends in all
    assert core.events() == [SessionClosed(CloseCode.IDLE_TIMEOUT, str(core.failed), by_peer=False)]
    assert core.poll(net.now + 100) == [] and core.deadline() is None
    core.receive(b"late", net.now + 100)
    assert core.drops["failed"] == 1


def test_two_client_cores_to_one_exit_never_mix() -> None:
    net = Net(Suite.HYBRID, seed=6, loss=0.05)
    alice, bob = net.add_client(), net.add_client()
    net.run_until(lambda: alice.session is not None and bob.session is not None, 400)
    payloads = {id(alice): b"alice " * 4000, id(bob): b"bob! " * 3000}
    for core in (alice, bob):
        send(core, payloads[id(core)])
    net.run_until(lambda: all(bytes(net.received[k]) == v for k, v in payloads.items()), 4000)
    for key, payload in payloads.items():
        assert bytes(net.received[key]) == payload  # the channel also checked each SURB's owner
    assert len(net.exit) == 2 and alice.session_id != bob.session_id


def test_a_session_whose_every_finish_is_lost_fails_after_the_resends_not_the_idle_timeout() -> None:
    """The exit answered, the client opened its side, but no Finish arrives: the exit would drop
    every record as `record_while_opening` for 300 s. The client gives up after its Finish resends
    and its streams see the session end."""
    net = Net()
    core = net.add_client(resend_s=0.5, max_tries=3)
    finishes = []
    real_forward = net.forward

    def forward_without_finish(envelopes: list[bytes]) -> None:
        kept = []
        for envelope in envelopes:
            env = E.unwrap(envelope)
            if env.kind is E.HANDSHAKE and E.parse_fragment(env.body).message_id == 3:
                finishes.append(envelope)  # every Finish (message 3) is lost
            else:
                kept.append(envelope)
        real_forward(kept)

    net.forward = forward_without_finish  # type: ignore[method-assign]
    net.run_until(lambda: core.session is not None, 400)
    session = core.session
    assert session is not None
    stream = session.open_stream()
    session.write(stream, b"never confirmed")
    for _ in range(200):  # 10 s of steps: 3 Finish sends 0.5 s apart, then the failure
        net.step()
        if core.failed is not None:
            break
    assert core.failed is not None and "never confirmed" in str(core.failed)
    assert len(finishes) == 3
    assert session.closed is not None and session.closed.error_code == CloseCode.IDLE_TIMEOUT
    assert core.session is None and core.deadline() is None  # inert: the shell opens a new one
