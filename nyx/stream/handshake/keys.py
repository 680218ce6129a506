"""The handshake key schedule (docs/protocol.md, "Key schedule").

    prk_s = HKDF-Extract(salt = "nyx/1 handshake", ikm = ss_static)     authenticates the responder
    prk   = HKDF-Extract(salt = prk_s, ikm = ss_ephemeral)              adds forward secrecy
    TH2   = H(Init, Accept without its tag)      TH3 = H(Init, Accept)
    responder confirm key = Expand(prk, "nyx/1 responder confirm", TH2); tag = HMAC(key, TH2)
    initiator confirm key = Expand(prk, "nyx/1 initiator confirm", TH2); tag = HMAC(key, TH3)
    traffic i2r / r2i, session id = Expand(prk, label, TH3)

Every key depends on both KEM secrets and on the full transcript, which includes the version,
the selected suite, the whole offer list and any previous attempt: altering any of them in
flight makes the confirmation tags disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

from nyx.crypto import kdf
from nyx.crypto.session import DIRECTION_I2R, DIRECTION_R2I, RecordSession, RekeyPolicy
from nyx.crypto.suites import Suite
from nyx.stream.handshake.errors import Capability


@dataclass(frozen=True, slots=True)
class ConfirmKeys:
    """The secret and transcript hashes both sides need for key confirmation."""

    prk: bytes
    th2: bytes
    responder_key: bytes
    initiator_key: bytes


def confirm_keys(ss_static: bytes, ss_ephemeral: bytes, init: bytes, accept_body: bytes) -> ConfirmKeys:
    prk = kdf.hkdf_extract(kdf.hkdf_extract(kdf.LABEL_HANDSHAKE_SALT, ss_static), ss_ephemeral)
    th2 = kdf.transcript_hash(init, accept_body)
    return ConfirmKeys(
        prk=prk,
        th2=th2,
        responder_key=kdf.derive(prk, kdf.LABEL_RESPONDER_CONFIRM, th2),
        initiator_key=kdf.derive(prk, kdf.LABEL_INITIATOR_CONFIRM, th2),
    )


@dataclass(frozen=True, slots=True, repr=False)
class SessionKeys:
    """What a completed handshake yields. `repr` shows no secret."""

    role: str  # "initiator" or "responder"
    version: int
    suite: Suite
    session_id: bytes
    peer_capabilities: Capability
    i2r_secret: bytes
    r2i_secret: bytes

    def record_session(self, now: float, policy: RekeyPolicy = RekeyPolicy()) -> RecordSession:
        """The record layer for this side: it sends on its own direction, receives on the other."""
        if self.role == "initiator":
            return RecordSession(
                self.i2r_secret, self.r2i_secret,
                send_direction=DIRECTION_I2R, receive_direction=DIRECTION_R2I, now=now, policy=policy,
            )
        return RecordSession(
            self.r2i_secret, self.i2r_secret,
            send_direction=DIRECTION_R2I, receive_direction=DIRECTION_I2R, now=now, policy=policy,
        )

    def __repr__(self) -> str:
        return f"<SessionKeys {self.role} v{self.version} {self.suite.label} id={self.session_id.hex()}>"


def session_keys(
    role: str, version: int, suite: Suite, peer_capabilities: int, prk: bytes, th3: bytes
) -> SessionKeys:
    return SessionKeys(
        role=role,
        version=version,
        suite=suite,
        session_id=kdf.derive(prk, kdf.LABEL_SESSION_ID, th3, 16),
        peer_capabilities=Capability(peer_capabilities),
        i2r_secret=kdf.derive(prk, kdf.LABEL_TRAFFIC_I2R, th3),
        r2i_secret=kdf.derive(prk, kdf.LABEL_TRAFFIC_R2I, th3),
    )
