"""The mix packet format end to end: delivery, fixed size, tamper resistance, unlinkability, SURBs."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from nyx.mix import (
    CLASSIC_FORMAT,
    DEFAULT_FORMAT,
    KEM_FORMAT,
    Deliver,
    Drop,
    Forward,
    Hop,
    KeyRing,
    MixCore,
    MixPacketError,
    PacketFormat,
    Surb,
    create_packet,
    create_reply,
    create_surb,
    open_reply,
)
from nyx.mix.packet import PACKET_BYTES

FORMATS = [KEM_FORMAT, CLASSIC_FORMAT]


class Net:
    """`hops` mixes with fresh keys; `run` carries a packet to its end and records every hop."""

    def __init__(self, hops: int, fmt: PacketFormat = DEFAULT_FORMAT) -> None:
        self.fmt = fmt
        self.keys = [X25519PrivateKey.generate() for _ in range(hops)]
        self.route = [Hop(f"mix-{i}", k.public_key().public_bytes_raw()) for i, k in enumerate(self.keys)]
        self.fresh()

    def fresh(self) -> None:
        """New cores (empty replay caches) over the same keys."""
        self.cores = {
            hop.node_id: MixCore(KeyRing.single(key), replay_capacity=4096, packet_format=self.fmt)
            for hop, key in zip(self.route, self.keys)
        }

    def run(self, first: str, packet: bytes) -> tuple[Deliver | Drop, list[tuple[str, bytes]]]:
        seen = []
        node = first
        while True:
            seen.append((node, packet))
            event = self.cores[node].process(packet, 0.0)
            if not isinstance(event, Forward):
                return event, seen
            node, packet = event.next_hop, event.packet


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
@pytest.mark.parametrize("hops", [3, 4, 5, 6, 7])
def test_packets_through_3_to_7_hops_deliver_the_payload(hops: int, fmt: PacketFormat) -> None:
    net = Net(hops, fmt)
    message = f"through {hops} hops".encode()
    event, seen = net.run(*create_packet(net.route, "svc-1", message, epoch=0, fmt=fmt))
    assert event == Deliver("svc-1", message)
    assert [node for node, _ in seen] == [hop.node_id for hop in net.route]


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
def test_every_packet_at_every_hop_has_the_same_size(fmt: PacketFormat) -> None:
    sizes = set()
    for hops in (3, 5, 7):
        net = Net(hops, fmt)
        for message in (b"", b"x", bytes(fmt.message_bytes)):
            _, seen = net.run(*create_packet(net.route, "svc", message, epoch=0, fmt=fmt))
            sizes.update(len(packet) for _, packet in seen)
    assert sizes == {PACKET_BYTES}
    assert PACKET_BYTES <= 1170  # one QUIC DATAGRAM at the default 1,200-byte UDP payload


def test_the_largest_message_fills_the_packet_and_a_larger_one_is_refused() -> None:
    net = Net(3)
    largest = bytes(range(256)) * 3
    largest = largest[: DEFAULT_FORMAT.message_bytes]
    event, _ = net.run(*create_packet(net.route, "svc", largest, epoch=0))
    assert event == Deliver("svc", largest)
    with pytest.raises(MixPacketError, match="at most"):
        create_packet(net.route, "svc", largest + b"!", epoch=0)


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
def test_flipping_any_single_byte_is_dropped_at_that_hop_or_destroys_the_payload(fmt: PacketFormat) -> None:
    net = Net(3, fmt)
    _, seen = net.run(*create_packet(net.route, "svc", b"the payload", epoch=0, fmt=fmt))
    header = fmt.header_bytes
    for hop_index, (node, packet) in enumerate(seen):
        for position in range(PACKET_BYTES):  # exhaustive: ~45 us per hop makes it cheap
            flipped = bytearray(packet)
            flipped[position] ^= 0x01 if position % 2 else 0x80
            net.fresh()
            event, path = net.run(node, bytes(flipped))
            assert isinstance(event, Drop), (hop_index, position)
            if position < header:
                assert len(path) == 1 and event.reason in ("mac", "epoch"), (hop_index, position, event)
            else:  # the body is not checked on the way: the tag destroys it at the exit
                assert event.reason == "payload", (hop_index, position, event)


def windows(data: bytes, width: int = 16) -> set[bytes]:
    return {data[i : i + width] for i in range(len(data) - width + 1)}


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
def test_the_bytes_entering_and_leaving_a_hop_share_no_run_of_16_bytes(fmt: PacketFormat) -> None:
    net = Net(5, fmt)
    _, seen = net.run(*create_packet(net.route, "svc", bytes(100), epoch=0, fmt=fmt))
    for (_, entering), (_, leaving) in zip(seen, seen[1:]):
        assert not windows(entering) & windows(leaving)


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
@pytest.mark.parametrize("hops", [3, 7])
def test_surb_replies_arrive_and_open_for_the_creator_only(hops: int, fmt: PacketFormat) -> None:
    net = Net(hops, fmt)
    surb, surb_keys = create_surb(net.route, "alice", epoch=0, fmt=fmt)
    wire = surb.to_bytes()
    assert len(wire) == fmt.surb_bytes
    event, _ = net.run(*create_reply(Surb.from_bytes(wire, fmt), b"reply to alice", fmt))
    assert isinstance(event, Deliver) and event.destination == "alice"
    assert event.surb_id == surb_keys.surb_id
    assert open_reply(surb_keys, event.payload, fmt) == b"reply to alice"
    _, other_keys = create_surb(net.route, "alice", epoch=0, fmt=fmt)
    with pytest.raises(MixPacketError, match="modified in transit"):
        open_reply(other_keys, event.payload, fmt)


def test_a_surb_is_single_use() -> None:
    net = Net(3)
    surb, _ = create_surb(net.route, "alice", epoch=0)
    first, _ = net.run(*create_reply(surb, b"one"))
    second, _ = net.run(*create_reply(surb, b"two"))
    assert isinstance(first, Deliver)
    assert second == Drop("replay")


def test_a_tagged_reply_cannot_be_opened() -> None:
    net = Net(3)
    surb, surb_keys = create_surb(net.route, "alice", epoch=0)
    first_hop, packet = create_reply(surb, b"reply")
    tagged = bytearray(packet)
    tagged[-100] ^= 0x04
    event, _ = net.run(first_hop, bytes(tagged))
    assert isinstance(event, Deliver)  # the exit cannot tell; the creator can
    with pytest.raises(MixPacketError):
        open_reply(surb_keys, event.payload)


def test_a_packet_for_another_mix_fails_the_mac() -> None:
    net, other = Net(3), Net(3)
    first_hop, packet = create_packet(net.route, "svc", b"hi", epoch=0)
    assert other.cores["mix-0"].process(packet, 0.0) == Drop("mac")


def test_two_packets_on_the_same_route_look_unrelated() -> None:
    net = Net(3)
    _, one = create_packet(net.route, "svc", b"same", epoch=0)
    _, two = create_packet(net.route, "svc", b"same", epoch=0)
    assert one[0] == two[0]  # only the epoch byte is shared
    assert not windows(one, 8) & windows(two, 8)


def test_sender_errors_say_what_is_wrong() -> None:
    net = Net(7)
    with pytest.raises(MixPacketError, match="1..7 hops"):
        create_packet(net.route + net.route[:1], "svc", b"", epoch=0)
    with pytest.raises(MixPacketError, match="1..16 ASCII"):
        create_packet(net.route, "a-destination-name-too-long", b"", epoch=0)
    with pytest.raises(MixPacketError, match="not 32 bytes"):
        create_packet([Hop("mix-0", b"short")], "svc", b"", epoch=0)
    with pytest.raises(MixPacketError, match="SURB is"):
        Surb.from_bytes(b"\x00" * 10)


def test_format_sizes_fit_one_datagram_and_the_kem_header_costs_32_bytes_per_hop() -> None:
    assert KEM_FORMAT.packet_bytes == CLASSIC_FORMAT.packet_bytes == PACKET_BYTES
    assert KEM_FORMAT.header_bytes - CLASSIC_FORMAT.header_bytes == 32 * KEM_FORMAT.max_hops
    assert KEM_FORMAT.surb_bytes < KEM_FORMAT.message_bytes  # a SURB fits in a forward packet
