"""Opening a session through the mixnet (`nyx.stream.opening`), with real handshakes over a
simulated channel: the client's envelopes reach the exit shuffled, with chosen losses, and the
exit's answers come back only on SURBs the client created, each used once."""

from __future__ import annotations

import functools
import random

import pytest

from nyx.crypto.kem import PrivateKey
from nyx.crypto.suites import Suite
from nyx.stream import envelope as E
from nyx.stream.events import StreamReadable
from nyx.stream.handshake import Initiator, Responder
from nyx.stream.opening import FINISH_ID, INIT_ID, RETRY_ID, ClientOpening, ExitOpenings, OpeningError, accept_bytes
from nyx.stream.session import Session, SessionConfig
from nyx.stream.surbs import SURB_BYTES, SurbPolicy

NOW = 1_800_000_000.0
CONFIG = SessionConfig(surbs=SurbPolicy())
SUITES = [Suite.CLASSIC, Suite.HYBRID]


@functools.cache
def static_key(suite: Suite) -> tuple[PrivateKey, bytes]:
    return suite.kem().generate()


class Net:
    """One client opening and one exit, joined by a channel the test drives step by step."""

    def __init__(self, suite: Suite, seed: int = 0, responder: Responder | None = None,
                 initiator: Initiator | None = None, **exit_limits: object) -> None:
        private_key, public_key = static_key(suite)
        self.rng = random.Random(seed)
        self.now = NOW
        self.created: set[bytes] = set()
        self.used: set[bytes] = set()
        self.session_id = E.new_session_id()
        self.client = ClientOpening(initiator or Initiator({suite: public_key}), self.session_id, self.make_surbs, CONFIG, NOW)
        self.exit = ExitOpenings(responder or Responder({suite: private_key}), CONFIG, **exit_limits)  # type: ignore[arg-type]
        self.sessions: dict[bytes, Session] = {}

    def make_surbs(self, count: int) -> list[bytes]:
        surbs = [len(self.created).to_bytes(4, "big") + self.rng.randbytes(SURB_BYTES - 4) for _ in range(count)]
        self.created.update(surbs)
        return surbs

    def to_exit(self, messages: list[bytes], lose: set[int] = frozenset()) -> list[tuple[bytes, bytes]]:  # type: ignore[assignment]
        kept = [m for i, m in enumerate(messages) if i not in lose]
        self.rng.shuffle(kept)
        replies = []
        for message in kept:
            replies += self.exit.receive(message, self.now)
        self.sessions.update(self.exit.sessions_opened())
        return replies

    def to_client(self, pairs: list[tuple[bytes, bytes]], lose: set[int] = frozenset()) -> list[bytes]:  # type: ignore[assignment]
        out = []
        for i, (surb, message) in enumerate(pairs):
            assert surb in self.created and surb not in self.used, "every answer rides a fresh SURB the client made"
            self.used.add(surb)
            if i not in lose:
                out += self.client.receive(message, self.now)
        return out

    def open(self) -> Session:
        finish = self.to_client(self.to_exit(self.client.start(self.now)))
        assert self.to_exit(finish) == []
        return self.exit_session()

    def exit_session(self) -> Session:
        assert self.client.session is not None and self.session_id in self.sessions
        return self.sessions[self.session_id]


def echo(net: Net, payload: bytes = b"GET / HTTP/1.1\r\n\r\n") -> None:
    """A stream from the client's Session to the exit's and back (the exit replies on SURBs)."""
    client, gateway = net.client.session, net.exit_session()
    assert client is not None
    stream = client.open_stream()
    client.write(stream, payload)
    client.send_surbs(net.make_surbs(client.surbs_wanted()))
    for _ in range(20):
        net.now += 0.05
        while (record := client.next_record(net.now)) is not None:
            env = E.unwrap(E.wrap(E.RECORD, net.session_id, record))
            gateway.receive_record(env.body, net.now)
        for event in gateway.events():
            if isinstance(event, StreamReadable):
                gateway.write(event.stream_id, gateway.read(event.stream_id)[::-1])
        while (reply := gateway.next_reply(net.now)) is not None:
            surb, record = reply
            assert surb in net.created and surb not in net.used
            net.used.add(surb)
            client.receive_record(record, net.now)
        if client.read(stream) == payload[::-1]:
            assert net.client.deadline() is None  # the exit answered a record: no more Finish resends
            return
    raise AssertionError("the echo did not come back")


