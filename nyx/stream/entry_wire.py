"""What an entry gateway sends its clients besides mix deliveries: a refusal, sans-I/O.

Over a client's QUIC connection the gateway sends three kinds of datagram, told apart by the
first byte:

    0x02 | message                     a message delivered to the client (its loop cover coming back)
    0x03 | surb id (16) | reply body   a reply on one of the client's SURBs (`nyx.mix.node.encode_delivery`)
    0x10 | reason u8 | text (UTF-8)    the gateway refuses this client; the connection closes after it

A refusal says why in a way a program can act on (`RefusalReason`) and a person can read (the
text, at most `MAX_TEXT_BYTES`). It is advisory: the connection closing is what enforces it, so a
lost refusal costs the client only the reason, never the gateway its limit.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

__all__ = ["MAX_TEXT_BYTES", "REFUSAL", "Refusal", "RefusalReason", "decode_refusal", "encode_refusal"]

REFUSAL: Final = 0x10
MAX_TEXT_BYTES: Final = 200


class RefusalReason(enum.IntEnum):
    """Why a gateway refuses a client (unknown values read as OTHER)."""

    OTHER = 0
    RATE_LIMITED = 1  # too many client handshakes from this source address (ClientAdmission)
    FULL = 2  # the gateway holds as many clients as it is configured for
    DRAINING = 3  # the gateway is stopping; pick another


@dataclass(frozen=True, slots=True)
class Refusal:
    reason: RefusalReason
    text: str


def encode_refusal(reason: RefusalReason, text: str) -> bytes:
    raw = text.encode("utf-8")[:MAX_TEXT_BYTES]
    return bytes((REFUSAL, int(reason))) + raw


def decode_refusal(datagram: bytes) -> Refusal | None:
    """The refusal in `datagram`, or None if it is not one (any bytes: never raises)."""
    if len(datagram) < 2 or datagram[0] != REFUSAL:
        return None
    try:
        reason = RefusalReason(datagram[1])
    except ValueError:
        reason = RefusalReason.OTHER
    text = datagram[2 : 2 + MAX_TEXT_BYTES].decode("utf-8", errors="replace")
    return Refusal(reason, "".join(c if c.isprintable() else "?" for c in text))
