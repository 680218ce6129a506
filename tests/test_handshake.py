"""The 1-RTT handshake: each security property has a test that fails without it."""

from __future__ import annotations

import functools

import pytest
from cryptography.hazmat.primitives.asymmetric import mlkem
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from nyx.crypto.kdf import transcript_hash
from nyx.crypto.kem import PrivateKey
from nyx.crypto.suites import Suite
from nyx.stream.handshake import (
    Capability,
    CloseCode,
    HandshakeError,
    HandshakeRejected,
    InitReplayCache,
    Initiator,
    Responder,
)
from nyx.stream.handshake import messages
from nyx.crypto.xwing import _combine
from nyx.stream.handshake.keys import confirm_keys, session_keys

NOW = 1_800_000_000.0


@functools.cache
def static_key(suite: Suite, index: int = 0) -> tuple[PrivateKey, bytes]:
    return suite.kem().generate()


def run(initiator: Initiator, responder: Responder, now: float = NOW):
    init = initiator.start(now)
    accept, pending = responder.respond(init, now)
    finish, initiator_keys = initiator.receive(accept)
    return initiator_keys, pending.finish(finish), (init, accept, finish)


def parties(suite: Suite = Suite.HYBRID, **responder_options) -> tuple[Initiator, Responder]:
    private_key, public_key = static_key(suite)
    return Initiator({suite: public_key}, preference=(suite,)), Responder({suite: private_key}, **responder_options)


@pytest.mark.parametrize("suite", list(Suite))
def test_both_sides_derive_the_same_session_and_records_flow(suite: Suite) -> None:
    initiator_keys, responder_keys, _ = run(*parties(suite))
    assert initiator_keys.session_id == responder_keys.session_id
    assert initiator_keys.suite is responder_keys.suite is suite
    client, gateway = initiator_keys.record_session(0.0), responder_keys.record_session(0.0)
    assert gateway.open(client.seal(b"ping", 0.0), 0.0) == b"ping"
    assert client.open(gateway.seal(b"pong", 0.0), 0.0) == b"pong"


def test_hybrid_is_the_default_suite() -> None:
    keys = {suite: static_key(suite)[1] for suite in (Suite.CLASSIC, Suite.HYBRID)}
    assert Initiator(keys).suite is Suite.HYBRID


def test_session_keys_never_print_secrets() -> None:
    initiator_keys, _, _ = run(*parties(Suite.CLASSIC))
    text = repr(initiator_keys)
    assert initiator_keys.i2r_secret.hex()[:12] not in text and initiator_keys.r2i_secret.hex()[:12] not in text


# --- responder authentication ------------------------------------------------------------------


def test_initiator_with_a_different_static_key_is_refused_by_the_responder() -> None:
    _, stale_public = Suite.HYBRID.kem().generate()
    initiator = Initiator({Suite.HYBRID: stale_public})
    responder = Responder({Suite.HYBRID: static_key(Suite.HYBRID)[0]})
    with pytest.raises(HandshakeError) as error:
        responder.respond(initiator.start(NOW), NOW)
    assert error.value.code is CloseCode.UNKNOWN_RESPONDER_KEY


@pytest.mark.parametrize("suite", list(Suite))
def test_impostor_without_the_directory_key_fails_key_confirmation(suite: Suite) -> None:
    real_private, real_public = static_key(suite)
    impostor_private, _ = suite.kem().generate()
    # The impostor answers for the real key id but holds a different private key.
    impostor_private.public_key = real_public
    impostor = Responder({suite: impostor_private})
    initiator = Initiator({suite: real_public}, preference=(suite,), name="gw-3")
    accept, _ = impostor.respond(initiator.start(NOW), NOW)
    with pytest.raises(HandshakeError, match="gw-3 failed key confirmation") as error:
        initiator.receive(accept)
    assert error.value.code is CloseCode.AUTH_FAILED


# --- forward secrecy and post-quantum confidentiality -------------------------------------------


def test_every_handshake_uses_a_fresh_ephemeral_key() -> None:
    public_key = static_key(Suite.HYBRID)[1]
    inits = [Initiator({Suite.HYBRID: public_key}).start(NOW) for _ in range(3)]
    ephemerals = {messages.parse_init(init).ephemeral_public_key for init in inits}
    assert len(ephemerals) == 3