@pytest.mark.parametrize("suite", SUITES)
def test_a_session_opens_and_carries_a_stream_both_ways(suite: Suite) -> None:
    net = Net(suite)
    sent = net.client.start(net.now)
    kinds = [E.unwrap(m).kind for m in sent]
    accept_count = E.fragment_count(accept_bytes(suite))
    init_count = {Suite.CLASSIC: 1, Suite.HYBRID: 4}[suite]
    assert kinds == [E.HANDSHAKE] * init_count + [E.SURB] * (accept_count + 1)
    answers = net.to_exit(sent)
    assert len(answers) == accept_count == {Suite.CLASSIC: 1, Suite.HYBRID: 2}[suite]
    finish = net.to_client(answers)
    assert len(finish) == 1 and E.parse_fragment(E.unwrap(finish[0]).body).message_id == FINISH_ID
    assert net.to_exit(finish) == [] and len(net.exit) == 0 and net.exit.surb_bytes == 0
    gateway = net.exit_session()
    assert net.client.session.keys.session_id == gateway.keys.session_id  # type: ignore[union-attr]
    assert gateway.surb_pool is not None and len(gateway.surb_pool) == 1  # the margin SURB moved over
    echo(net)


def test_hybrid_spends_four_init_three_surbs_two_accepts_one_finish() -> None:
    net = Net(Suite.HYBRID)
    sent = net.client.start(net.now)
    answers = net.to_exit(sent)
    finish = net.to_client(answers)
    assert (len(sent), len(answers), len(finish)) == (7, 2, 1)


@pytest.mark.parametrize("seed", range(5))
def test_shuffled_fragments_open_the_session(seed: int) -> None:
    net = Net(Suite.HYBRID, seed)
    answers = net.to_exit(net.client.start(net.now))
    net.rng.shuffle(answers)
    net.to_exit(net.to_client(answers))
    echo(net)


@pytest.mark.parametrize("suite", SUITES)
def test_a_lost_init_fragment_is_resent_and_the_opening_completes(suite: Suite) -> None:
    net = Net(suite)
    assert net.to_exit(net.client.start(net.now), lose={0}) == []
    assert net.client.on_timer(net.now + 1.0) == []  # not due yet
    net.now = net.client.deadline()  # type: ignore[assignment]
    resent = net.client.on_timer(net.now)
    answers = net.to_exit(resent)
    assert answers
    net.to_exit(net.to_client(answers))
    assert net.exit.drops["handshake_replayed"] == 0
    echo(net)


def test_a_lost_accept_fragment_is_resent_by_the_exit_without_a_second_respond() -> None:
    net = Net(Suite.HYBRID)
    answers = net.to_exit(net.client.start(net.now))
    assert net.to_client(answers, lose={1}) == [] and net.client.session is None
    net.now = net.client.deadline()  # type: ignore[assignment]
    resent = net.client.on_timer(net.now)
    again = net.to_exit(resent)
    assert len(again) == 2  # the stored Accept, once, though four Init fragments came again
    assert net.exit.drops["duplicate"] == 3 and net.exit.drops["handshake_replayed"] == 0
    net.to_exit(net.to_client(again))
    echo(net)


def test_a_lost_finish_is_resent_until_the_exit_answers_a_record() -> None:
    net = Net(Suite.HYBRID)
    finish = net.to_client(net.to_exit(net.client.start(net.now)))
    assert net.client.session is not None and len(finish) == 1  # lost: not delivered
    net.client.session.write(net.client.session.open_stream(), b"x")
    record = net.client.session.next_record(net.now)
    assert record is not None
    assert net.to_exit([E.wrap(E.RECORD, net.session_id, record)]) == []
    assert net.exit.drops["record_while_opening"] == 1  # no keys yet: the client retransmits it
    net.now = net.client.deadline()  # type: ignore[assignment]
    assert net.client.on_timer(net.now) == finish
    net.to_exit(finish)
    echo(net)
    assert net.to_exit(finish) == [] and net.exit.drops["unknown_session"] == 1  # a late copy opens nothing


def test_the_exit_holds_its_accept_until_surbs_arrive() -> None:
    net = Net(Suite.HYBRID)
    sent = net.client.start(net.now)
    init = [m for m in sent if E.unwrap(m).kind is E.HANDSHAKE]
    surbs = [m for m in sent if E.unwrap(m).kind is E.SURB]
    assert net.to_exit(init) == []  # answered, but no SURB to carry it
    first = net.to_exit(surbs[:1])
    assert len(first) == 1
    second = net.to_exit(surbs[1:])
    assert len(second) == 1
    net.to_exit(net.to_client(first + second))
    echo(net)


def test_no_answer_after_every_try_is_an_opening_error() -> None:
    net = Net(Suite.CLASSIC)
    net.client.start(net.now)
    for _ in range(net.client.max_tries - 1):
        net.now = net.client.deadline()  # type: ignore[assignment]
        assert net.client.on_timer(net.now)
    net.now = net.client.deadline()  # type: ignore[assignment]
    with pytest.raises(OpeningError, match="no answer from the exit after 5 Init sends"):
        net.client.on_timer(net.now)


