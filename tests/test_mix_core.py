"""MixCore: replay, key epochs with overlap, delays, counters, and fuzzing of `process`."""

from __future__ import annotations

import random

import pytest

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nyx.mix import DEFAULT_FORMAT, DROP_REASONS, Deliver, Drop, Forward, Hop, KeyRing, MixCore, PoissonDelay, create_packet
from nyx.mix.packet import PACKET_BYTES

KEY = X25519PrivateKey.generate()
PUBLIC = KEY.public_key().public_bytes_raw()


def core(**kwargs) -> MixCore:
    return MixCore(KeyRing.single(KEY), replay_capacity=4096, **kwargs)


def test_a_replayed_packet_is_dropped() -> None:
    mix = core()
    _, packet = create_packet([Hop("m", PUBLIC), Hop("x", PUBLIC)], "svc", b"once", epoch=0)
    assert isinstance(mix.process(packet, 0.0), Forward)
    assert mix.process(packet, 1.0) == Drop("replay")
    assert mix.drops["replay"] == 1 and mix.forwarded == 1


def test_a_replay_after_a_hop_is_still_caught_at_the_next_hop() -> None:
    first, second = core(), MixCore(KeyRing.single(KEY), replay_capacity=4096)
    _, packet = create_packet([Hop("m", PUBLIC), Hop("n", PUBLIC), Hop("x", PUBLIC)], "svc", b"", epoch=0)
    onward = first.process(packet, 0.0)
    assert isinstance(onward, Forward)
    assert isinstance(second.process(onward.packet, 0.0), Forward)
    assert second.process(onward.packet, 0.0) == Drop("replay")


def test_packets_in_flight_survive_key_rotation_within_the_overlap() -> None:
    ring = KeyRing(epoch_s=100.0, overlap_s=10.0)
    mix = MixCore(ring, replay_capacity=4096)
    mix.rotate(50.0)  # keys for epochs 0 and 1, the second published ahead
    old, new = ring.keys[0], ring.keys[1]
    route_old = [Hop("m", old.public_key), Hop("x", old.public_key)]
    route_new = [Hop("m", new.public_key), Hop("x", new.public_key)]
    early = create_packet(route_new, "svc", b"", epoch=1)[1]
    assert isinstance(mix.process(early, 95.0), Forward)  # next epoch's key, 5 s early
    late = create_packet(route_old, "svc", b"", epoch=0)[1]
    mix.rotate(105.0)
    assert isinstance(mix.process(late, 105.0), Forward)  # old key, 5 s into the next epoch
    too_late = create_packet(route_old, "svc", b"", epoch=0)[1]
    assert mix.rotate(111.0) == [0]
    assert mix.process(too_late, 111.0) == Drop("epoch")
    assert 0 not in mix.replay.epochs()  # the retired epoch's tags are freed with its key


def test_a_packet_of_the_wrong_size_is_dropped() -> None:
    mix = core()
    assert mix.process(b"", 0.0) == Drop("size")
    assert mix.process(bytes(PACKET_BYTES + 1), 0.0) == Drop("size")


@pytest.mark.parametrize("kind", [bytearray, memoryview, lambda b: memoryview(bytearray(b))],
                         ids=["bytearray", "memoryview", "memoryview-of-bytearray"])
def test_any_bytes_like_packet_is_processed_as_its_bytes(kind) -> None:
    _, packet = create_packet([Hop("m", PUBLIC), Hop("x", PUBLIC)], "svc", b"a receive buffer", epoch=0)
    as_bytes, as_buffer = core(), core()
    expected = as_bytes.process(packet, 0.0)
    got = as_buffer.process(kind(packet), 0.0)
    assert isinstance(got, Forward) and type(got.packet) is bytes
    assert (got.next_hop, got.packet) == (expected.next_hop, expected.packet)
    assert as_buffer.process(kind(packet), 1.0) == Drop("replay")
    assert as_buffer.process(kind(packet[:-1]), 1.0) == Drop("size")


def test_a_bytes_packet_reaches_the_layer_below_uncopied(monkeypatch) -> None:
    import nyx.mix.core as core_module

    seen = []

    def spy(fmt, key, packet, admit):
        seen.append(packet)
        return real(fmt, key, packet, admit)

    real = core_module.peel
    monkeypatch.setattr(core_module, "peel", spy)
    _, packet = create_packet([Hop("m", PUBLIC), Hop("x", PUBLIC)], "svc", b"", epoch=0)
    core().process(packet, 0.0)
    assert seen[0] is packet


def test_a_value_that_is_not_bytes_like_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="bytes-like"):
        core().process("a str is not a packet", 0.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="bytes-like"):
        core().process(PACKET_BYTES, 0.0)  # type: ignore[arg-type]  # bytes(n) would be n zeros


def test_a_low_order_group_element_is_dropped() -> None:
    mix = core()
    assert mix.process(bytes(PACKET_BYTES), 0.0) == Drop("key")  # epoch 0, E = the zero point


def test_forwards_carry_an_exponential_delay() -> None:
    mix = core(delay=PoissonDelay(0.05, random.Random(7)))
    route = [Hop("m", PUBLIC), Hop("x", PUBLIC)]
    delays = []
    for _ in range(200):
        event = mix.process(create_packet(route, "svc", b"", epoch=0)[1], 0.0)
        assert isinstance(event, Forward) and event.next_hop == "x"
        delays.append(event.delay_s)
    assert 0.035 < sum(delays) / len(delays) < 0.065
    assert min(delays) >= 0.0


def test_the_last_hop_delivers_without_delay_and_counts() -> None:
    mix = core(delay=PoissonDelay(1.0))
    event = mix.process(create_packet([Hop("x", PUBLIC)], "svc-9", b"hi", epoch=0)[1], 0.0)
    assert event == Deliver("svc-9", b"hi")
    assert mix.delivered == 1 and not mix.drops


HEADER = DEFAULT_FORMAT.header_bytes
VALID = create_packet([Hop("m", PUBLIC), Hop("x", PUBLIC)], "svc", b"fuzz", epoch=0)[1]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(min_size=0, max_size=PACKET_BYTES + 2))
def test_process_of_arbitrary_bytes_yields_only_defined_drops(data: bytes) -> None:
    event = core().process(data, 0.0)
    assert isinstance(event, Drop) and event.reason in DROP_REASONS


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=PACKET_BYTES, max_size=PACKET_BYTES))
def test_process_of_random_packets_with_a_known_epoch_yields_only_defined_drops(data: bytes) -> None:
    event = core().process(b"\x00" + data[1:], 0.0)
    assert isinstance(event, Drop) and event.reason in DROP_REASONS


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, PACKET_BYTES - 1), st.integers(0, 255)), min_size=1, max_size=8))
def test_process_of_edited_valid_packets_yields_a_drop_or_the_unchanged_result(
    edits: list[tuple[int, int]],
) -> None:
    packet = bytearray(VALID)
    for position, value in edits:
        packet[position] = value
    event = core().process(bytes(packet), 0.0)
    if bytes(packet) == VALID:
        assert isinstance(event, Forward)
    elif isinstance(event, Drop):
        assert event.reason in DROP_REASONS
    else:  # only the body changed: the mix cannot see it, the exit will drop it
        assert isinstance(event, Forward)
        assert packet[:HEADER] == VALID[:HEADER]