def test_static_key_and_transcript_alone_do_not_give_the_session_keys() -> None:
    suite = Suite.HYBRID
    static_private, static_public = static_key(suite)
    initiator = Initiator({suite: static_public})
    init = initiator.start(NOW)
    ephemeral = initiator._ephemeral  # captured only to prove what an attacker would lack
    accept, pending = Responder({suite: static_private}).respond(init, NOW)
    _, keys = initiator.receive(accept)
    assert initiator._ephemeral is None, "the ephemeral private key must not outlive the handshake"

    kem = suite.kem()
    parsed_init, parsed_accept = messages.parse_init(init), messages.parse_accept(accept, suite)
    ss_static = kem.decapsulate(static_private, parsed_init.static_ciphertext)  # attacker has this
    th3 = transcript_hash(init, accept)

    def keys_from(ss_ephemeral: bytes) -> bytes:
        prk = confirm_keys(ss_static, ss_ephemeral, init, parsed_accept.body()).prk
        return session_keys("initiator", 1, suite, 0, prk, th3).i2r_secret

    assert ephemeral is not None
    true_ephemeral = kem.decapsulate(ephemeral, parsed_accept.ephemeral_ciphertext)
    assert keys_from(true_ephemeral) == keys.i2r_secret  # the model of the schedule is right
    assert keys_from(bytes(32)) != keys.i2r_secret
    assert keys_from(ss_static) != keys.i2r_secret


def test_hybrid_keys_depend_on_mlkem_so_breaking_x25519_is_not_enough() -> None:
    # An attacker who can compute every X25519 secret (a quantum adversary) still lacks ML-KEM's.
    suite = Suite.HYBRID
    static_private, static_public = static_key(suite)
    initiator = Initiator({suite: static_public})
    init = initiator.start(NOW)
    ephemeral = initiator._ephemeral
    accept, _ = Responder({suite: static_private}).respond(init, NOW)
    _, keys = initiator.receive(accept)
    parsed_init, parsed_accept = messages.parse_init(init), messages.parse_accept(accept, suite)
    th3 = transcript_hash(init, accept)

    def xwing_secret(private: PrivateKey, ciphertext: bytes, ss_m: bytes | None) -> bytes:
        material = private.material
        ct_x = ciphertext[1088:]
        ss_x = material.x25519_key.exchange(X25519PublicKey.from_public_bytes(ct_x))
        if ss_m is None:  # the real ML-KEM secret, via OpenSSL directly
            ss_m = material.mlkem_key.material.decapsulate(ciphertext[:1088])
        return _combine(ss_m, ss_x, ct_x, material.x25519_public)

    def keys_with(ss_m_static: bytes | None, ss_m_ephemeral: bytes | None) -> bytes:
        assert ephemeral is not None
        ss_s = xwing_secret(static_private, parsed_init.static_ciphertext, ss_m_static)
        ss_e = xwing_secret(ephemeral, parsed_accept.ephemeral_ciphertext, ss_m_ephemeral)
        prk = confirm_keys(ss_s, ss_e, init, parsed_accept.body()).prk
        return session_keys("initiator", 1, suite, 0, prk, th3).i2r_secret

    assert keys_with(None, None) == keys.i2r_secret
    assert keys_with(bytes(32), None) != keys.i2r_secret
    assert keys_with(None, bytes(32)) != keys.i2r_secret
    assert isinstance(static_private.material.mlkem_key.material, mlkem.MLKEM768PrivateKey)


@pytest.mark.parametrize("suite", [Suite.HYBRID, Suite.PQ, Suite.PQ_ALT])
def test_post_quantum_suites_are_marked_and_classic_is_not(suite: Suite) -> None:
    assert suite.post_quantum and not Suite.CLASSIC.post_quantum
    assert suite.kem_name in {"xwing", "ml-kem-1024", "hqc-128"}


# --- key confirmation and transcript binding ----------------------------------------------------


def test_altered_accept_tag_fails_at_the_initiator() -> None:
    initiator, responder = parties(Suite.CLASSIC)
    accept, _ = responder.respond(initiator.start(NOW), NOW)
    with pytest.raises(HandshakeError) as error:
        initiator.receive(accept[:-1] + bytes([accept[-1] ^ 1]))
    assert error.value.code is CloseCode.AUTH_FAILED


