"""The responder (gateway) side of the 1-RTT handshake, sans-I/O.

    responder = Responder({Suite.HYBRID: xwing_private_key, Suite.CLASSIC: x25519_private_key})
    try:
        accept, pending = responder.respond(init, time.time())     # send `accept`
    except HandshakeError as error:
        send(responder.reject(error)); close(error.code)
    keys = pending.finish(finish)                                   # initiator confirmed

The responder checks the cheap things first (version, suite, capabilities, key id, replay) and
only then spends a decapsulation, so junk costs it little.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from nyx.crypto.errors import KemError
from nyx.crypto.kdf import mac, mac_ok, transcript_hash
from nyx.crypto.kem import PrivateKey
from nyx.crypto.suites import Suite
from nyx.stream.handshake import messages
from nyx.stream.handshake.errors import (
    ALL_CAPABILITIES,
    Capability,
    CloseCode,
    HandshakeError,
    describe_capabilities,
    missing_capabilities,
)
from nyx.stream.handshake.initiator import key_id
from nyx.stream.handshake.keys import SessionKeys, session_keys
from nyx.stream.handshake.keys import confirm_keys as _confirm_keys
from nyx.stream.handshake.replay_cache import InitReplayCache

#: Codes for which the responder answers with a Reject before closing.
REJECTABLE = frozenset(
    {
        CloseCode.UNSUPPORTED_VERSION,
        CloseCode.UNSUPPORTED_SUITE,
        CloseCode.UNSUPPORTED_CAPABILITY,
        CloseCode.UNKNOWN_RESPONDER_KEY,
        CloseCode.STALE,
        CloseCode.BUSY,
        CloseCode.DOWNGRADE,
    }
)


class PendingSession:
    """A handshake the responder answered; it completes when the initiator's Finish checks out."""

    def __init__(self, confirm_key: bytes, th3: bytes, keys: SessionKeys) -> None:
        self._confirm_key = confirm_key
        self._th3 = th3
        self._keys: SessionKeys | None = keys

    def finish(self, message: bytes) -> SessionKeys:
        """Check the initiator's key confirmation and return the session keys (once)."""
        keys = self._keys
        if keys is None:
            raise HandshakeError(CloseCode.MALFORMED, "this handshake was already finished or failed")
        self._keys = None
        tag = messages.parse_finish(message)
        if not mac_ok(self._confirm_key, self._th3, tag):
            raise HandshakeError(CloseCode.AUTH_FAILED, "initiator failed key confirmation (altered transcript)")
        return keys


class Responder:
    """Answers Init messages with the static keys it holds (several per suite during rotation)."""

    def __init__(
        self,
        static_keys: Mapping[Suite, PrivateKey],
        *,
        suites: tuple[Suite, ...] | None = None,
        versions: tuple[int, ...] = messages.SUPPORTED_VERSIONS,
        capabilities: Capability = ALL_CAPABILITIES,
        replay_cache: InitReplayCache | None = None,
        backend: str | None = None,
    ) -> None:
        """`suites`: the suites accepted (default: every suite a key is given for)."""
        self._keys: dict[bytes, tuple[Suite, PrivateKey]] = {}
        for suite, private_key in static_keys.items():
            self.add_key(Suite(suite), private_key)
        self.suites = tuple(suites) if suites is not None else tuple(Suite(s) for s in static_keys)
        self.versions = tuple(versions)
        unknown = missing_capabilities(capabilities, ALL_CAPABILITIES)
        if unknown:
            raise ValueError(f"this build does not implement capabilities {unknown:#x}; it cannot advertise them")
        self.capabilities = Capability(capabilities)
        self.replay_cache = replay_cache if replay_cache is not None else InitReplayCache()
        self._backend = backend

    def add_key(self, suite: Suite, private_key: PrivateKey) -> None:
        """Hold another static key (e.g. the next one during a key rotation)."""
        if private_key.kem_name != suite.kem_name:
            raise ValueError(f"a {private_key.kem_name} key cannot serve the {suite.label} suite")
        self._keys[key_id(private_key.public_key)] = (suite, private_key)

    def remove_key(self, public_key: bytes) -> None:
        """Stop accepting handshakes to this static key (the end of a rotation)."""
        self._keys.pop(key_id(public_key), None)

    def respond(self, message: bytes, now: float) -> tuple[bytes, PendingSession]:
        """Answer an Init with an Accept, or raise HandshakeError. `now`: wall-clock seconds."""
        init = messages.parse_init(message)
        if init.suite not in self.suites:
            raise HandshakeError(CloseCode.UNSUPPORTED_SUITE, f"suite {init.suite.label} is not accepted here")
        if init.prev_version and init.prev_version in self.versions and init.prev_suite in self.suites:
            raise HandshakeError(
                CloseCode.DOWNGRADE,
                "the Init claims an earlier attempt was rejected, but this responder would have accepted it: "
                "a Reject was forged in flight",
            )
        missing = missing_capabilities(init.required_caps, self.capabilities)
        if missing:
            raise HandshakeError(
                CloseCode.UNSUPPORTED_CAPABILITY,
                f"the initiator requires capabilities this responder lacks: {describe_capabilities(missing)}",
            )
        entry = self._keys.get(init.responder_key_id)
        if entry is None or entry[0] is not init.suite:
            raise HandshakeError(
                CloseCode.UNKNOWN_RESPONDER_KEY,
                "the Init is encapsulated to a static key this responder does not hold; refresh the directory",
            )
        self.replay_cache.admit(hashlib.sha256(message).digest(), init.timestamp_s, now)
        kem = init.suite.kem(self._backend)
        try:
            ss_static = kem.decapsulate(entry[1], init.static_ciphertext)
            ephemeral_ciphertext, ss_ephemeral = kem.encapsulate(init.ephemeral_public_key)
        except KemError as error:
            raise HandshakeError(CloseCode.MALFORMED, f"Init key material rejected: {error}") from None
        body = messages.Accept(init.version, init.suite, int(self.capabilities), ephemeral_ciphertext, b"").body()
        keys = _confirm_keys(ss_static, ss_ephemeral, message, body)
        accept = body + mac(keys.responder_key, keys.th2)
        th3 = transcript_hash(message, accept)
        result = session_keys("responder", init.version, init.suite, init.required_caps, keys.prk, th3)
        return accept, PendingSession(keys.initiator_key, th3, result)

    def reject(self, error: HandshakeError) -> bytes | None:
        """The Reject message to send for `error`, or None when the connection just closes."""
        if error.code not in REJECTABLE:
            return None
        return messages.Reject(error.code, self.versions, tuple(int(s) for s in self.suites)).encode()
