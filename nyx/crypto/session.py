"""ChaCha20-Poly1305 records for an established session: nonces, anti-replay, rekey.

Sans-I/O: `seal(plaintext, now)` and `open(record, now)` take bytes and a clock and return bytes.

Record = header || ciphertext || 16-byte tag, header = key epoch (u32) || sequence (u64), and the
header is authenticated as associated data. The nonce is the 4-byte direction identifier followed
by the 64-bit sequence, so the two directions can never share a nonce even if their keys matched,
and a record reflected back to its sender fails to open.

Each direction's keys form a chain (like TLS 1.3 KeyUpdate): the epoch-e chain secret gives the
record key of epoch e and the chain secret of epoch e + 1. The sender moves to the next epoch
after 1 GiB, 2^20 records or 10 minutes, whichever comes first. The receiver follows when a
record of a later epoch authenticates (never on the header alone, so a forged header cannot make
it drop a key), and keeps the keys it moved past for a grace period so that records still in
flight on slow mix paths open. Sequence numbers run on across epochs, so one replay window covers
them all.

Losing packets is normal on mix paths, and a sparse sender may put only one record in an epoch:
if that record is lost the next one arrives under epoch e + 2. The receiver therefore accepts a
forward jump of up to `RekeyPolicy.max_epoch_jump` epochs, deriving the chain forward. The bound
and a cache of the epochs derived ahead keep a forged header from costing more than that many
derivations over the whole session (about 10 us each), however often it is sent.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from nyx.crypto.errors import CryptoError, RecordError
from nyx.crypto.kdf import LABEL_KEY_UPDATE, LABEL_RECORD_KEY, derive
from nyx.crypto.replay_window import ReplayWindow

HEADER = struct.Struct(">IQ")
TAG_SIZE = 16
OVERHEAD = HEADER.size + TAG_SIZE
MAX_SEQUENCE = (1 << 64) - 1

# Direction identifiers placed in the nonce (ASCII "I2R " and "R2I ").
DIRECTION_I2R = 0x49325220
DIRECTION_R2I = 0x52324920


@dataclass(frozen=True, slots=True)
class RekeyPolicy:
    """When a sender moves to its next key, and how long a receiver keeps the previous one."""

    max_bytes: int = 1 << 30
    max_records: int = 1 << 20
    max_age_s: float = 600.0
    previous_key_grace_s: float = 30.0
    replay_window: int = 1 << 20
    max_epoch_jump: int = 16

    def __post_init__(self) -> None:
        if self.max_epoch_jump < 1:
            raise ValueError(f"max_epoch_jump must be at least 1 (the next epoch), got {self.max_epoch_jump}")


class _Epoch:
    """One epoch of a direction's key chain: its AEAD and the secret of the next epoch."""

    __slots__ = ("number", "aead", "_chain_secret")

    def __init__(self, number: int, chain_secret: bytes) -> None:
        self.number = number
        self.aead = ChaCha20Poly1305(derive(chain_secret, LABEL_RECORD_KEY))
        self._chain_secret = chain_secret

    def next(self) -> _Epoch:
        return _Epoch(self.number + 1, derive(self._chain_secret, LABEL_KEY_UPDATE))

    def __repr__(self) -> str:
        return f"<epoch {self.number}>"


