"""Reply paths: the exit sends only on SURBs the client sent ahead, each once; it asks for more
before it runs dry; its pool is bounded; the client notices SURBs lost on the way."""

from __future__ import annotations

import random

import pytest

from nyx.stream.session import Session, SessionConfig, SessionError
from nyx.stream.simulate import PathModel, SessionPair, handshake_keys
from nyx.stream.surbs import SURB_BYTES, SurbPolicy, SurbPool, SurbSupply

ON_SURBS = SessionConfig(surbs=SurbPolicy())


@pytest.mark.parametrize("loss", [0.0, 0.05, 0.2])
def test_replies_cross_only_on_surbs_the_client_sent_each_once(loss: float) -> None:
    path = PathModel(loss=loss)
    pair = SessionPair(path, path, seed=2, client_config=ON_SURBS, server_config=ON_SURBS)
    pair.server.echo = True  # every byte comes back: a reply-heavy session
    rng = random.Random(1)
    payloads = [rng.randbytes(20_000) for _ in range(5)]
    ids = pair.client_sends(payloads)
    pair.run(3600.0, stop=lambda p: len(p.client.eof) == len(ids))
    assert [bytes(pair.client.received[i]) for i in ids] == payloads
    # The simulator checks each reply's SURB was created by the client and not used before.
    pool = pair.server.session.surb_pool
    assert pool is not None and pool.spent == len(pair.surbs_spent) == pair.server.session.records_sent
    assert pool.requested > 0  # it asked for more along the way


def test_the_exit_cannot_send_a_record_without_a_surb() -> None:
    client_keys, server_keys = handshake_keys()
    exit_session = Session(server_keys, 0.0, ON_SURBS)
    with pytest.raises(SessionError, match="SURBs"):
        exit_session.next_record(0.0)
    client = Session(client_keys, 0.0, ON_SURBS)
    stream = client.open_stream()
    client.write(stream, b"hello")
    while (record := client.next_record(0.0)) is not None:  # no SURBs sent: the client never asked
        exit_session.receive_record(record, 0.0)
    exit_session.write(stream, b"a reply that must wait")
    assert exit_session.next_reply(0.0) is None and exit_session.next_reply(0.1) is None
    assert exit_session.drops["surb_starved"] == 1  # one episode, however often it is polled


def test_the_pool_asks_at_low_water_once_per_gap_and_refuses_beyond_capacity() -> None:
    policy = SurbPolicy(capacity=8, low_water=2, target=6, request_gap_s=1.0)
    pool = SurbPool(policy)
    pool.add(tuple(bytes([i]) * SURB_BYTES for i in range(10)))
    assert len(pool) == 8 and pool.refused == 2  # bounded: a client cannot make it grow
    assert pool.request(0.0) == 0  # plenty left
    for _ in range(6):
        pool.take()
    assert pool.request(0.0) == 4  # at low water, with two left to carry the request
    assert pool.request(0.5) == 0  # once per gap
    assert pool.request(1.0) == 4


def test_the_client_counts_surbs_in_lost_records_as_gone_and_tops_up() -> None:
    supply = SurbSupply(SurbPolicy(initial=24, low_water=16, target=48))
    assert supply.wanted() == 24
    supply.on_sent(24)
    assert supply.wanted() == 0
    supply.on_lost(10)  # an exit with none left could not even ask: the client must notice
    assert supply.held_by_exit == 14 and supply.wanted() == 48 - 14
    supply.on_request(40)
    assert supply.wanted() == 40


def test_the_client_counts_replies_lost_on_the_way_back_by_their_packet_numbers() -> None:
    supply = SurbSupply(SurbPolicy(initial=24, low_water=16, target=48))
    supply.on_sent(supply.wanted())
    supply.on_reply(0)
    supply.on_reply(9)  # records 1 to 8 were lost on the way back, but each spent a SURB
    assert supply.replies == 10 and supply.held_by_exit == 14
    supply.on_reply(5)  # a late one was already counted
    assert supply.replies == 10 and supply.held_by_exit == 14
    assert supply.wanted() == 48 - 14  # at low water: top up


def test_a_quiet_exit_gets_a_few_surbs_and_a_probe_a_full_top_up() -> None:
    supply = SurbSupply(SurbPolicy())
    supply.on_sent(48)
    assert supply.wanted() == 0
    supply.on_silence()  # quiet mid-stream: enough for a reply and a request, in case it is dry
    assert supply.wanted() == 2
    supply.on_sent(2)
    supply.on_probe()  # nothing acknowledged for two loss timeouts: assume it holds none
    assert supply.held_by_exit == 0 and supply.wanted() == SurbPolicy().target


@pytest.mark.parametrize(
    ("path", "seed", "download"),
    [
        (PathModel(loss=0.05), 3, True),  # replies lost on the way back once hid the exit's empty pool
        (PathModel(loss=0.01, burst_every_s=5.0, burst_length_s=0.5), 8, True),  # a burst ate the last replies
        (PathModel(loss=0.01, burst_every_s=5.0, burst_length_s=0.5), 1, False),
    ],
)
def test_a_bulk_reply_never_stalls_on_an_exit_left_without_surbs(path: PathModel, seed: int, download: bool) -> None:
    """200 KB back from the exit on lossy paths: every byte arrives and the session never waits
    for its idle timeout (these runs deadlocked when the client lost count of the exit's SURBs)."""
    pair = SessionPair(path, path, seed=seed, client_config=ON_SURBS, server_config=ON_SURBS)
    payload = random.Random(seed).randbytes(200_000)
    if download:  # a short request, then the whole payload back
        pair.client_sends([b"GET"], finish=False)
        responded = []

        def respond(p: SessionPair) -> None:
            if not responded and p.server.received.get(0):
                responded.append(True)
                p.server.to_write[0] = bytearray(payload)
                p.server.finish_after.add(0)

        pair.on_step = respond
    else:
        pair.server.echo = True
        pair.client_sends([payload])
    pair.run(200.0, stop=lambda p: len(p.client.received.get(0, b"")) >= len(payload))
    assert bytes(pair.client.received.get(0, b"")) == payload
    assert pair.now < 60.0 and pair.client.session.closed is None


def test_a_session_without_streams_keeps_its_initial_surbs_and_its_first_stream_gets_the_target() -> None:
    """An idle session costs its exit at most `initial` SURBs (memory: an exit holds 100,000 of
    them); the first stream brings the supply to `target` at once."""
    policy = SurbPolicy()
    slow = PathModel(mean_hop_delay_s=0.2)  # the first SURBs trickle in: the exit ACKs several times
    pair = SessionPair(slow, slow, seed=4, client_config=ON_SURBS, server_config=ON_SURBS)
    pair.run(60.0)
    pool, supply = pair.server.session.surb_pool, pair.client.session.surb_supply
    assert pool is not None and supply is not None
    assert supply.sent == policy.initial and pool.requested == 0
    assert 1 < len(pool) <= policy.initial  # spent on ACKs, never below the reserve
    held = supply.held_by_exit
    assert held <= policy.low_water
    pair.client.session.open_stream()
    pair.run(pair.now)  # one turn: the client's flush
    assert supply.sent == policy.initial + policy.target - held and supply.held_by_exit == policy.target
