"""Handshake errors and the CLOSE codes that carry them to the peer.

A `HandshakeError` always has a `code`; the stream layer closes the connection with that code
(and, for the codes a responder can answer, sends a Reject message first so the initiator learns
what to change). Messages name the cause and what to do; they never include key material.
"""

from __future__ import annotations

from enum import IntEnum, IntFlag


class CloseCode(IntEnum):
    """Why a handshake or session ended. Values are stable on the wire (u16)."""

    NO_ERROR = 0x00
    MALFORMED = 0x01  # a message could not be parsed, or broke the protocol
    UNSUPPORTED_VERSION = 0x02
    UNSUPPORTED_SUITE = 0x03
    UNSUPPORTED_CAPABILITY = 0x04  # the initiator required a capability the responder lacks
    UNKNOWN_RESPONDER_KEY = 0x05  # encapsulated to a static key the responder does not hold
    REPLAYED = 0x06  # this first message was seen before within the replay window
    STALE = 0x07  # the first message's timestamp is outside the replay window
    AUTH_FAILED = 0x08  # key confirmation failed: wrong responder key or an altered message
    DOWNGRADE = 0x09  # a retry claims a rejection the responder would not have sent
    BUSY = 0x0A  # the replay cache is full; retry later
    # Session codes (nyx.stream.session): the CLOSE frame carries them.
    PROTOCOL_VIOLATION = 0x0B  # an authenticated record broke the protocol (bad frames, acks of unsent packets)
    FLOW_CONTROL = 0x0C  # the peer sent beyond a MAX_DATA / MAX_STREAM_DATA limit
    STREAM_LIMIT = 0x0D  # the peer opened more streams than MAX_STREAMS allowed
    FINAL_SIZE = 0x0E  # a stream's final size changed or data went past it
    IDLE_TIMEOUT = 0x0F  # nothing received for the idle timeout (local; no CLOSE is sent)
    APPLICATION = 0x10  # the application closed the session (reason in the CLOSE frame)


class Capability(IntFlag):
    """Optional features; an initiator may require some, a responder advertises its own."""

    NONE = 0
    STREAMS = 1 << 0
    MULTIPATH = 1 << 1
    FEC = 1 << 2
    SURB_REPLIES = 1 << 3


ALL_CAPABILITIES = Capability.STREAMS | Capability.MULTIPATH | Capability.FEC | Capability.SURB_REPLIES
CAPABILITY_BITS = 0xFFFFFFFF  # the field is a u32 on the wire


def missing_capabilities(required: int, offered: int) -> int:
    """The bits of `required` that `offered` lacks, compared as raw u32 integers.

    Never through `~Capability`: inverting an IntFlag flips only the defined bits, so a bit this
    build does not know (0x20, 0x80000000) would silently count as offered.
    """
    return int(required) & ~int(offered) & CAPABILITY_BITS


def describe_capabilities(bits: int) -> str:
    """`MULTIPATH|FEC`, with bits this build does not know shown in hex (`FEC|0x20`)."""
    names = [flag.name for flag in Capability if flag and bits & flag and flag.name]
    unknown = int(bits) & ~int(ALL_CAPABILITIES) & CAPABILITY_BITS
    if unknown:
        names.append(f"{unknown:#x}")
    return "|".join(names) or "none"


class HandshakeError(ValueError):
    """The handshake failed; `code` says why (and is what the connection closes with)."""

    def __init__(self, code: CloseCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class HandshakeRejected(HandshakeError):
    """The responder answered with a Reject. Its lists are unauthenticated hints for a retry."""

    def __init__(self, code: CloseCode, versions: tuple[int, ...], suites: tuple[int, ...]) -> None:
        super().__init__(
            code,
            f"responder rejected the handshake ({code.name}); it offers versions {list(versions)} "
            f"and suites {list(suites)}",
        )
        self.versions = versions
        self.suites = suites