class RecordSession:
    """Both directions of one session's record protection."""

    __slots__ = (
        "policy", "_send_prefix", "_receive_prefix", "_send", "_send_started", "_send_seq",
        "_epoch_records", "_epoch_bytes", "_receive", "_receive_ahead", "_receive_past", "_window",
    )

    def __init__(
        self,
        send_secret: bytes,
        receive_secret: bytes,
        *,
        send_direction: int,
        receive_direction: int,
        now: float,
        policy: RekeyPolicy = RekeyPolicy(),
    ) -> None:
        if send_direction == receive_direction:
            raise ValueError("the two directions of a session need different identifiers")
        self.policy = policy
        self._send_prefix = send_direction.to_bytes(4, "big")
        self._receive_prefix = receive_direction.to_bytes(4, "big")
        self._send = _Epoch(0, send_secret)
        self._send_started = now
        self._send_seq = 0
        self._epoch_records = 0
        self._epoch_bytes = 0
        self._receive = _Epoch(0, receive_secret)
        # Epochs current + 1, current + 2, ... derived so far (at most max_epoch_jump of them).
        self._receive_ahead: list[_Epoch] = []
        # Epochs the receiver moved past, by number: (key, accepted until).
        self._receive_past: dict[int, tuple[_Epoch, float]] = {}
        self._window = ReplayWindow(policy.replay_window)

    @property
    def send_epoch(self) -> int:
        return self._send.number

    @property
    def receive_epoch(self) -> int:
        return self._receive.number

    def seal(self, plaintext: bytes, now: float, associated_data: bytes = b"") -> bytes:
        """Encrypt one record, moving to the next key first if the policy says so."""
        policy = self.policy
        if (
            self._epoch_records >= policy.max_records
            or self._epoch_bytes >= policy.max_bytes
            or now - self._send_started >= policy.max_age_s
        ):
            self._send = self._send.next()
            self._send_started = now
            self._epoch_records = self._epoch_bytes = 0
        seq = self._send_seq
        if seq > MAX_SEQUENCE:
            raise CryptoError("record sequence numbers exhausted; start a new session")
        self._send_seq = seq + 1
        self._epoch_records += 1
        self._epoch_bytes += len(plaintext)
        header = HEADER.pack(self._send.number, seq)
        nonce = self._send_prefix + header[4:]
        return header + self._send.aead.encrypt(nonce, plaintext, header + associated_data)

    def open(self, record: bytes, now: float, associated_data: bytes = b"") -> bytes:
        """Authenticate and decrypt one record; RecordError (with a `reason`) on any failure."""
        if len(record) < OVERHEAD:
            raise RecordError("malformed", f"record of {len(record)} bytes is shorter than {OVERHEAD}")
        epoch_number, seq = HEADER.unpack_from(record)
        window = self._window
        if not window.is_fresh(seq):
            if window.is_too_old(seq):
                raise RecordError("too_old", f"record {seq} is older than the replay window")
            raise RecordError("replay", f"record {seq} was already received")
        epoch = self._epoch_for(epoch_number, now)
        header = record[: HEADER.size]
        nonce = self._receive_prefix + header[4:]
        try:
            plaintext = epoch.aead.decrypt(nonce, record[HEADER.size :], header + associated_data)
        except InvalidTag:
            raise RecordError("auth", f"record {seq} of epoch {epoch_number} failed authentication") from None
        window.mark(seq)
        if epoch.number > self._receive.number:  # the peer has moved on: follow it
            self._advance_to(epoch, now)
        return plaintext

    def _epoch_for(self, number: int, now: float) -> _Epoch:
        current = self._receive
        if number == current.number:
            return current
        jump = number - current.number
        if 0 < jump <= self.policy.max_epoch_jump:
            ahead = self._receive_ahead
            while len(ahead) < jump:  # derived once per epoch, whatever a forger sends
                ahead.append((ahead[-1] if ahead else current).next())
            return ahead[jump - 1]
        past = self._receive_past.get(number)
        if past is not None and now <= past[1]:
            return past[0]
        if jump > 0:
            raise RecordError(
                "epoch",
                f"record key epoch {number} is {jump} epochs ahead of the current {current.number}; "
                f"at most {self.policy.max_epoch_jump} are derived",
            )
        raise RecordError("epoch", f"record key epoch {number} is not usable (current {current.number})")

    def _advance_to(self, epoch: _Epoch, now: float) -> None:
        """Make `epoch` current; the epochs moved past stay usable for the grace period."""
        until = now + self.policy.previous_key_grace_s
        past = {n: entry for n, entry in self._receive_past.items() if entry[1] >= now}
        jump = epoch.number - self._receive.number
        for moved_past in (self._receive, *self._receive_ahead[: jump - 1]):
            past[moved_past.number] = (moved_past, until)
        self._receive_past = past
        self._receive = epoch
        self._receive_ahead = self._receive_ahead[jump:]
