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
    k, m = 4, len(messages) - 4
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
