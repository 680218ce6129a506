"""Property tests: any bytes into any handshake parser or party give a value or HandshakeError."""

from __future__ import annotations

import functools

from hypothesis import given
from hypothesis import strategies as st

from nyx.crypto.suites import Suite
from nyx.stream.handshake import Capability, CloseCode, HandshakeError, InitReplayCache, Initiator, Responder
from nyx.stream.handshake.errors import ALL_CAPABILITIES
from nyx.stream.handshake import messages

NOW = 1_800_000_000.0


@functools.cache
def keys(suite: Suite):
    return suite.kem().generate()


def _valid_init(suite: Suite) -> bytes:
    return Initiator({suite: keys(suite)[1]}, preference=(suite,)).start(NOW)


def _mutated(data: st.DataObject, base: bytes) -> bytes:
    """A valid message with a few bytes changed, cut or extended: reaches deep parser paths."""
    blob = bytearray(base)
    for _ in range(data.draw(st.integers(0, 4))):
        if blob:
            blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(blob)))
    tail = data.draw(st.binary(max_size=8))
    return bytes(blob[:cut] + tail) if data.draw(st.booleans()) else bytes(blob)


@given(st.binary(max_size=300))
def test_parse_init_of_random_bytes(blob: bytes) -> None:
    try:
        messages.parse_init(blob)
    except HandshakeError:
        pass


@given(st.data())
def test_parse_init_of_mutated_valid_messages(data: st.DataObject) -> None:
    suite = data.draw(st.sampled_from([Suite.CLASSIC, Suite.HYBRID]))
    try:
        init = messages.parse_init(_mutated(data, _valid_init(suite)))
    except HandshakeError:
        return
    assert init.suite in init.offered


@given(st.binary(max_size=1300), st.sampled_from(list(Suite)))
def test_parse_accept_of_random_bytes(blob: bytes, suite: Suite) -> None:
    try:
        messages.parse_accept(blob, suite)
    except HandshakeError:
        pass


@given(st.binary(max_size=64))
def test_parse_finish_and_reject_of_random_bytes(blob: bytes) -> None:
    for parse in (messages.parse_finish, messages.parse_reject):
        try:
            parse(blob)
        except HandshakeError:
            pass


@given(st.data())
def test_responder_answers_any_init_bytes_with_accept_or_handshake_error(data: st.DataObject) -> None:
    suite = data.draw(st.sampled_from([Suite.CLASSIC, Suite.HYBRID]))
    responder = Responder({suite: keys(suite)[0]}, replay_cache=InitReplayCache(capacity=1 << 20))
    blob = data.draw(st.one_of(st.binary(max_size=200), st.just(b"").map(lambda _: _mutated(data, _valid_init(suite)))))
    try:
        accept, _ = responder.respond(blob, NOW)
    except HandshakeError:
        return
    assert accept[0] == messages.TYPE_ACCEPT


@given(st.data())
def test_initiator_handles_any_answer_bytes(data: st.DataObject) -> None:
    suite = data.draw(st.sampled_from([Suite.CLASSIC, Suite.HYBRID]))
    initiator = Initiator({suite: keys(suite)[1]}, preference=(suite,))
    initiator.start(NOW)
    answer = data.draw(st.binary(max_size=1300))
    try:
        initiator.receive(answer)
    except HandshakeError:
        return
    raise AssertionError("random bytes must never complete a handshake")


_U32 = st.one_of(st.integers(0, 0xFF), st.integers(0, 0xFFFFFFFF), st.sampled_from([0x20, 0x80000000, 0xFFFFFFFF]))
_OWN_CAPS = st.integers(0, int(ALL_CAPABILITIES)).map(Capability)


@given(required=_U32, offered=_OWN_CAPS)
def test_a_responder_accepts_exactly_the_inits_whose_required_caps_it_has(required: int, offered: Capability) -> None:
    init = bytearray(_valid_init(Suite.CLASSIC))
    offset = 6 + init[5]
    init[offset : offset + 4] = required.to_bytes(4, "big")
    responder = Responder({Suite.CLASSIC: keys(Suite.CLASSIC)[0]}, capabilities=offered)
    try:
        responder.respond(bytes(init), NOW)
    except HandshakeError as error:
        assert error.code is CloseCode.UNSUPPORTED_CAPABILITY
        assert required & ~int(offered)
        return
    assert required & ~int(offered) == 0


@given(required=_OWN_CAPS, advertised=_U32)
def test_an_initiator_completes_only_if_the_accept_has_every_required_cap(required: Capability, advertised: int) -> None:
    from nyx.crypto.kdf import mac
    from nyx.stream.handshake.keys import confirm_keys

    suite = Suite.CLASSIC
    private_key, public_key = keys(suite)
    initiator = Initiator({suite: public_key}, preference=(suite,), required_caps=required)
    init = initiator.start(NOW)
    parsed = messages.parse_init(init)
    kem = suite.kem()
    ct_e, ss_e = kem.encapsulate(parsed.ephemeral_public_key)
    body = messages.Accept(parsed.version, suite, advertised, ct_e, b"").body()
    confirm = confirm_keys(kem.decapsulate(private_key, parsed.static_ciphertext), ss_e, init, body)
    try:
        initiator.receive(body + mac(confirm.responder_key, confirm.th2))
    except HandshakeError as error:
        assert error.code is CloseCode.UNSUPPORTED_CAPABILITY
        assert int(required) & ~advertised
        return
    assert int(required) & ~advertised == 0
