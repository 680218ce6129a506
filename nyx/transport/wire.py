"""Just enough QUIC header parsing to route a UDP datagram to its connection (RFC 9000 17.2/17.3).

One UDP socket carries every connection of a node, so each arriving datagram is routed by its
Destination Connection ID, as aioquic's server does. Parsing here keeps the routing independent
of which backend is loaded and never raises on garbage.
"""

from __future__ import annotations

from dataclasses import dataclass

QUIC_V1 = 0x00000001
QUIC_V2 = 0x6B3343CF
SUPPORTED_VERSIONS = (QUIC_V1, QUIC_V2)
MIN_INITIAL_BYTES = 1200  # RFC 9000 14.1: a client Initial is padded to at least 1200 bytes


def destination_cid(data: bytes, short_cid_length: int) -> bytes | None:
    """The Destination Connection ID of a QUIC packet, or None if `data` is not one."""
    if not data:
        return None
    first = data[0]
    if first & 0x80:  # long header: flags, version(4), dcid_len(1), dcid
        if len(data) < 6:
            return None
        length = data[5]
        if length > 20 or len(data) < 6 + length:
            return None
        return data[6 : 6 + length]
    if len(data) < 1 + short_cid_length:
        return None
    return data[1 : 1 + short_cid_length]


def is_initial(data: bytes) -> bool:
    """Whether `data` starts a new connection: a long-header Initial of a supported version, padded."""
    if len(data) < MIN_INITIAL_BYTES or not data[0] & 0x80:
        return False
    version = int.from_bytes(data[1:5], "big")
    packet_type = (data[0] & 0x30) >> 4
    if version == QUIC_V1:
        return packet_type == 0
    if version == QUIC_V2:
        return packet_type == 1
    return False


@dataclass(frozen=True, slots=True)
class InitialHeader:
    """The unprotected fields of a client Initial that admission needs (RFC 9000 17.2.2).

    `token` is empty on a first Initial and carries our Retry token on the second one.
    """

    version: int
    destination_cid: bytes
    source_cid: bytes
    token: bytes


def parse_initial(data: bytes) -> InitialHeader | None:
    """The header of a client Initial, or None if `data` is not a well-formed one (never raises).

    Only the fields before the packet number are read; they are not protected, so a flood of
    Initials can be answered (Retry) or refused without decrypting anything.
    """
    if not is_initial(data):
        return None
    offset = 5
    cids: list[bytes] = []
    for _ in range(2):
        length = data[offset]
        offset += 1
        if length > 20 or offset + length > len(data):
            return None
        cids.append(data[offset : offset + length])
        offset += length
    token_length, offset = _varint(data, offset)
    if token_length is None or offset + token_length > len(data):
        return None
    token = data[offset : offset + token_length]
    return InitialHeader(int.from_bytes(data[1:5], "big"), cids[0], cids[1], token)


def _varint(data: bytes, offset: int) -> tuple[int | None, int]:
    """A QUIC variable-length integer at `offset` (RFC 9000 16): (value, next offset)."""
    if offset >= len(data):
        return None, offset
    size = 1 << (data[offset] >> 6)
    if offset + size > len(data):
        return None, offset
    value = data[offset] & 0x3F
    for byte in data[offset + 1 : offset + size]:
        value = (value << 8) | byte
    return value, offset + size
