"""The initiator (client) side of the 1-RTT handshake, sans-I/O.

    initiator = Initiator({Suite.HYBRID: gateway_xwing_key}, name="gw-3")
    init = initiator.start(time.time())          # send
    finish, keys = initiator.receive(accept)     # send `finish` with the first data
    session = keys.record_session(now)

If the responder answers with a Reject, `receive` raises `HandshakeRejected`; for a version or
suite mismatch the caller may call `retry` once, which builds a new Init that names the rejected
attempt. The real responder refuses such a retry if it would have accepted the first attempt
(DOWNGRADE), so a forged Reject cannot push the initiator to a weaker suite.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

from nyx.crypto.errors import KemError
from nyx.crypto.kdf import mac, mac_ok, transcript_hash
from nyx.crypto.kem import PrivateKey
from nyx.crypto.suites import DEFAULT_PREFERENCE, Suite
from nyx.stream.handshake import messages
from nyx.stream.handshake.errors import (
    ALL_CAPABILITIES,
    Capability,
    CloseCode,
    HandshakeError,
    HandshakeRejected,
    describe_capabilities,
    missing_capabilities,
)
from nyx.stream.handshake.keys import SessionKeys, confirm_keys, session_keys

RETRYABLE = (CloseCode.UNSUPPORTED_VERSION, CloseCode.UNSUPPORTED_SUITE)


def key_id(public_key: bytes) -> bytes:
    """The 8-byte identifier of a responder static key: which key an Init encapsulates to."""
    return hashlib.sha256(public_key).digest()[: messages.KEY_ID_SIZE]


class Initiator:
    """One handshake attempt (plus at most one retry) towards one responder."""

    def __init__(
        self,
        responder_keys: Mapping[Suite, bytes],
        *,
        preference: Sequence[Suite] = DEFAULT_PREFERENCE,
        versions: Sequence[int] = messages.SUPPORTED_VERSIONS,
        required_caps: Capability = Capability.NONE,
        name: str = "the responder",
        backend: str | None = None,
    ) -> None:
        """`responder_keys`: the responder's static public key per suite, from the directory.

        `preference` lists the suites this initiator accepts, best first; it is sent as the
        offer. `name` appears in error messages (e.g. the gateway's directory id).
        """
        self._preference = tuple(Suite(s) for s in preference)
        self._candidates = [s for s in self._preference if s in responder_keys]
        if not self._candidates:
            raise ValueError(
                f"no suite in common: {name} has keys for {[s.label for s in responder_keys]}, "
                f"this initiator accepts {[s.label for s in self._preference]}"
            )
        for suite in self._candidates:
            expected = suite.kem(backend).public_key_size
            if len(responder_keys[suite]) != expected:
                raise ValueError(f"{name}'s {suite.label} key must be {expected} bytes, got {len(responder_keys[suite])}")
        unknown = missing_capabilities(required_caps, ALL_CAPABILITIES)
        if unknown:
            raise ValueError(f"cannot require capabilities {unknown:#x}: this build does not implement them")
        self._responder_keys = dict(responder_keys)
        self._versions = sorted(set(versions), reverse=True)
        self._required_caps = required_caps
        self._name = name
        self._backend = backend
        self._version = self._versions[0]
        self._suite = self._candidates[0]
        self._previous = (0, 0)
        self._state = "new"
        self._init = b""
        self._ephemeral: PrivateKey | None = None
        self._ss_static = b""

    @property
    def suite(self) -> Suite:
        """The suite of the current attempt."""
        return self._suite

    @property
    def version(self) -> int:
        return self._version

    def start(self, now: float) -> bytes:
        """The Init message. `now` is wall-clock time in seconds (`time.time()`)."""
        if self._state != "new":
            raise HandshakeError(CloseCode.MALFORMED, "start() may be called once; use retry() after a Reject")
        return self._send_init(now)

    def _send_init(self, now: float) -> bytes:
        kem = self._suite.kem(self._backend)
        responder_key = self._responder_keys[self._suite]
        ephemeral, ephemeral_public = kem.generate()
        static_ciphertext, self._ss_static = kem.encapsulate(responder_key)
        self._ephemeral = ephemeral
        self._init = messages.Init(
            version=self._version,
            suite=self._suite,
            offered=tuple(int(s) for s in self._preference),
            prev_version=self._previous[0],
            prev_suite=self._previous[1],
            required_caps=int(self._required_caps),
            timestamp_s=int(now) & 0xFFFFFFFF,
            responder_key_id=key_id(responder_key),
            ephemeral_public_key=ephemeral_public,
            static_ciphertext=static_ciphertext,
        ).encode()
        self._state = "sent"
        return self._init

    def receive(self, message: bytes) -> tuple[bytes, SessionKeys]:
        """Process the responder's answer: (Finish message, session keys), or raise.

        Raises HandshakeRejected for a Reject and HandshakeError for anything else that is wrong,
        including a responder that cannot prove it holds the directory's key.
        """
        if self._state != "sent":
            raise HandshakeError(CloseCode.MALFORMED, f"no handshake in progress (state {self._state})")
        if message[:1] == bytes((messages.TYPE_REJECT,)):
            reject = messages.parse_reject(message)
            self._state = "rejected"
            raise HandshakeRejected(reject.code, reject.versions, reject.suites)
        try:
            accept = messages.parse_accept(message, self._suite)
            if accept.version != self._version:
                raise HandshakeError(CloseCode.MALFORMED, f"Accept is for version {accept.version}, not {self._version}")
            assert self._ephemeral is not None
            try:
                ss_ephemeral = self._suite.kem(self._backend).decapsulate(self._ephemeral, accept.ephemeral_ciphertext)
            except KemError as error:
                raise HandshakeError(CloseCode.MALFORMED, f"Accept ciphertext rejected: {error}") from None
            keys = confirm_keys(self._ss_static, ss_ephemeral, self._init, accept.body())
            if not mac_ok(keys.responder_key, keys.th2, accept.confirm):
                raise HandshakeError(
                    CloseCode.AUTH_FAILED,
                    f"{self._name} failed key confirmation: it does not hold the static key the directory "
                    "lists for it, or a handshake message was altered in flight",
                )
            missing = missing_capabilities(self._required_caps, accept.capabilities)
            if missing:  # authenticated above: the responder itself accepted without them
                raise HandshakeError(
                    CloseCode.UNSUPPORTED_CAPABILITY,
                    f"{self._name} accepted but lacks required capabilities {describe_capabilities(missing)}",
                )
        except HandshakeError:
            self._forget("failed")
            raise
        th3 = transcript_hash(self._init, message)
        finish = messages.encode_finish(mac(keys.initiator_key, th3))
        result = session_keys("initiator", self._version, self._suite, accept.capabilities, keys.prk, th3)
        self._forget("done")
        return finish, result

    def retry(self, rejection: HandshakeRejected, now: float) -> bytes:
        """A new Init after a version or suite Reject, naming the rejected attempt (once only)."""
        if self._state != "rejected":
            raise HandshakeError(CloseCode.MALFORMED, "retry() follows a Reject only")
        if rejection.code not in RETRYABLE:
            raise rejection
        if self._previous != (0, 0):
            raise HandshakeError(rejection.code, f"{self._name} rejected the retry as well: {rejection}")
        previous = (self._version, int(self._suite))
        if rejection.code is CloseCode.UNSUPPORTED_VERSION:
            common = [v for v in self._versions if v in rejection.versions and v != self._version]
            if not common:
                raise HandshakeError(CloseCode.UNSUPPORTED_VERSION, f"no protocol version in common with {self._name}")
            self._version = common[0]
        else:
            common_suites = [s for s in self._candidates if s in rejection.suites and s != self._suite]
            if not common_suites:
                raise HandshakeError(CloseCode.UNSUPPORTED_SUITE, f"no suite in common with {self._name}")
            self._suite = common_suites[0]
        self._previous = previous
        return self._send_init(now)

    def _forget(self, state: str) -> None:
        # Drop the ephemeral private key and the static secret as soon as they are no longer
        # needed: forward secrecy depends on the ephemeral key not outliving the handshake.
        self._ephemeral = None
        self._ss_static = b""
        self._state = state
