"""The Nyx mix packet: a Sphinx-family format over X25519 (see docs/protocol.md, "Mix packet
format").

Every packet has the same size at every hop of every path of 1..7 hops, so neither the size nor
the position in the path tells a mix how far the packet has come or has to go. A packet is

    epoch (1) | E (32) | gamma (16) | beta (max_hops * slot) | body

- `E` is this hop's X25519 group element. In the KEM format (the default) it is a fresh ephemeral
  public key per hop, and the next hop's key travels encrypted inside `beta`; in the classic format
  it is one element that each hop blinds (a second X25519 per hop, no key bytes in `beta`).
- `gamma` is a 16-byte keyed-BLAKE2b MAC over epoch | E | beta, checked before anything else.
- `beta` is the routing information under the hop's ChaCha20 keystream: the first slot is this
  hop's instruction (relay to a node, or deliver), the rest is the next hop's `beta`, shifted, with
  keystream appended so the length stays fixed (the Sphinx "filler" construction).
- `body` is under one Lioness layer per hop (a wide-block cipher), so tagging destroys it; the
  plaintext starts with 16 zero bytes that the delivering hop checks.

This module is sans-I/O: bytes and keys in, bytes out. `peel` is the one mix operation; the
`create_*` functions are for senders and SURB creators.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from nyx.directory.records import NODE_ID_BYTES, Hop
from nyx.mix import keys as K
from nyx.mix.lioness import Lioness

GROUP_BYTES = 32
MAC_BYTES = 16
ZERO_PREFIX_BYTES = 16  # the delivering hop's integrity check of the payload
LENGTH_BYTES = 2
SURB_ID_BYTES = 16
SURB_SEED_BYTES = 32

# The largest QUIC DATAGRAM payload aioquic sends at the default 1,200-byte UDP payload is 1,170
# bytes; two bytes stay free for a transport-level type tag.
PACKET_BYTES = 1168
MAX_HOPS = 7

# Routing flags (first byte of a slot).
RELAY = 0x01
DELIVER = 0x02  # final hop: check and strip the zero prefix, hand the message to `destination`
DELIVER_SURB = 0x03  # final hop of a reply block: the body is still under the creator's keys

_E = slice(1, 1 + GROUP_BYTES)
_GAMMA = slice(1 + GROUP_BYTES, 1 + GROUP_BYTES + MAC_BYTES)
_PREFIX_BYTES = 1 + GROUP_BYTES + MAC_BYTES


class MixPacketError(ValueError):
    """A sender-side input was wrong (route too long, message too big, bad node id), or a reply
    could not be opened (tampered in transit, or not meant for these keys)."""


@dataclass(frozen=True, slots=True)
class PacketFormat:
    """Sizes of one variant of the format. `kem` selects per-hop ephemeral keys in the header
    (one X25519 per hop) over classic blinding (two X25519 per hop, smaller header)."""

    name: str
    kem: bool
    packet_bytes: int = PACKET_BYTES
    max_hops: int = MAX_HOPS

    @property
    def slot_bytes(self) -> int:
        # flag | next node id | [next E] | next gamma
        return 1 + NODE_ID_BYTES + (GROUP_BYTES if self.kem else 0) + MAC_BYTES

    @property
    def beta_bytes(self) -> int:
        return self.max_hops * self.slot_bytes

    @property
    def header_bytes(self) -> int:
        return _PREFIX_BYTES + self.beta_bytes

    @property
    def body_bytes(self) -> int:
        return self.packet_bytes - self.header_bytes

    @property
    def message_bytes(self) -> int:
        """The largest message one packet carries."""
        return self.body_bytes - ZERO_PREFIX_BYTES - LENGTH_BYTES

    @property
    def surb_bytes(self) -> int:
        """Size of an encoded SURB (first hop, Lioness seed, header)."""
        return NODE_ID_BYTES + SURB_SEED_BYTES + self.header_bytes


KEM_FORMAT = PacketFormat("kem", kem=True)
CLASSIC_FORMAT = PacketFormat("classic", kem=False)
# Chosen by measurement (docs/protocol.md): the KEM variant halves the X25519 work per hop.
DEFAULT_FORMAT = KEM_FORMAT
FORMATS = {f.name: f for f in (KEM_FORMAT, CLASSIC_FORMAT)}


def encode_node_id(node_id: str) -> bytes:
    """A node id on the wire: its ASCII bytes, zero-padded to 16."""
    raw = node_id.encode("ascii", errors="strict") if node_id.isascii() else b""
    if not 0 < len(raw) <= NODE_ID_BYTES or b"\x00" in raw:
        raise MixPacketError(f"node id {node_id!r} must be 1..{NODE_ID_BYTES} ASCII characters")
    return raw.ljust(NODE_ID_BYTES, b"\x00")


def decode_node_id(raw: bytes) -> str | None:
    """The node id in a wire field, or None if the field is not a valid id."""
    stripped = raw.rstrip(b"\x00")
    if not stripped or b"\x00" in stripped or not stripped.isascii():
        return None
    return stripped.decode("ascii")


@dataclass(frozen=True, slots=True)
class Peeled:
    """What remains of a packet after one hop removed its layer.

    flag RELAY: `address` is the next hop and `data` the packet to send it.
    flag DELIVER: `address` is the destination and `data` the message.
    flag DELIVER_SURB: `address` is the SURB creator, `data` the still-encrypted reply body and
    `surb_id` tells the creator which keys open it.
    """

    flag: int
    address: str
    data: bytes
    surb_id: bytes | None = None


def _keystream(key: bytes, length: int) -> bytes:
    return K.chacha20_xor(key, bytes(length))


def _xor(a: bytes, b: bytes) -> bytes:
    n = len(a)
    return (int.from_bytes(a, "little") ^ int.from_bytes(b[:n], "little")).to_bytes(n, "little")


def _mac(key: bytes, prefix: bytes, beta: bytes) -> bytes:
    h = hashlib.blake2b(key=key, digest_size=MAC_BYTES)
    h.update(prefix)
    h.update(beta)
    return h.digest()


def peel(
    fmt: PacketFormat,
    private_key: X25519PrivateKey,
    packet: bytes,
    admit: Callable[[bytes], str | None],
) -> Peeled | str:
    """Remove one layer. Returns the result, or a drop reason (a short stable token).

    Order matters: the MAC is checked before the packet is believed in any way; then `admit`
    sees the hop's replay tag (and returns a reason to refuse it, e.g. "replay"); only then is the
    routing information decrypted and the body permuted. The caller has checked the size and
    picked `private_key` by the packet's epoch byte.
    """
    element = packet[_E]
    try:
        shared = private_key.exchange(X25519PublicKey.from_public_bytes(element))
    except ValueError:  # a low-order point: the shared secret would be all zeros
        return "key"
    hop_key = K.hop_key(shared, element)
    header_end = fmt.header_bytes
    beta = packet[_PREFIX_BYTES:header_end]
    slot_bytes = fmt.slot_bytes
    # One keystream for the hop: its keys, then the routing header (beta, extended by a slot).
    stream = K.chacha20_xor(hop_key, _ZEROS_KEYS + beta + bytes(slot_bytes))
    keys = stream[: K.KEYS_BYTES]
    h = hashlib.blake2b(packet[: 1 + GROUP_BYTES], key=keys[K.MAC_KEY], digest_size=MAC_BYTES)
    h.update(beta)
    if not hmac.compare_digest(h.digest(), packet[_GAMMA]):
        return "mac"
    refused = admit(keys[K.REPLAY_TAG])
    if refused is not None:
        return refused
    routing = stream[K.KEYS_BYTES :]
    body = Lioness(keys[K.LIONESS_KEY]).decrypt(packet[header_end:])
    flag = routing[0]
    address = decode_node_id(routing[1 : 1 + NODE_ID_BYTES])
    if address is None:
        return "route"
    if flag == RELAY:
        if fmt.kem:
            next_element = routing[1 + NODE_ID_BYTES : 1 + NODE_ID_BYTES + GROUP_BYTES]
        else:
            blind = X25519PrivateKey.from_private_bytes(K.blinding_factor(shared, element))
            try:
                next_element = blind.exchange(X25519PublicKey.from_public_bytes(element))
            except ValueError:
                return "key"
        gamma = routing[slot_bytes - MAC_BYTES : slot_bytes]
        return Peeled(RELAY, address, b"".join((packet[:1], next_element, gamma, routing[slot_bytes:], body)))
    if flag == DELIVER:
        if body[:ZERO_PREFIX_BYTES] != _ZERO_PREFIX:
            return "payload"
        length = int.from_bytes(body[ZERO_PREFIX_BYTES : ZERO_PREFIX_BYTES + LENGTH_BYTES], "big")
        if length > fmt.message_bytes:
            return "payload"
        start = ZERO_PREFIX_BYTES + LENGTH_BYTES
        return Peeled(DELIVER, address, body[start : start + length])
    if flag == DELIVER_SURB:
        surb_id = routing[1 + NODE_ID_BYTES : 1 + NODE_ID_BYTES + SURB_ID_BYTES]
        return Peeled(DELIVER_SURB, address, body, surb_id)
    return "flag"


_ZEROS_KEYS = bytes(K.KEYS_BYTES)
_ZERO_PREFIX = bytes(ZERO_PREFIX_BYTES)


# --- senders ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _HopSecrets:
    element: bytes  # the group element this hop sees
    mac_key: bytes
    lioness_key: bytes
    rho: bytes  # routing keystream, (max_hops + 1) * slot bytes


def _hop_secrets(fmt: PacketFormat, route: Sequence[Hop]) -> list[_HopSecrets]:
    rho_bytes = (fmt.max_hops + 1) * fmt.slot_bytes
    secrets: list[_HopSecrets] = []

    def add(element: bytes, shared: bytes) -> None:
        stream = _keystream(K.hop_key(shared, element), K.KEYS_BYTES + rho_bytes)
        secrets.append(
            _HopSecrets(element, stream[K.MAC_KEY], stream[K.LIONESS_KEY], stream[K.KEYS_BYTES:])
        )

    if fmt.kem:
        for hop in route:
            ephemeral = X25519PrivateKey.generate()
            element = ephemeral.public_key().public_bytes_raw()
            add(element, ephemeral.exchange(X25519PublicKey.from_public_bytes(hop.public_key)))
        return secrets
    # Classic Sphinx: alpha_{i+1} = b_i * alpha_i, s_i = x * b_0 * ... * b_{i-1} * Y_i, computed
    # with X25519 alone (scalar multiplications commute on the Montgomery u-coordinate).
    secret = X25519PrivateKey.generate()
    element = secret.public_key().public_bytes_raw()
    blinds: list[X25519PrivateKey] = []
    for hop in route:
        shared = secret.exchange(X25519PublicKey.from_public_bytes(hop.public_key))
        for blind in blinds:
            shared = blind.exchange(X25519PublicKey.from_public_bytes(shared))
        add(element, shared)
        blind = X25519PrivateKey.from_private_bytes(K.blinding_factor(shared, element))
        blinds.append(blind)
        element = blind.exchange(X25519PublicKey.from_public_bytes(element))
    return secrets


def _header(
    fmt: PacketFormat, epoch: int, route: Sequence[Hop], secrets: Sequence[_HopSecrets], final_slot: bytes
) -> bytes:
    """The Sphinx header for `route`, whose last hop reads `final_slot`."""
    n, r, slot = len(route), fmt.max_hops, fmt.slot_bytes
    epoch_byte = bytes((epoch % 256,))
    filler = b""
    for i in range(n - 1):
        filler = _xor(filler + bytes(slot), secrets[i].rho[(r - i) * slot : (r + 1) * slot])
    last = secrets[n - 1]
    padding = os.urandom((r - n) * slot)  # random, so the last hop cannot count the hops
    beta = _xor(final_slot.ljust(slot, b"\x00") + padding, last.rho) + filler
    gamma = _mac(last.mac_key, epoch_byte + last.element, beta)
    for i in range(n - 2, -1, -1):
        nxt = secrets[i + 1]
        next_slot = RELAY.to_bytes(1, "big") + encode_node_id(route[i + 1].node_id)
        if fmt.kem:
            next_slot += nxt.element
        next_slot += gamma
        beta = _xor(next_slot + beta[: (r - 1) * slot], secrets[i].rho)
        gamma = _mac(secrets[i].mac_key, epoch_byte + secrets[i].element, beta)
    return epoch_byte + secrets[0].element + gamma + beta


def _check_route(fmt: PacketFormat, route: Sequence[Hop]) -> None:
    if not 1 <= len(route) <= fmt.max_hops:
        raise MixPacketError(f"a route has 1..{fmt.max_hops} hops, not {len(route)}")
    for hop in route:
        if len(hop.public_key) != GROUP_BYTES:
            raise MixPacketError(f"the Sphinx key of {hop.node_id} is not {GROUP_BYTES} bytes")


def _plaintext_body(fmt: PacketFormat, message: bytes) -> bytes:
    if len(message) > fmt.message_bytes:
        raise MixPacketError(
            f"a {fmt.name} mix packet carries at most {fmt.message_bytes} message bytes, not {len(message)}"
        )
    body = _ZERO_PREFIX + len(message).to_bytes(LENGTH_BYTES, "big") + message
    return body.ljust(fmt.body_bytes, b"\x00")


def create_packet(
    route: Sequence[Hop], destination: str, message: bytes, epoch: int, fmt: PacketFormat = DEFAULT_FORMAT
) -> tuple[str, bytes]:
    """A packet that `route[-1]` delivers to `destination`; returns (first hop, packet)."""
    _check_route(fmt, route)
    final_slot = DELIVER.to_bytes(1, "big") + encode_node_id(destination)
    secrets = _hop_secrets(fmt, route)
    body = _plaintext_body(fmt, message)
    for hop in reversed(secrets):  # the hops apply Lioness decryption in path order
        body = Lioness(hop.lioness_key).encrypt(body)
    return route[0].node_id, _header(fmt, epoch, route, secrets, final_slot) + body


# --- single-use reply blocks --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Surb:
    """What a replier needs: the first hop, a header that routes back to the creator, and the seed
    of the Lioness key the reply body is first encrypted under. Single use: the mixes' replay
    caches drop a second packet on the same header."""

    first_hop: str
    seed: bytes
    header: bytes

    def to_bytes(self) -> bytes:
        return encode_node_id(self.first_hop) + self.seed + self.header

    @classmethod
    def from_bytes(cls, raw: bytes, fmt: PacketFormat = DEFAULT_FORMAT) -> Surb:
        if len(raw) != fmt.surb_bytes:
            raise MixPacketError(f"an encoded {fmt.name} SURB is {fmt.surb_bytes} bytes, not {len(raw)}")
        first_hop = decode_node_id(raw[:NODE_ID_BYTES])
        if first_hop is None:
            raise MixPacketError("the SURB's first-hop field is not a node id")
        seed_end = NODE_ID_BYTES + SURB_SEED_BYTES
        return cls(first_hop, raw[NODE_ID_BYTES:seed_end], raw[seed_end:])


@dataclass(frozen=True, slots=True)
class SurbKeys:
    """What the creator keeps to open the reply: the id it will arrive under and the keys."""

    surb_id: bytes
    seed: bytes
    hop_lioness_keys: tuple[bytes, ...]


def create_surb(
    route: Sequence[Hop],
    recipient: str,
    epoch: int,
    surb_id: bytes | None = None,
    fmt: PacketFormat = DEFAULT_FORMAT,
) -> tuple[Surb, SurbKeys]:
    """A reply block whose packets `route[-1]` hands to `recipient` (the creator, or its
    gateway-side inbox) tagged with `surb_id`."""
    _check_route(fmt, route)
    surb_id = os.urandom(SURB_ID_BYTES) if surb_id is None else surb_id
    if len(surb_id) != SURB_ID_BYTES:
        raise MixPacketError(f"a SURB id is {SURB_ID_BYTES} bytes, not {len(surb_id)}")
    final_slot = DELIVER_SURB.to_bytes(1, "big") + encode_node_id(recipient) + surb_id
    secrets = _hop_secrets(fmt, route)
    seed = os.urandom(SURB_SEED_BYTES)
    surb = Surb(route[0].node_id, seed, _header(fmt, epoch, route, secrets, final_slot))
    return surb, SurbKeys(surb_id, seed, tuple(s.lioness_key for s in secrets))


def create_reply(surb: Surb, message: bytes, fmt: PacketFormat = DEFAULT_FORMAT) -> tuple[str, bytes]:
    """The replier's packet on a SURB: returns (first hop, packet)."""
    if len(surb.header) != fmt.header_bytes or len(surb.seed) != SURB_SEED_BYTES:
        raise MixPacketError(f"this SURB does not belong to the {fmt.name} format")
    body = Lioness(K.surb_lioness_key(surb.seed)).encrypt(_plaintext_body(fmt, message))
    return surb.first_hop, surb.header + body


def open_reply(surb_keys: SurbKeys, body: bytes, fmt: PacketFormat = DEFAULT_FORMAT) -> bytes:
    """The creator's side: undo every hop's layer, then the replier's, and check the zero prefix."""
    if len(body) != fmt.body_bytes:
        raise MixPacketError(f"a {fmt.name} reply body is {fmt.body_bytes} bytes, not {len(body)}")
    for key in reversed(surb_keys.hop_lioness_keys):
        body = Lioness(key).encrypt(body)
    body = Lioness(K.surb_lioness_key(surb_keys.seed)).decrypt(body)
    length = int.from_bytes(body[ZERO_PREFIX_BYTES : ZERO_PREFIX_BYTES + LENGTH_BYTES], "big")
    if body[:ZERO_PREFIX_BYTES] != _ZERO_PREFIX or length > fmt.message_bytes:
        raise MixPacketError("the reply was modified in transit or is not for these SURB keys")
    start = ZERO_PREFIX_BYTES + LENGTH_BYTES
    return body[start : start + length]
