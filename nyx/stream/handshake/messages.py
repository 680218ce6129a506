"""Wire formats of the four handshake messages (layouts in docs/protocol.md).

Every parser takes untrusted bytes and returns a message or raises `HandshakeError`; nothing else
escapes (the fuzz tests hold it to that). Integers are big-endian.

    Init    = type(1) version(1) suite(1) prev_version(1) prev_suite(1) n(1) offered(n)
              required_caps(4) timestamp_s(4) responder_key_id(8) ephemeral_pk ct_static
    Accept  = type(2) version(1) suite(1) capabilities(4) ct_ephemeral confirm(32)
    Finish  = type(3) confirm(32)
    Reject  = type(4) code(2) n(1) versions(n) m(1) suites(m)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from nyx.crypto.suites import Suite
from nyx.stream.handshake.errors import CloseCode, HandshakeError

PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS = (PROTOCOL_VERSION,)
MAX_OFFERED = 16
KEY_ID_SIZE = 8
CONFIRM_SIZE = 32

TYPE_INIT = 1
TYPE_ACCEPT = 2
TYPE_FINISH = 3
TYPE_REJECT = 4

_INIT_TAIL = struct.Struct(">II8s")  # required_caps, timestamp_s, responder_key_id
_ACCEPT_HEAD = struct.Struct(">BBBI")  # type, version, suite, capabilities


def _malformed(message: str) -> HandshakeError:
    return HandshakeError(CloseCode.MALFORMED, message)


def _suite(number: int) -> Suite:
    try:
        return Suite(number)
    except ValueError:
        raise HandshakeError(CloseCode.UNSUPPORTED_SUITE, f"unknown suite number {number}") from None


@dataclass(frozen=True, slots=True)
class Init:
    """The initiator's first message: its offer, its ephemeral key, and an encapsulation to the
    responder's static key (which only the real responder can open)."""

    version: int
    suite: Suite
    offered: tuple[int, ...]
    prev_version: int
    prev_suite: int
    required_caps: int
    timestamp_s: int
    responder_key_id: bytes
    ephemeral_public_key: bytes
    static_ciphertext: bytes

    def encode(self) -> bytes:
        head = bytes((TYPE_INIT, self.version, self.suite, self.prev_version, self.prev_suite, len(self.offered)))
        tail = _INIT_TAIL.pack(self.required_caps, self.timestamp_s, self.responder_key_id)
        return head + bytes(self.offered) + tail + self.ephemeral_public_key + self.static_ciphertext


def peek_version(data: bytes) -> int:
    """The version byte of an Init, checked before the rest (later versions may change layout)."""
    if len(data) < 2 or data[0] != TYPE_INIT:
        raise _malformed("expected an Init message")
    return data[1]


def parse_init(data: bytes) -> Init:
    """Parse an Init of a supported version; its selected suite fixes the key and ciphertext sizes."""
    version = peek_version(data)
    if version not in SUPPORTED_VERSIONS:
        raise HandshakeError(CloseCode.UNSUPPORTED_VERSION, f"protocol version {version} is not supported")
    if len(data) < 6:
        raise _malformed("Init is truncated")
    suite_number, prev_version, prev_suite, count = data[2], data[3], data[4], data[5]
    if not 1 <= count <= MAX_OFFERED:
        raise _malformed(f"Init offers {count} suites; 1..{MAX_OFFERED} allowed")
    offered = tuple(data[6 : 6 + count])
    if len(offered) != count or len(set(offered)) != count:
        raise _malformed("Init offer list is truncated or repeats a suite")
    if suite_number not in offered:
        raise _malformed("Init selects a suite it does not offer")
    if (prev_version == 0) != (prev_suite == 0):
        raise _malformed("Init names half of a previous attempt")
    suite = _suite(suite_number)
    kem = suite.kem()
    offset = 6 + count + _INIT_TAIL.size
    expected = offset + kem.public_key_size + kem.ciphertext_size
    if len(data) != expected:
        raise _malformed(f"{suite.label} Init must be {expected} bytes, got {len(data)}")
    required_caps, timestamp_s, key_id = _INIT_TAIL.unpack_from(data, 6 + count)
    split = offset + kem.public_key_size
    return Init(
        version=version,
        suite=suite,
        offered=offered,
        prev_version=prev_version,
        prev_suite=prev_suite,
        required_caps=required_caps,
        timestamp_s=timestamp_s,
        responder_key_id=key_id,
        ephemeral_public_key=bytes(data[offset:split]),
        static_ciphertext=bytes(data[split:]),
    )


