"""Record protection: nonces per direction, anti-replay, rekey and the previous-key grace period."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nyx.crypto import RecordError
from nyx.crypto.replay_window import ReplayWindow
from nyx.crypto.session import DIRECTION_I2R, DIRECTION_R2I, HEADER, RecordSession, RekeyPolicy

SECRET_A = bytes(range(32))
SECRET_B = bytes(range(32, 64))


def pair(policy: RekeyPolicy = RekeyPolicy(), now: float = 0.0) -> tuple[RecordSession, RecordSession]:
    initiator = RecordSession(SECRET_A, SECRET_B, send_direction=DIRECTION_I2R, receive_direction=DIRECTION_R2I, now=now, policy=policy)
    responder = RecordSession(SECRET_B, SECRET_A, send_direction=DIRECTION_R2I, receive_direction=DIRECTION_I2R, now=now, policy=policy)
    return initiator, responder


def test_records_open_in_both_directions() -> None:
    initiator, responder = pair()
    assert responder.open(initiator.seal(b"hello gateway", 0.0), 0.0) == b"hello gateway"
    assert initiator.open(responder.seal(b"hello client", 0.0), 0.0) == b"hello client"


def test_associated_data_is_authenticated() -> None:
    initiator, responder = pair()
    record = initiator.seal(b"x", 0.0, associated_data=b"stream 7")
    with pytest.raises(RecordError) as error:
        responder.open(record, 0.0, associated_data=b"stream 8")
    assert error.value.reason == "auth"


def test_same_secret_both_ways_still_never_reuses_a_nonce_and_reflection_fails() -> None:
    # Even with one secret for both directions, the direction id in the nonce separates them.
    a = RecordSession(SECRET_A, SECRET_A, send_direction=DIRECTION_I2R, receive_direction=DIRECTION_R2I, now=0.0)
    record = a.seal(b"to the gateway", 0.0)
    with pytest.raises(RecordError, match="failed authentication"):
        a.open(record, 0.0)  # reflected back to its sender


def test_replayed_record_is_refused() -> None:
    initiator, responder = pair()
    record = initiator.seal(b"once", 0.0)
    responder.open(record, 0.0)
    with pytest.raises(RecordError) as error:
        responder.open(record, 0.0)
    assert error.value.reason == "replay"


def test_reordered_records_within_the_window_open() -> None:
    initiator, responder = pair()
    records = [initiator.seal(bytes([i]), 0.0) for i in range(50)]
    for i in reversed(range(50)):
        assert responder.open(records[i], 0.0) == bytes([i])


def test_record_older_than_the_window_is_refused() -> None:
    initiator, responder = pair(RekeyPolicy(replay_window=1 << 14))
    first = initiator.seal(b"late", 0.0)
    for _ in range(1 << 14):
        last = initiator.seal(b"", 0.0)
    responder.open(last, 0.0)
    with pytest.raises(RecordError) as error:
        responder.open(first, 0.0)
    assert error.value.reason == "too_old"


@pytest.mark.parametrize("position", range(0, 12 + 5 + 16))
def test_any_flipped_byte_fails_authentication(position: int) -> None:
    initiator, responder = pair()
    record = bytearray(initiator.seal(b"hello", 0.0))
    record[position] ^= 0x01
    with pytest.raises(RecordError):
        responder.open(bytes(record), 0.0)
    assert responder.receive_epoch == 0


def test_sender_rekeys_after_max_records_and_receiver_follows() -> None:
    initiator, responder = pair(RekeyPolicy(max_records=3))
    for i in range(10):
        assert responder.open(initiator.seal(bytes([i]), 0.0), 0.0) == bytes([i])
    assert initiator.send_epoch == 3 and responder.receive_epoch == 3


def test_sender_rekeys_once_a_key_has_protected_max_bytes() -> None:
    initiator, responder = pair(RekeyPolicy(max_bytes=1000))
    epochs = []
    for _ in range(5):
        record = initiator.seal(bytes(600), 0.0)
        epochs.append(HEADER.unpack_from(record)[0])
        responder.open(record, 0.0)
    # A key protects at most max_bytes plus the one record that crosses the limit.
    assert epochs == [0, 0, 1, 1, 2]
    assert responder.receive_epoch == 2


def test_sender_rekeys_after_max_age() -> None:
    initiator, responder = pair(RekeyPolicy(max_age_s=600.0))
    responder.open(initiator.seal(b"a", 0.0), 0.0)
    responder.open(initiator.seal(b"b", 599.0), 599.0)
    assert initiator.send_epoch == 0
    responder.open(initiator.seal(b"c", 600.0), 600.0)
    assert initiator.send_epoch == 1 and responder.receive_epoch == 1


def test_each_epoch_uses_a_different_key() -> None:
    initiator, _ = pair(RekeyPolicy(max_records=1))
    first, second = initiator.seal(b"same", 0.0), initiator.seal(b"same", 0.0)
    assert HEADER.unpack_from(first)[0] == 0 and HEADER.unpack_from(second)[0] == 1
    assert first[HEADER.size :] != second[HEADER.size :]


def test_in_flight_record_of_the_previous_epoch_opens_within_the_grace_period() -> None:
    initiator, responder = pair(RekeyPolicy(max_records=2, previous_key_grace_s=30.0))
    old = [initiator.seal(b"old", 0.0) for _ in range(2)]
    new = initiator.seal(b"new", 0.0)
    responder.open(new, 10.0)  # the receiver moves to epoch 1
    assert responder.open(old[0], 35.0) == b"old"  # 25 s after the switch: still open
    with pytest.raises(RecordError) as error:
        responder.open(old[1], 41.0)  # 31 s after the switch: key retired
    assert error.value.reason == "epoch"


def test_a_forged_next_epoch_header_does_not_make_the_receiver_drop_its_key() -> None:
    initiator, responder = pair()
    forged = HEADER.pack(1, 99) + os.urandom(40)
    with pytest.raises(RecordError):
        responder.open(forged, 0.0)
    assert responder.receive_epoch == 0
    assert responder.open(initiator.seal(b"still fine", 0.0), 0.0) == b"still fine"


def test_a_lost_record_at_an_epoch_boundary_does_not_end_the_session() -> None:
    # A sparse sender puts one record in each epoch; epoch 1's is lost on the mix path.
    initiator, responder = pair(RekeyPolicy(max_records=1))
    records = [initiator.seal(bytes([i]), 0.0) for i in range(4)]
    assert responder.open(records[0], 0.0) == b"\x00"
    assert responder.open(records[2], 0.0) == b"\x02"  # epoch 1 skipped: derived forward
    assert responder.receive_epoch == 2
    assert responder.open(records[3], 0.0) == b"\x03"


def test_a_late_record_of_a_skipped_epoch_still_opens_within_the_grace_period() -> None:
    initiator, responder = pair(RekeyPolicy(max_records=1, previous_key_grace_s=30.0))
    records = [initiator.seal(bytes([i]), 0.0) for i in range(4)]
    responder.open(records[3], 0.0)  # epochs 0..2 overtaken by a faster route
    assert [responder.open(records[i], 20.0) for i in range(3)] == [b"\x00", b"\x01", b"\x02"]
    late = [initiator.seal(b"x", 0.0) for _ in range(2)]
    responder.open(late[1], 25.0)  # epoch 5: epoch 3 joins the past, 0..2 keep their deadline
    with pytest.raises(RecordError) as error:
        responder.open(records[3], 31.0)  # already received: refused before any key is looked at
    assert error.value.reason == "replay"
    assert responder.open(late[0], 54.0) == b"x"  # epoch 4, 29 s after it was moved past


def test_records_lost_at_every_epoch_boundary_under_the_ten_minute_rekey() -> None:
    # One record a minute for 12 hours, 10-minute rekey; the first record of every new epoch is
    # lost, and at every third boundary the whole next epoch is lost as well.
    initiator, responder = pair()
    assert initiator.policy.max_age_s == 600.0
    last_epoch, lost_epochs, opened = 0, 0, 0
    for minute in range(12 * 60):
        now = minute * 60.0 + 0.5
        record = initiator.seal(minute.to_bytes(2, "big"), now)
        epoch = HEADER.unpack_from(record)[0]
        first_of_epoch = epoch != last_epoch
        last_epoch = epoch
        if first_of_epoch or (epoch % 3 == 0 and epoch > 0):
            lost_epochs += first_of_epoch
            continue
        assert responder.open(record, now + 0.3) == minute.to_bytes(2, "big")
        opened += 1
    assert responder.receive_epoch == initiator.send_epoch > 60
    assert lost_epochs == initiator.send_epoch and opened > 400


def test_a_jump_beyond_the_bound_is_refused_and_the_session_goes_on() -> None:
    policy = RekeyPolicy(max_records=1, max_epoch_jump=4)
    initiator, responder = pair(policy)
    records = [initiator.seal(bytes([i]), 0.0) for i in range(7)]
    with pytest.raises(RecordError, match="6 epochs ahead") as error:
        responder.open(records[6], 0.0)
    assert error.value.reason == "epoch"
    assert responder.open(records[4], 0.0) == b"\x04"  # within the bound of epoch 0
    assert responder.open(records[6], 0.0) == b"\x06"  # and now within the bound of epoch 4


def test_forged_far_ahead_headers_cost_at_most_the_bound_in_derivations(monkeypatch: pytest.MonkeyPatch) -> None:
    from nyx.crypto import session as session_module

    derivations = 0
    real_next = session_module._Epoch.next

    def counting_next(self: session_module._Epoch) -> session_module._Epoch:
        nonlocal derivations
        derivations += 1
        return real_next(self)

    monkeypatch.setattr(session_module._Epoch, "next", counting_next)
    initiator, responder = pair()
    for seq in range(1000):
        forged = HEADER.pack(1 + seq % 16, seq) + os.urandom(40)
        with pytest.raises(RecordError):
            responder.open(forged, 0.0)
        with pytest.raises(RecordError):
            responder.open(HEADER.pack(0xFFFFFFFF, seq) + os.urandom(40), 0.0)
    assert derivations == responder.policy.max_epoch_jump
    assert responder.receive_epoch == 0
    assert responder.open(initiator.seal(b"unharmed", 0.0), 0.0) == b"unharmed"


def test_max_epoch_jump_must_allow_the_next_epoch() -> None:
    with pytest.raises(ValueError, match="max_epoch_jump"):
        RekeyPolicy(max_epoch_jump=0)


def test_directions_must_differ() -> None:
    with pytest.raises(ValueError, match="different identifiers"):
        RecordSession(SECRET_A, SECRET_B, send_direction=1, receive_direction=1, now=0.0)


@given(st.binary(max_size=200))
def test_opening_arbitrary_bytes_raises_only_record_errors(blob: bytes) -> None:
    _, responder = pair()
    with pytest.raises(RecordError):
        responder.open(blob, 0.0)


def test_replay_window_memory_follows_traffic_not_the_window_size() -> None:
    window = ReplayWindow(1 << 20)
    for seq in range(0, 5 << 20, 997):
        window.mark(seq)
    assert window.pages_in_use <= (1 << 20) // (1 << 14) + 1
    sparse = ReplayWindow(1 << 20)
    for seq in range(10):
        sparse.mark(seq)
    assert sparse.pages_in_use == 1


def test_replay_window_remembers_everything_inside_the_window() -> None:
    window = ReplayWindow(1 << 14)
    for seq in range(0, 40000, 3):
        window.mark(seq)
    floor = window.highest - window.size
    for seq in range(floor + 1, window.highest + 1):
        assert window.is_fresh(seq) == (seq % 3 != 0)
    assert not window.is_fresh(floor) and window.is_too_old(floor)


def test_replay_window_survives_a_jump_far_beyond_the_window() -> None:
    window = ReplayWindow(1 << 14)
    window.mark(5)
    window.mark(10**12)
    assert window.pages_in_use == 1
    assert window.is_fresh(10**12 - 1) and not window.is_fresh(10**12)