def test_garbage_and_forged_envelopes_are_counted_drops() -> None:
    net = Net(Suite.HYBRID)
    sid = net.session_id
    junk = [
        b"",
        b"\x01abc",
        bytes(E.MESSAGE_BYTES + 1),
        b"\x09" + sid + b"x",
        b"\x01" + sid + b"\x00\x01\x00\x00",  # count 0
        b"\x01" + sid + b"\x00\x01\x05\x02",  # index >= count
        E.wrap(E.HANDSHAKE, sid, b"\x00\x07\x00\x01junk"),  # no such message id
        E.wrap(E.HANDSHAKE, sid, b"\x00\x01\x00\x01not an init"),
        E.wrap(E.RECORD, E.new_session_id(), b"sealed?"),
    ]
    for message in junk:
        assert net.exit.receive(message, net.now) == []
    drops = net.exit.drops
    assert (drops["truncated"], drops["size"], drops["kind"], drops["count"], drops["index"]) == (2, 1, 1, 1, 1)
    assert drops["message_id"] == 1 and drops["handshake_malformed"] == 1 and drops["unknown_session"] == 1
    # A malformed Init closed only that opening; a real one under a fresh id still opens.
    assert len(net.exit) == 0
    fresh = Net(Suite.HYBRID, seed=1)
    fresh.exit = net.exit
    fresh.open()
    echo(fresh)


def test_a_forged_finish_closes_only_its_opening() -> None:
    net = Net(Suite.CLASSIC)
    other = Net(Suite.CLASSIC)
    other.exit = net.exit  # two clients, one exit
    net.to_client(net.to_exit(net.client.start(net.now)))
    other.to_client(other.to_exit(other.client.start(other.now)))
    forged = E.fragments(net.session_id, FINISH_ID, b"\x03" + bytes(32))
    net.to_exit(forged)
    assert net.exit.drops["handshake_auth_failed"] == 1 and net.session_id not in net.exit
    assert other.session_id in net.exit


def test_the_pending_bound_holds_under_a_flood_of_init_fragments() -> None:
    net = Net(Suite.HYBRID, max_openings=1000)
    init = net.client.start(net.now)[0]
    body = E.unwrap(init).body
    for _ in range(10_000):
        net.exit.receive(E.wrap(E.HANDSHAKE, E.new_session_id(), body), net.now)
        assert len(net.exit) <= 1000 and net.exit.reassembler.pending <= 1000
    assert net.exit.drops["evicted"] == 9_000 and net.exit.surb_bytes == 0
    # An opening that starts after the flood still completes.
    fresh = Net(Suite.HYBRID, seed=1)
    fresh.exit = net.exit
    fresh.open()
    echo(fresh)


def test_surbs_per_opening_are_bounded() -> None:
    net = Net(Suite.HYBRID, max_surbs=4)
    for surb in net.make_surbs(10):
        net.exit.receive(E.wrap(E.SURB, net.session_id, surb), net.now)
    assert net.exit.drops["surb_full"] == 6 and net.exit.surb_bytes == 4 * SURB_BYTES


def test_openings_expire() -> None:
    net = Net(Suite.HYBRID, timeout_s=30.0)
    net.to_exit(net.client.start(net.now))
    assert len(net.exit) == 1 and net.exit.deadline() == NOW + 30.0
    net.exit.on_timer(NOW + 30.0)
    assert len(net.exit) == 0 and net.exit.drops["expired"] == 1 and net.exit.surb_bytes == 0


def test_a_suite_reject_retries_once_and_opens() -> None:
    hybrid_private, hybrid_public = static_key(Suite.HYBRID)
    classic_private, classic_public = static_key(Suite.CLASSIC)
    responder = Responder({Suite.HYBRID: hybrid_private, Suite.CLASSIC: classic_private}, suites=(Suite.CLASSIC,))
    initiator = Initiator({Suite.HYBRID: hybrid_public, Suite.CLASSIC: classic_public})
    assert initiator.suite is Suite.HYBRID
    net = Net(Suite.HYBRID, responder=responder, initiator=initiator)
    reject = net.to_exit(net.client.start(net.now))
    assert len(reject) == 1 and net.exit.drops["handshake_unsupported_suite"] == 1
    retry = net.to_client(reject)
    assert {E.parse_fragment(E.unwrap(m).body).message_id for m in retry if E.unwrap(m).kind is E.HANDSHAKE} == {RETRY_ID}
    assert net.client.initiator.suite is Suite.CLASSIC
    net.to_exit(net.to_client(net.to_exit(retry)))
    assert net.exit_session().keys.suite is Suite.CLASSIC
    # A late fragment of the rejected first Init is ignored, not answered.
    assert net.exit.receive(E.fragments(net.session_id, INIT_ID, b"\x01")[0], net.now) == []
    echo(net)


def test_a_reject_of_the_retry_is_an_opening_error() -> None:
    hybrid_private, hybrid_public = static_key(Suite.HYBRID)
    _, classic_public = static_key(Suite.CLASSIC)
    # The exit holds no classic key: the retry is refused as well.
    responder = Responder({Suite.HYBRID: hybrid_private}, suites=())
    initiator = Initiator({Suite.HYBRID: hybrid_public, Suite.CLASSIC: classic_public})
    net = Net(Suite.HYBRID, responder=responder, initiator=initiator)
    with pytest.raises(OpeningError):
        net.to_client(net.to_exit(net.to_client(net.to_exit(net.client.start(net.now)))))
