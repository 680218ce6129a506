"""One stream's halves: bounded send buffer, retransmission of lost ranges, reassembly in any
order within the advertised window, final sizes."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nyx.stream.ranges import RangeSet
from nyx.stream.streams import FlowControlError, RecvStream, SendStream, StreamStateError


@given(st.lists(st.tuples(st.integers(0, 200), st.integers(0, 40)), max_size=40))
def test_a_range_set_holds_exactly_the_union_of_what_was_added(spans: list[tuple[int, int]]) -> None:
    ranges, expected = RangeSet(), set()
    for start, length in spans:
        ranges.add(start, start + length)
        expected.update(range(start, start + length))
    assert {i for s, e in ranges for i in range(s, e)} == expected
    bounds = list(ranges)
    assert all(e1 < s2 for (_, e1), (s2, _) in zip(bounds, bounds[1:]))  # disjoint, not adjacent
    assert list(ranges.missing(0, 250)) == [
        (s, e) for s, e in _runs(set(range(250)) - expected)
    ]


def _runs(values: set[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for v in sorted(values):
        if out and out[-1][1] == v:
            out[-1] = (out[-1][0], v + 1)
        else:
            out.append((v, v + 1))
    return out


def test_writes_beyond_the_send_buffer_are_refused_not_dropped() -> None:
    send = SendStream(0, buffer_bytes=100, peer_limit=1000)
    assert send.write(bytes(150)) == 100
    assert send.room() == 0 and send.write(b"x") == 0
    chunk = send.next_chunk(60, session_credit=1000)
    assert chunk is not None and (chunk.offset, len(chunk.data), chunk.new_bytes) == (0, 60, 60)
    send.on_acked(0, 60, False)
    assert send.room() == 60  # acknowledged bytes are freed, and only they


def test_lost_bytes_are_resent_except_what_was_acknowledged_meanwhile() -> None:
    send = SendStream(0, buffer_bytes=1000, peer_limit=1000)
    send.write(bytes(range(256)) * 2)
    first = send.next_chunk(300, 1000)
    second = send.next_chunk(300, 1000)
    assert first is not None and second is not None and second.offset == 300
    send.on_acked(100, 50, False)  # part of the first packet's bytes came in another one
    send.on_lost(0, 300, False)
    resent = []
    while (chunk := send.next_chunk(1000, 0)) is not None and chunk.new_bytes == 0:
        resent.append((chunk.offset, len(chunk.data)))
    assert resent == [(0, 100), (150, 150)]


def test_new_bytes_stop_at_the_peer_limit_and_the_session_credit() -> None:
    send = SendStream(0, buffer_bytes=1000, peer_limit=200)
    send.write(bytes(500))
    assert len(send.next_chunk(1000, session_credit=50).data) == 50  # type: ignore[union-attr]
    assert len(send.next_chunk(1000, session_credit=1000).data) == 150  # type: ignore[union-attr]
    assert send.next_chunk(1000, 1000) is None and send.blocked_by_peer()
    send.peer_limit = 500
    assert len(send.next_chunk(1000, 1000).data) == 300  # type: ignore[union-attr]


def test_a_lost_bare_fin_is_sent_again_alone() -> None:
    send = SendStream(0, buffer_bytes=100, peer_limit=100)
    send.write(b"abc")
    send.next_chunk(100, 100)
    send.finish()
    fin = send.next_chunk(100, 100)
    assert fin is not None and fin.fin and fin.data == b"" and fin.offset == 3
    send.on_acked(0, 3, False)
    send.on_lost(3, 0, True)
    again = send.next_chunk(100, 0)
    assert again is not None and again.fin and again.offset == 3
    send.on_acked(3, 0, True)
    assert send.done


def test_writing_after_finish_or_reset_is_a_local_error() -> None:
    send = SendStream(0, 100, 100)
    send.finish()
    with pytest.raises(StreamStateError, match="finished"):
        send.write(b"x")
    other = SendStream(4, 100, 100)
    assert other.reset(7) == 0
    with pytest.raises(StreamStateError, match="reset"):
        other.write(b"x")


@given(st.randoms(use_true_random=False), st.integers(1, 40))
def test_chunks_in_any_order_with_duplicates_read_back_in_order(rnd: random.Random, pieces: int) -> None:
    payload = bytes(rnd.getrandbits(8) for _ in range(pieces * 17))
    cuts = sorted(rnd.sample(range(1, len(payload)), min(pieces - 1, len(payload) - 1))) if len(payload) > 1 else []
    bounds = list(zip([0, *cuts], [*cuts, len(payload)]))
    arrivals = bounds + rnd.sample(bounds, len(bounds) // 3)  # a third arrive twice
    rnd.shuffle(arrivals)
    recv = RecvStream(0, window_bytes=len(payload))
    out = bytearray()
    for start, end in arrivals:
        recv.on_data(start, payload[start:end], fin=end == len(payload))
        out += recv.read(rnd.choice([-1, 5]))
    out += recv.read()
    assert bytes(out) == payload and recv.at_eof and recv.held_bytes == 0


def test_data_beyond_the_advertised_window_is_a_flow_control_error() -> None:
    recv = RecvStream(0, window_bytes=100)
    recv.on_data(0, bytes(100), False)
    with pytest.raises(FlowControlError) as error:
        recv.on_data(100, b"x", False)
    assert error.value.reason == "flow_control"


def test_the_window_moves_only_as_the_reader_reads() -> None:
    recv = RecvStream(0, window_bytes=100)
    recv.on_data(0, bytes(100), False)
    assert recv.window_update() is None  # nothing read: a stalled reader stops its sender
    recv.read(60)
    assert recv.window_update() == 160
    recv.on_data(100, bytes(60), False)
    assert recv.held_bytes == 100


@pytest.mark.parametrize(
    ("frames", "reason"),
    [
        ([(0, 10, True), (0, 12, False)], "final_size"),  # data past the final size
        ([(0, 10, True), (0, 8, True)], "final_size"),  # a second, different FIN
        ([(0, 10, False), (0, 5, True)], "final_size"),  # FIN below data already received
    ],
)
def test_a_final_size_that_changes_is_an_error(frames: list[tuple[int, int, bool]], reason: str) -> None:
    recv = RecvStream(0, window_bytes=100)
    with pytest.raises(FlowControlError) as error:
        for offset, length, fin in frames:
            recv.on_data(offset, bytes(length), fin)
    assert error.value.reason == reason


def test_a_reset_stream_drops_its_data_and_reports_the_growth_for_session_accounting() -> None:
    recv = RecvStream(0, window_bytes=100)
    recv.on_data(10, bytes(20), False)
    assert recv.on_reset(3, 50) == 20  # highest offset 30 -> 50
    assert recv.read() == b"" and recv.held_bytes == 0 and recv.reset_code == 3