def test_altered_finish_fails_at_the_responder_and_yields_no_keys() -> None:
    initiator, responder = parties(Suite.CLASSIC)
    accept, pending = responder.respond(initiator.start(NOW), NOW)
    finish, _ = initiator.receive(accept)
    with pytest.raises(HandshakeError) as error:
        pending.finish(finish[:-1] + bytes([finish[-1] ^ 1]))
    assert error.value.code is CloseCode.AUTH_FAILED
    with pytest.raises(HandshakeError, match="already finished"):
        pending.finish(finish)  # no second chance


def _flip_positions(length: int, exhaustive: bool) -> list[int]:
    if exhaustive:
        return list(range(length))
    return sorted(set(range(64)) | set(range(64, length, 37)) | {length - 1})


@pytest.mark.parametrize("suite", list(Suite))
def test_flipping_any_byte_of_init_fails_the_handshake(suite: Suite) -> None:
    private_key, public_key = static_key(suite)
    responder = Responder({suite: private_key}, replay_cache=InitReplayCache(capacity=1 << 20))
    exhaustive = suite is Suite.CLASSIC
    init_length = len(Initiator({suite: public_key}, preference=(suite,)).start(NOW))
    for position in _flip_positions(init_length, exhaustive):
        initiator = Initiator({suite: public_key}, preference=(suite,))
        init = bytearray(initiator.start(NOW))
        init[position] ^= 0x01
        try:
            accept, pending = responder.respond(bytes(init), NOW)
        except HandshakeError:
            continue
        with pytest.raises(HandshakeError):
            initiator.receive(accept)


@pytest.mark.parametrize("suite", list(Suite))
def test_flipping_any_byte_of_accept_fails_the_handshake(suite: Suite) -> None:
    private_key, public_key = static_key(suite)
    responder = Responder({suite: private_key}, replay_cache=InitReplayCache(capacity=1 << 20))
    initiator = Initiator({suite: public_key}, preference=(suite,))
    accept, _ = responder.respond(initiator.start(NOW), NOW)
    for position in _flip_positions(len(accept), suite is Suite.CLASSIC):
        fresh = Initiator({suite: public_key}, preference=(suite,))
        accept, _ = responder.respond(fresh.start(NOW), NOW)
        altered = bytearray(accept)
        altered[position] ^= 0x01
        with pytest.raises(HandshakeError):
            fresh.receive(bytes(altered))


def test_flipping_any_byte_of_finish_fails_the_handshake() -> None:
    initiator, responder = parties(Suite.CLASSIC)
    accept, _ = responder.respond(initiator.start(NOW), NOW)
    finish, _ = initiator.receive(accept)
    for position in range(len(finish)):
        fresh_initiator, _ = parties(Suite.CLASSIC)
        accept, pending = responder.respond(fresh_initiator.start(NOW), NOW)
        finish, _ = fresh_initiator.receive(accept)
        altered = bytearray(finish)
        altered[position] ^= 0x01
        with pytest.raises(HandshakeError):
            pending.finish(bytes(altered))


# --- negotiation and downgrade protection --------------------------------------------------------


def test_stripping_xwing_from_the_offer_is_detected() -> None:
    # The directory entry lacks a hybrid key, so the initiator selects classic but offers hybrid too.
    private_key, public_key = static_key(Suite.CLASSIC)
    initiator = Initiator({Suite.CLASSIC: public_key}, preference=(Suite.HYBRID, Suite.CLASSIC))
    init = bytearray(initiator.start(NOW))
    offered = messages.parse_init(bytes(init)).offered
    assert offered == (Suite.HYBRID, Suite.CLASSIC)
    init[6] = Suite.PQ  # the man in the middle rewrites "hybrid" in the offer
    accept, _ = Responder({Suite.CLASSIC: private_key}).respond(bytes(init), NOW)
    with pytest.raises(HandshakeError) as error:
        initiator.receive(accept)
    assert error.value.code is CloseCode.AUTH_FAILED


