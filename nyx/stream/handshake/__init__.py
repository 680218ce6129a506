"""The 1-RTT KEM-based handshake between a client (initiator) and a gateway (responder).

Sans-I/O: bytes and a clock in, bytes and keys out. See docs/protocol.md for message layouts,
the key schedule and the security argument.
"""

from nyx.stream.handshake.errors import Capability, CloseCode, HandshakeError, HandshakeRejected
from nyx.stream.handshake.initiator import Initiator, key_id
from nyx.stream.handshake.keys import SessionKeys
from nyx.stream.handshake.replay_cache import InitReplayCache
from nyx.stream.handshake.responder import PendingSession, Responder

__all__ = [
    "Capability",
    "CloseCode",
    "HandshakeError",
    "HandshakeRejected",
    "InitReplayCache",
    "Initiator",
    "PendingSession",
    "Responder",
    "SessionKeys",
    "key_id",
]