@dataclass(frozen=True, slots=True)
class Accept:
    """The responder's answer: an encapsulation to the initiator's ephemeral key and its key
    confirmation over the whole transcript."""

    version: int
    suite: Suite
    capabilities: int
    ephemeral_ciphertext: bytes
    confirm: bytes

    def body(self) -> bytes:
        """Everything but the confirmation tag (what the tag's transcript covers)."""
        return _ACCEPT_HEAD.pack(TYPE_ACCEPT, self.version, self.suite, self.capabilities) + self.ephemeral_ciphertext

    def encode(self) -> bytes:
        return self.body() + self.confirm


def parse_accept(data: bytes, suite: Suite) -> Accept:
    """Parse an Accept for the suite the initiator selected (its sizes are known in advance)."""
    expected = _ACCEPT_HEAD.size + suite.kem().ciphertext_size + CONFIRM_SIZE
    if len(data) < 1 or data[0] != TYPE_ACCEPT:
        raise _malformed("expected an Accept message")
    if len(data) != expected:
        raise _malformed(f"{suite.label} Accept must be {expected} bytes, got {len(data)}")
    _, version, suite_number, capabilities = _ACCEPT_HEAD.unpack_from(data)
    if suite_number != suite:
        raise _malformed(f"Accept names suite {suite_number}, but {suite.label} was selected")
    return Accept(
        version=version,
        suite=suite,
        capabilities=capabilities,
        ephemeral_ciphertext=bytes(data[_ACCEPT_HEAD.size : -CONFIRM_SIZE]),
        confirm=bytes(data[-CONFIRM_SIZE:]),
    )


def encode_finish(confirm: bytes) -> bytes:
    return bytes((TYPE_FINISH,)) + confirm


def parse_finish(data: bytes) -> bytes:
    """The initiator's confirmation tag from a Finish message."""
    if len(data) != 1 + CONFIRM_SIZE or data[0] != TYPE_FINISH:
        raise _malformed(f"a Finish message is {1 + CONFIRM_SIZE} bytes starting with type {TYPE_FINISH}")
    return bytes(data[1:])


@dataclass(frozen=True, slots=True)
class Reject:
    """The responder's refusal with what it does support. Unauthenticated: a hint, not a proof."""

    code: CloseCode
    versions: tuple[int, ...]
    suites: tuple[int, ...]

    def encode(self) -> bytes:
        return (
            bytes((TYPE_REJECT,))
            + int(self.code).to_bytes(2, "big")
            + bytes((len(self.versions),))
            + bytes(self.versions)
            + bytes((len(self.suites),))
            + bytes(self.suites)
        )


def parse_reject(data: bytes) -> Reject:
    if len(data) < 5 or data[0] != TYPE_REJECT:
        raise _malformed("expected a Reject message")
    try:
        code = CloseCode(int.from_bytes(data[1:3], "big"))
    except ValueError:
        raise _malformed("Reject carries an unknown close code") from None
    n = data[3]
    versions = tuple(data[4 : 4 + n])
    if len(versions) != n or len(data) < 5 + n:
        raise _malformed("Reject version list is truncated")
    m = data[4 + n]
    suites = tuple(data[5 + n : 5 + n + m])
    if len(suites) != m or len(data) != 5 + n + m:
        raise _malformed("Reject suite list is truncated or followed by extra bytes")
    return Reject(code, versions, suites)