def test_forged_suite_reject_cannot_downgrade_a_hybrid_handshake() -> None:
    keys = {suite: static_key(suite) for suite in (Suite.HYBRID, Suite.CLASSIC)}
    initiator = Initiator({s: k[1] for s, k in keys.items()}, preference=(Suite.HYBRID, Suite.CLASSIC))
    responder = Responder({s: k[0] for s, k in keys.items()})
    initiator.start(NOW)  # dropped by the attacker, who answers instead:
    forged = messages.Reject(CloseCode.UNSUPPORTED_SUITE, (1,), (Suite.CLASSIC,)).encode()
    with pytest.raises(HandshakeRejected) as rejected:
        initiator.receive(forged)
    retry = initiator.retry(rejected.value, NOW)
    assert initiator.suite is Suite.CLASSIC
    with pytest.raises(HandshakeError) as error:
        responder.respond(retry, NOW)
    assert error.value.code is CloseCode.DOWNGRADE


def test_a_genuine_suite_reject_leads_to_a_successful_retry() -> None:
    keys = {suite: static_key(suite) for suite in (Suite.HYBRID, Suite.CLASSIC)}
    initiator = Initiator({s: k[1] for s, k in keys.items()}, preference=(Suite.HYBRID, Suite.CLASSIC))
    responder = Responder({s: k[0] for s, k in keys.items()}, suites=(Suite.CLASSIC,))
    with pytest.raises(HandshakeError) as refused:
        responder.respond(initiator.start(NOW), NOW)
    assert refused.value.code is CloseCode.UNSUPPORTED_SUITE
    reject = responder.reject(refused.value)
    assert reject is not None
    with pytest.raises(HandshakeRejected) as rejected:
        initiator.receive(reject)
    assert rejected.value.suites == (Suite.CLASSIC,)
    accept, pending = responder.respond(initiator.retry(rejected.value, NOW), NOW)
    finish, keys_i = initiator.receive(accept)
    assert pending.finish(finish).session_id == keys_i.session_id
    assert keys_i.suite is Suite.CLASSIC


def test_unsupported_version_is_rejected_with_its_code_and_the_supported_list() -> None:
    initiator, responder = parties(Suite.CLASSIC)
    init = bytearray(initiator.start(NOW))
    init[1] = 9
    with pytest.raises(HandshakeError) as error:
        responder.respond(bytes(init), NOW)
    assert error.value.code is CloseCode.UNSUPPORTED_VERSION
    reject = messages.parse_reject(responder.reject(error.value) or b"")
    assert reject.code is CloseCode.UNSUPPORTED_VERSION and reject.versions == messages.SUPPORTED_VERSIONS


def test_version_retry_without_a_common_version_is_a_clear_error() -> None:
    initiator, _ = parties(Suite.CLASSIC)
    initiator.start(NOW)
    with pytest.raises(HandshakeRejected) as rejected:
        initiator.receive(messages.Reject(CloseCode.UNSUPPORTED_VERSION, (7,), (1,)).encode())
    with pytest.raises(HandshakeError, match="no protocol version in common"):
        initiator.retry(rejected.value, NOW)


def test_missing_required_capability_is_rejected() -> None:
    private_key, public_key = static_key(Suite.CLASSIC)
    initiator = Initiator({Suite.CLASSIC: public_key}, required_caps=Capability.MULTIPATH | Capability.FEC)
    responder = Responder({Suite.CLASSIC: private_key}, capabilities=Capability.STREAMS | Capability.FEC)
    with pytest.raises(HandshakeError, match="MULTIPATH") as error:
        responder.respond(initiator.start(NOW), NOW)
    assert error.value.code is CloseCode.UNSUPPORTED_CAPABILITY
    assert messages.parse_reject(responder.reject(error.value) or b"").code is CloseCode.UNSUPPORTED_CAPABILITY


def _with_required_caps(init: bytes, required_caps: int) -> bytes:
    """An Init with its required_caps field (u32 after the offer list) replaced."""
    offset = 6 + init[5]
    return init[:offset] + required_caps.to_bytes(4, "big") + init[offset + 4 :]


@pytest.mark.parametrize("unknown_bit", [0x20, 0x10000, 0x80000000])
def test_an_init_requiring_a_capability_bit_this_build_does_not_know_is_refused(unknown_bit: int) -> None:
    initiator, responder = parties(Suite.CLASSIC, capabilities=Capability.STREAMS)
    init = _with_required_caps(initiator.start(NOW), unknown_bit)
    with pytest.raises(HandshakeError, match=f"{unknown_bit:#x}") as error:
        responder.respond(init, NOW)
    assert error.value.code is CloseCode.UNSUPPORTED_CAPABILITY
    assert messages.parse_reject(responder.reject(error.value) or b"").code is CloseCode.UNSUPPORTED_CAPABILITY


