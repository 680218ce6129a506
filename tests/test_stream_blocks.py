"""FEC blocks over sealed records: data records are handed on at once, missing ones are rebuilt
from parity, and a rebuilt record is still opened (and so authenticated) by the record layer."""

from __future__ import annotations

import random

import pytest

from nyx.stream.blocks import FEC_OVERHEAD, BlockReceiver, BlockSender
from nyx.stream.session import SessionConfig
from nyx.stream.simulate import PathModel, SessionPair

MESSAGE = 638


def test_every_data_record_is_handed_on_at_once_and_lost_ones_are_rebuilt() -> None:
    sender, receiver = BlockSender(MESSAGE, max_k=4, expected_loss=0.1), BlockReceiver()
    records = [random.Random(i).randbytes(100 + 50 * i) for i in range(4)]
    messages = sender.encode(records)
    m = len(messages) - 4
    assert m >= 2 and all(len(message) == MESSAGE for message in messages)  # fixed size, like Sphinx
    assert receiver.receive(messages[1]) == [records[1]]  # not held back for the block
    out = [records[1]]
    for message in messages[3:]:  # records 0 and 2 are lost; 3 and the parity arrive
        out += receiver.receive(message)
    assert sorted(out) == sorted(records) and receiver.recovered == 2


def test_a_burst_longer_than_max_k_is_cut_into_blocks() -> None:
    sender = BlockSender(MESSAGE, max_k=3, expected_loss=0.05)
    messages = sender.encode([b"r%d" % i for i in range(7)])
    blocks = {int.from_bytes(message[:4], "big") for message in messages}
    assert blocks == {0, 1, 2}


def test_a_corrupted_message_is_a_counted_drop_never_a_record() -> None:
    receiver = BlockReceiver()
    assert receiver.receive(b"\x00\x00") == [] and receiver.malformed == 1


@pytest.mark.parametrize("loss", [0.05, 0.10])
def test_fec_delivers_exactly_and_saves_retransmissions_on_a_lossy_path(loss: float) -> None:
    config = SessionConfig(max_record_bytes=MESSAGE - FEC_OVERHEAD)
    retransmitted = {}
    for fec in (False, True):
        total = 0
        for seed in range(4):
            path = PathModel(loss=loss)
            pair = SessionPair(path, path, seed=seed, client_config=config, server_config=config)
            if fec:
                pair.enable_fec(MESSAGE, expected_loss=loss)
            rng = random.Random(seed)
            payloads = [rng.randbytes(3000) for _ in range(8)]
            ids = pair.client_sends(payloads)
            pair.run(600.0, stop=lambda p: len(p.server.eof) == len(ids))
            assert [bytes(pair.server.received[i]) for i in ids] == payloads
            recovery = pair.client.session._recovery
            total += recovery.lost_total - recovery.spurious_lost_total  # real retransmissions
        retransmitted[fec] = total
    assert retransmitted[True] < retransmitted[False]


def test_the_receiver_reports_raw_shard_loss_of_settled_blocks_including_blocks_lost_whole() -> None:
    sender, receiver = BlockSender(MESSAGE, max_k=4, expected_loss=0.1), BlockReceiver(settle_blocks=2, report_shards=1)
    blocks = [sender.encode([bytes([b, i]) for i in range(4)]) for b in range(12)]
    size = len(blocks[0])
    dropped = {(3, 0), (3, 5), (5, 1)}  # two shards of block 3, one of block 5
    for number, messages in enumerate(blocks):
        if number == 7:
            continue  # block 7 lost whole: seen only as a gap in block numbers
        for index, message in enumerate(messages):
            if (number, index) not in dropped:
                receiver.receive(message)
    expected, received = receiver.take_report() or (0, 0)
    assert expected == 10 * size  # blocks 0..9 settled (two newer ones seen)
    assert received == expected - 3 - size
    assert receiver.take_report() is None


def test_fec_learns_the_paths_raw_loss_from_the_peers_reports() -> None:
    config = SessionConfig(max_record_bytes=MESSAGE - FEC_OVERHEAD)
    path = PathModel(loss=0.10)
    pair = SessionPair(path, path, seed=5, client_config=config, server_config=config)
    pair.enable_fec(MESSAGE, expected_loss=0.01)  # a prior far below the truth
    rng = random.Random(5)
    payloads = [rng.randbytes(10_000) for _ in range(20)]
    ids = pair.client_sends(payloads)
    pair.run(600.0, stop=lambda p: len(p.server.eof) == len(ids))
    assert [bytes(pair.server.received[i]) for i in ids] == payloads
    sender = pair.client.fec_sender
    assert sender is not None
    estimates = [controller.loss_rate for controller in sender._controllers.values()]
    # FEC repaired most losses, yet the estimate moved from 1% toward the raw 10%
    assert max(estimates) > 0.04