def _lax_accept(init: bytes, private_key: PrivateKey, suite: Suite, capabilities: int) -> bytes:
    """What a responder that holds the real key but ignores required_caps would answer."""
    parsed = messages.parse_init(init)
    kem = suite.kem()
    ss_static = kem.decapsulate(private_key, parsed.static_ciphertext)
    ct_e, ss_e = kem.encapsulate(parsed.ephemeral_public_key)
    body = messages.Accept(parsed.version, suite, capabilities, ct_e, b"").body()
    keys = confirm_keys(ss_static, ss_e, init, body)
    from nyx.crypto.kdf import mac

    return body + mac(keys.responder_key, keys.th2)


def test_the_initiator_refuses_an_accept_that_lacks_a_required_capability() -> None:
    private_key, public_key = static_key(Suite.CLASSIC)
    initiator = Initiator({Suite.CLASSIC: public_key}, required_caps=Capability.MULTIPATH)
    accept = _lax_accept(initiator.start(NOW), private_key, Suite.CLASSIC, int(Capability.STREAMS) | 0x80000000)
    with pytest.raises(HandshakeError, match="lacks required capabilities MULTIPATH") as error:
        initiator.receive(accept)
    assert error.value.code is CloseCode.UNSUPPORTED_CAPABILITY


def test_an_accept_advertising_unknown_capabilities_besides_the_required_ones_completes() -> None:
    private_key, public_key = static_key(Suite.CLASSIC)
    initiator = Initiator({Suite.CLASSIC: public_key}, required_caps=Capability.FEC)
    _, keys = initiator.receive(_lax_accept(initiator.start(NOW), private_key, Suite.CLASSIC, 0x40 | int(Capability.FEC)))
    assert int(keys.peer_capabilities) == 0x40 | int(Capability.FEC)


def test_neither_side_can_be_configured_with_capabilities_it_does_not_implement() -> None:
    private_key, public_key = static_key(Suite.CLASSIC)
    with pytest.raises(ValueError, match="0x20"):
        Initiator({Suite.CLASSIC: public_key}, required_caps=Capability(0x21))
    with pytest.raises(ValueError, match="0x100"):
        Responder({Suite.CLASSIC: private_key}, capabilities=Capability(0x101))


def test_capabilities_reach_the_initiator() -> None:
    initiator_keys, _, _ = run(*parties(Suite.CLASSIC, capabilities=Capability.STREAMS | Capability.FEC))
    assert initiator_keys.peer_capabilities == Capability.STREAMS | Capability.FEC


# --- replay of the first message ----------------------------------------------------------------


def test_replayed_init_is_refused() -> None:
    initiator, responder = parties(Suite.CLASSIC)
    init = initiator.start(NOW)
    responder.respond(init, NOW)
    with pytest.raises(HandshakeError) as error:
        responder.respond(init, NOW + 5)
    assert error.value.code is CloseCode.REPLAYED


def test_init_outside_the_window_is_stale() -> None:
    initiator, responder = parties(Suite.CLASSIC, replay_cache=InitReplayCache(window_s=60))
    init = initiator.start(NOW)
    with pytest.raises(HandshakeError, match="check the initiator's clock") as error:
        responder.respond(init, NOW + 61)
    assert error.value.code is CloseCode.STALE


def test_replay_cache_memory_is_bounded_and_expires() -> None:
    cache = InitReplayCache(window_s=10, capacity=3)
    for i in range(3):
        cache.admit(bytes([i]) * 32, 1000, 1000.0)
    with pytest.raises(HandshakeError) as error:
        cache.admit(b"\x09" * 32, 1000, 1000.0)
    assert error.value.code is CloseCode.BUSY
    cache.admit(b"\x09" * 32, 1015, 1015.0)  # the first three have expired
    assert len(cache) == 1


def test_initiator_cannot_be_driven_out_of_order() -> None:
    initiator, responder = parties(Suite.CLASSIC)
    with pytest.raises(HandshakeError, match="no handshake in progress"):
        initiator.receive(b"\x02")
    accept, _ = responder.respond(initiator.start(NOW), NOW)
    initiator.receive(accept)
    with pytest.raises(HandshakeError):
        initiator.receive(accept)
    with pytest.raises(HandshakeError):
        initiator.start(NOW)
