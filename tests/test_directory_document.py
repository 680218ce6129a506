"""The signed directory document, attacked from outside: forged, truncated, stale, rolled back,
under-signed, equivocating and non-canonical documents are refused with errors that say why."""

from __future__ import annotations

import itertools
import struct

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

import nyx.directory.document as document
from nyx.directory.document import (
    MAX_BODY_BYTES,
    MAX_SIGNATURES,
    DocumentBody,
    DocumentHolder,
    DocumentRejected,
    Equivocation,
    MalformedDocument,
    RolledBack,
    SignedDocument,
    StaleDocument,
    TrustPolicy,
    UnderSigned,
    decode_body,
    encode_body,
    sign_body,
    verify_document,
)
from nyx.directory.records import DirectoryError, NodeRecord

AUTHORITIES = [Ed25519PrivateKey.from_private_bytes(bytes([i + 1]) * 32) for i in range(5)]
OUTSIDERS = [Ed25519PrivateKey.from_private_bytes(bytes([i + 100]) * 32) for i in range(3)]
POLICY = TrustPolicy(frozenset(k.public_key().public_bytes_raw() for k in AUTHORITIES), 3,
                     clock_skew_s=60.0)
VALID_AFTER, VALID_UNTIL = 1_000_000, 1_003_600
NOW = VALID_AFTER + 100


def mix(node_id: str, layer: int, epoch: int = 7) -> NodeRecord:
    return NodeRecord(node_id, "mix", layer, "10.0.0.1", 4000 + layer, "ab" * 32,
                      {epoch: bytes([layer]) * 32, epoch + 1: bytes([layer + 10]) * 32},
                      region="eu-west", weight=12.5)


def body(epoch: int = 7, extra: str | None = None) -> DocumentBody:
    gateway = NodeRecord("gw-1", "gateway", 0, "10.0.0.9", 4430, "cd" * 32,
                         stream_keys={"hybrid": bytes(range(64))}, versions=(1, 2))
    records = [mix("mix-3", 3, epoch), mix("mix-1", 1, epoch), mix("mix-2", 2, epoch), gateway]
    if extra is not None:
        records.append(mix(extra, 1, epoch))
    return DocumentBody.of(epoch, VALID_AFTER, VALID_UNTIL, records)


def signed(body_bytes: bytes, keys: list[Ed25519PrivateKey] = AUTHORITIES[:3]) -> bytes:
    return SignedDocument(body_bytes, tuple(sign_body(body_bytes, k) for k in keys)).encode()


def wire(epoch: int = 7, keys: list[Ed25519PrivateKey] = AUTHORITIES[:3]) -> bytes:
    return signed(encode_body(body(epoch)), keys)


def body_offset() -> int:
    return 9  # b"NYXD" | version | body_len


# --- the primitive and the round trip ---

def test_rfc8032_test_vector_1_pins_the_ed25519_primitive() -> None:
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"))
    public_key, signature = sign_body(b"", key)
    assert public_key.hex() == "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    assert signature.hex() == (
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b")
    Ed25519PublicKey.from_public_bytes(public_key).verify(signature, b"")


def test_a_signed_document_round_trips_through_the_wire_form() -> None:
    raw = wire()
    decoded = SignedDocument.decode(raw)
    assert decoded.encode() == raw
    assert decode_body(decoded.body_bytes) == body()
    assert verify_document(raw, POLICY, NOW) == body()
    directory = verify_document(raw, POLICY, NOW).directory()
    assert sorted(directory.nodes) == ["gw-1", "mix-1", "mix-2", "mix-3"]
    assert directory.nodes["gw-1"].stream_keys == {"hybrid": bytes(range(64))}


def test_the_body_encoding_is_sorted_compact_ascii_json() -> None:
    raw = encode_body(body())
    assert raw.startswith(b'{"epoch":7,"nodes":[{"fingerprint":')
    assert raw.endswith(b'"valid_after":1000000,"valid_until":1003600,"version":1}')
    assert b" " not in raw and b"\n" not in raw
    assert encode_body(decode_body(raw)) == raw


def test_an_integer_weight_is_written_as_a_float_so_it_round_trips() -> None:
    record = NodeRecord("mix-1", "mix", 1, "h", 1, None, weight=3)  # type: ignore[arg-type]
    raw = encode_body(DocumentBody(1, 0, 10, (record,)))
    assert b'"weight":3.0' in raw
    assert decode_body(raw).nodes[0].weight == 3.0


def test_a_three_of_five_policy_accepts_any_three_authorities_and_no_two() -> None:
    body_bytes = encode_body(body())
    for three in itertools.combinations(AUTHORITIES, 3):
        assert verify_document(signed(body_bytes, list(three)), POLICY, NOW) == body()
    for two in itertools.combinations(AUTHORITIES, 2):
        with pytest.raises(UnderSigned):
            verify_document(signed(body_bytes, list(two)), POLICY, NOW)


def test_all_five_signatures_are_accepted_too() -> None:
    assert verify_document(wire(keys=AUTHORITIES), POLICY, NOW) == body()


# --- forged ---

def test_signatures_by_untrusted_keys_do_not_count() -> None:
    raw = wire(keys=AUTHORITIES[:2] + OUTSIDERS)
    with pytest.raises(UnderSigned, match=r"2 distinct trusted authorities, 3 needed .*3 by keys not in the trust policy"):
        verify_document(raw, POLICY, NOW)


def test_valid_signatures_over_other_bytes_do_not_count() -> None:
    other = encode_body(body(extra="mix-evil"))
    transplanted = SignedDocument.decode(wire()).signatures
    raw = SignedDocument(other, transplanted).encode()
    with pytest.raises(UnderSigned, match=r"0 valid signatures .* 3 that do not verify over the body"):
        verify_document(raw, POLICY, NOW)


@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_one_flipped_body_byte_breaks_every_signature(where: str) -> None:
    raw = bytearray(wire())
    body_len = struct.unpack_from(">I", raw, 5)[0]
    index = {"first": 0, "middle": body_len // 2, "last": body_len - 1}[where]
    raw[body_offset() + index] ^= 0x01
    with pytest.raises(UnderSigned, match="do not verify"):
        verify_document(bytes(raw), POLICY, NOW)


def test_one_flipped_signature_byte_leaves_the_document_under_signed() -> None:
    raw = bytearray(wire())
    raw[-1] ^= 0x80
    with pytest.raises(UnderSigned, match=r"2 valid signatures .* 1 that do not verify"):
        verify_document(bytes(raw), POLICY, NOW)


def test_an_unsigned_body_never_reaches_the_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    def parser_reached(raw: bytes) -> DocumentBody:
        raise AssertionError("the body was parsed before its signatures were checked")

    monkeypatch.setattr(document, "decode_body", parser_reached)
    garbage = SignedDocument(b"{not json", tuple(sign_body(b"other", k) for k in AUTHORITIES)).encode()
    with pytest.raises(UnderSigned):
        verify_document(garbage, POLICY, NOW)


def test_a_signed_body_that_is_not_a_document_is_malformed() -> None:
    with pytest.raises(MalformedDocument, match="not valid JSON"):
        verify_document(signed(b"{not json"), POLICY, NOW)


# --- under-signed ---

def test_k_minus_one_valid_plus_duplicates_and_junk_is_under_signed() -> None:
    body_bytes = encode_body(body())
    a, b = (sign_body(body_bytes, k) for k in AUTHORITIES[:2])
    c_bad = (AUTHORITIES[2].public_key().public_bytes_raw(), bytes(64))
    junk = (bytes(range(32)), bytes(64))
    raw = SignedDocument(body_bytes, (a, a, a, b, c_bad, junk, junk)).encode()
    with pytest.raises(UnderSigned, match=(
            r"2 valid signatures by trusted authorities, 3 needed \(7 signatures: 2 by keys not in "
            r"the trust policy, 1 that do not verify over the body, 2 repeating a key")):
        verify_document(raw, POLICY, NOW)


def test_one_authoritys_signature_repeated_k_times_counts_once() -> None:
    body_bytes = encode_body(body())
    entry = sign_body(body_bytes, AUTHORITIES[0])
    with pytest.raises(UnderSigned, match="1 distinct trusted"):
        verify_document(SignedDocument(body_bytes, (entry,) * 3).encode(), POLICY, NOW)


def test_a_keys_first_entry_decides_and_its_repeats_are_never_checked() -> None:
    body_bytes = encode_body(body())
    good = [sign_body(body_bytes, k) for k in AUTHORITIES[:3]]
    bad_first = (good[0][0], bytes(64))
    raw = SignedDocument(body_bytes, (bad_first, *[good[0]] * 20, good[1], good[2])).encode()
    with pytest.raises(UnderSigned, match=r"2 valid .* 1 that do not verify .* 20 repeating a key"):
        verify_document(raw, POLICY, NOW)


def test_32_bad_entries_by_trusted_keys_cost_one_check_per_key() -> None:
    checked: list[bytes] = []

    class Counting:
        def __init__(self, public_key: bytes) -> None:
            self.public_key = public_key

        def verify(self, signature: bytes, data: bytes) -> None:
            checked.append(self.public_key)
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, data)

    policy = TrustPolicy(POLICY.authorities, 3)
    for public_key in policy._keys:
        policy._keys[public_key] = Counting(public_key)  # type: ignore[assignment]
    trusted = sorted(POLICY.authorities)
    entries = tuple((trusted[i % 5], bytes(64)) for i in range(MAX_SIGNATURES))
    with pytest.raises(UnderSigned, match="5 that do not verify"):
        verify_document(SignedDocument(encode_body(body()), entries).encode(), policy, NOW)
    assert sorted(checked) == trusted


def test_an_unsigned_document_is_under_signed() -> None:
    with pytest.raises(UnderSigned, match="0 distinct trusted"):
        verify_document(SignedDocument(encode_body(body())).encode(), POLICY, NOW)


def test_with_signature_replaces_an_authoritys_earlier_signature() -> None:
    body_bytes = encode_body(body())
    document_ = SignedDocument(body_bytes).with_signature(AUTHORITIES[0].public_key().public_bytes_raw(), bytes(64))
    document_ = document_.with_signature(*sign_body(body_bytes, AUTHORITIES[0]))
    assert document_.signatures == (sign_body(body_bytes, AUTHORITIES[0]),)


# --- truncated and framing ---

def test_every_proper_prefix_is_refused_as_malformed() -> None:
    raw = wire()
    for length in range(len(raw)):
        with pytest.raises(MalformedDocument):
            verify_document(raw[:length], POLICY, NOW)


@pytest.mark.parametrize("cut, message", [
    ("empty", "shorter than its header"),
    ("inside the header", "shorter than its header"),
    ("inside the body", "truncated: its header announces"),
    ("before the signature count", "truncated: its header announces"),
    ("inside a signature", "is truncated: .* 3 signatures"),
])
def test_a_truncated_document_says_it_was_cut_short(cut: str, message: str) -> None:
    raw = wire()
    body_len = len(encode_body(body()))
    length = {"empty": 0, "inside the header": 6, "inside the body": 9 + body_len // 2,
              "before the signature count": 9 + body_len, "inside a signature": len(raw) - 40}[cut]
    with pytest.raises(MalformedDocument, match=message):
        verify_document(raw[:length], POLICY, NOW)


def test_trailing_bytes_are_refused() -> None:
    with pytest.raises(MalformedDocument, match="2 trailing bytes"):
        SignedDocument.decode(wire() + b"\0\0")


def test_a_document_with_another_magic_is_refused() -> None:
    with pytest.raises(MalformedDocument, match="not a signed nyx directory document"):
        SignedDocument.decode(b'{"version": 1, "nodes": []}')


def test_a_document_of_another_wire_version_is_refused() -> None:
    raw = bytearray(wire())
    raw[4] = 2
    with pytest.raises(MalformedDocument, match="wire version 2"):
        SignedDocument.decode(bytes(raw))


def test_a_body_over_64_mib_is_refused_from_the_header_alone() -> None:
    header = struct.pack(">4sBI", b"NYXD", 1, MAX_BODY_BYTES + 1)
    with pytest.raises(MalformedDocument, match="refused unread"):
        SignedDocument.decode(header + b"\0")


def test_more_than_32_signatures_are_refused_before_any_is_checked() -> None:
    body_bytes = encode_body(body())
    raw = struct.pack(">4sBI", b"NYXD", 1, len(body_bytes)) + body_bytes + bytes([MAX_SIGNATURES + 1])
    with pytest.raises(MalformedDocument, match="33 signatures, at most 32"):
        SignedDocument.decode(raw + bytes(96 * (MAX_SIGNATURES + 1)))
    with pytest.raises(MalformedDocument, match="at most 32"):
        SignedDocument(body_bytes, ((bytes(32), bytes(64)),) * (MAX_SIGNATURES + 1))


def test_decode_body_refuses_a_body_over_64_mib_without_parsing_it() -> None:
    with pytest.raises(MalformedDocument, match="exceeds"):
        decode_body(b" " * (MAX_BODY_BYTES + 1))


# --- stale ---

def test_a_document_before_its_validity_window_is_stale() -> None:
    with pytest.raises(StaleDocument, match="not valid yet: .* check this machine's clock"):
        verify_document(wire(), POLICY, VALID_AFTER - 61)


def test_a_document_after_its_validity_window_is_stale() -> None:
    with pytest.raises(StaleDocument, match=r"expired at .*\(fetch from another\)"):
        verify_document(wire(), POLICY, VALID_UNTIL + 61)


@pytest.mark.parametrize("now", [VALID_AFTER - 60, VALID_UNTIL + 60, VALID_AFTER, VALID_UNTIL])
def test_the_clock_skew_edges_are_inside_the_window(now: float) -> None:
    assert verify_document(wire(), POLICY, now) == body()


@pytest.mark.parametrize("now", [VALID_AFTER - 60.001, VALID_UNTIL + 60.001])
def test_just_beyond_the_skew_edges_is_stale(now: float) -> None:
    with pytest.raises(StaleDocument):
        verify_document(wire(), POLICY, now)


def test_with_no_skew_allowed_one_second_early_is_stale() -> None:
    strict = TrustPolicy(POLICY.authorities, 3, clock_skew_s=0)
    assert verify_document(wire(), strict, VALID_AFTER) == body()
    with pytest.raises(StaleDocument):
        verify_document(wire(), strict, VALID_AFTER - 1)


# --- rolled back ---

def test_an_epoch_older_than_the_held_one_is_rolled_back() -> None:
    with pytest.raises(RolledBack, match="epoch 7 is older than epoch 8 already held"):
        verify_document(wire(7), POLICY, NOW, held_epoch=8)


def test_the_held_epoch_itself_is_not_a_rollback() -> None:
    assert verify_document(wire(7), POLICY, NOW, held_epoch=7) == body(7)


def test_the_holder_refuses_an_older_epoch_and_keeps_the_newer() -> None:
    holder = DocumentHolder(POLICY)
    assert holder.offer(wire(8), NOW) == body(8)
    with pytest.raises(RolledBack):
        holder.offer(wire(7), NOW)
    assert holder.epoch == 8 and holder.raw == wire(8)


# --- the holder and equivocation ---

def test_the_holder_adopts_newer_epochs_and_ignores_the_bytes_it_holds() -> None:
    holder = DocumentHolder(POLICY)
    assert holder.current is None and holder.epoch is None
    assert holder.offer(wire(7), NOW) == body(7)
    assert holder.offer(wire(7), NOW) is None
    assert holder.offer(wire(7, keys=AUTHORITIES[2:]), NOW) is None  # same body, other signers
    assert holder.offer(wire(9), NOW) == body(9)
    assert holder.current == body(9) and holder.raw == wire(9)


def test_a_second_signed_body_for_the_held_epoch_is_equivocation() -> None:
    holder = DocumentHolder(POLICY)
    first = wire(7)
    holder.offer(first, NOW)
    conflicting = signed(encode_body(body(7, extra="mix-evil")), AUTHORITIES[2:])
    with pytest.raises(Equivocation, match="two different documents for epoch 7") as caught:
        holder.offer(conflicting, NOW)
    assert caught.value.held == first and caught.value.offered == conflicting
    assert holder.raw == first and holder.current == body(7)


def test_an_unsigned_conflicting_body_is_under_signed_not_equivocation() -> None:
    holder = DocumentHolder(POLICY)
    holder.offer(wire(7), NOW)
    with pytest.raises(UnderSigned):
        holder.offer(signed(encode_body(body(7, extra="mix-evil")), OUTSIDERS), NOW)
    assert holder.current == body(7)


def test_a_forged_newer_document_does_not_replace_the_held_one() -> None:
    holder = DocumentHolder(POLICY)
    holder.offer(wire(7), NOW)
    with pytest.raises(UnderSigned):
        holder.offer(wire(8, keys=AUTHORITIES[:1] + OUTSIDERS), NOW)
    assert holder.epoch == 7


def test_the_held_document_offered_again_after_it_expired_is_stale() -> None:
    holder = DocumentHolder(POLICY)
    holder.offer(wire(7), NOW)
    with pytest.raises(StaleDocument):
        holder.offer(wire(7), VALID_UNTIL + 3600)


# --- non-canonical bodies ---

def _reorder_top_level(raw: bytes) -> bytes:
    text = raw.decode()
    assert text.endswith(',"version":1}')
    return ('{"version":1,' + text[1:-len(',"version":1}')] + "}").encode()


NON_CANONICAL = {
    "extra whitespace after a colon": lambda raw: raw.replace(b'"epoch":7', b'"epoch": 7'),
    "a trailing newline": lambda raw: raw + b"\n",
    "pretty printed": lambda raw: raw.replace(b",", b", "),
    "reordered top-level keys": _reorder_top_level,
    "reordered record keys": lambda raw: raw.replace(
        b'{"fingerprint":"' + b"ab" * 32 + b'","host":"10.0.0.1",',
        b'{"host":"10.0.0.1","fingerprint":"' + b"ab" * 32 + b'",', 1),
    "a duplicated key": lambda raw: raw.replace(b'"epoch":7,', b'"epoch":7,"epoch":7,'),
    "a trailing zero in a weight": lambda raw: raw.replace(b'"weight":12.5', b'"weight":12.50'),
    "an integer weight": lambda raw: raw.replace(b'"weight":1.0', b'"weight":1'),
    "uppercase key hex": lambda raw: raw.replace(b"0b" * 32, b"0B" * 32, 1),
    "an escaped ASCII letter": lambda raw: raw.replace(b'"mix-1"', b'"\\u006dix-1"'),
    "a zero-padded epoch key": lambda raw: raw.replace(b'"sphinx_keys":{"7"', b'"sphinx_keys":{"07"', 1),
    "default versions written out": lambda raw: raw.replace(b'"weight":12.5}', b'"versions":[1],"weight":12.5}', 1),
    "an exponent in a number": lambda raw: raw.replace(b'"epoch":7', b'"epoch":7e0'),
}


@pytest.mark.parametrize("variant", sorted(NON_CANONICAL))
def test_a_non_canonical_body_is_refused_even_when_signed(variant: str) -> None:
    raw = NON_CANONICAL[variant](encode_body(body()))
    assert raw != encode_body(body())
    with pytest.raises(MalformedDocument):
        decode_body(raw)
    with pytest.raises(MalformedDocument):
        verify_document(signed(raw), POLICY, NOW)


def test_the_canonical_refusal_names_the_first_differing_byte() -> None:
    raw = encode_body(body()).replace(b'"epoch":7', b'"epoch": 7')
    with pytest.raises(MalformedDocument, match="not in canonical form .*byte 9 of"):
        decode_body(raw)


@pytest.mark.parametrize("raw, message", [
    (b'{"epoch":1,"nodes":[],"valid_after":0,"valid_until":5}', r"missing \['version'\]"),
    (b'{"epoch":1,"extra":0,"nodes":[],"valid_after":0,"valid_until":5,"version":1}', r"unknown \['extra'\]"),
    (b'{"epoch":1,"nodes":[],"valid_after":0,"valid_until":5,"version":2}', "version 2"),
    (b'{"epoch":1,"nodes":[],"valid_after":0,"valid_until":5,"version":true}', "version True"),
    (b'{"epoch":-1,"nodes":[],"valid_after":0,"valid_until":5,"version":1}', "epoch: expected an integer"),
    (b'{"epoch":1,"nodes":[],"valid_after":5,"valid_until":5,"version":1}', "window is empty"),
    (b'{"epoch":1,"nodes":{},"valid_after":0,"valid_until":5,"version":1}', "expected a list"),
    (b'{"epoch":1,"nodes":[{}],"valid_after":0,"valid_until":5,"version":1}', r"nodes\[0\].node_id: required"),
    (b'[1]', "expected a JSON object"),
    (b'{"epoch":1,"nodes":[{"host":"h","node_id":"a","port":1,"weight":1' + b"0" * 400
     + b'}],"valid_after":0,"valid_until":5,"version":1}', "weight: too large"),
    (b'{"epoch":NaN}', "NaN is not a number"),
    (b'{"epoch":1,"nodes":[],"valid_after":0,"valid_until":5,"version":1,"x":"\xc3\xa9"}', "non-ASCII byte at offset"),
])
def test_a_malformed_body_is_refused_with_a_reason(raw: bytes, message: str) -> None:
    with pytest.raises(MalformedDocument, match=message):
        decode_body(raw)


def test_a_fingerprint_that_is_not_64_lowercase_hex_is_refused() -> None:
    raw = encode_body(body()).replace(b"ab" * 32, b"AB" * 32, 1)
    with pytest.raises(MalformedDocument, match="fingerprint must be 64 lowercase hex"):
        decode_body(raw)


def test_nodes_out_of_order_or_repeated_are_refused() -> None:
    one, two = mix("mix-1", 1), mix("mix-2", 2)
    with pytest.raises(MalformedDocument, match="out of order"):
        DocumentBody(1, 0, 5, (two, one))
    with pytest.raises(MalformedDocument, match="appears twice"):
        DocumentBody.of(1, 0, 5, [one, one])


# --- the policy ---

@pytest.mark.parametrize("threshold", [0, 6])
def test_a_threshold_outside_one_to_n_is_refused(threshold: int) -> None:
    with pytest.raises(DirectoryError, match="threshold"):
        TrustPolicy(POLICY.authorities, threshold)


def test_an_authority_key_of_the_wrong_length_is_refused() -> None:
    with pytest.raises(DirectoryError, match="32-byte"):
        TrustPolicy(frozenset({bytes(31)}), 1)


def test_every_refusal_is_a_directory_error() -> None:
    for error in (MalformedDocument, UnderSigned, StaleDocument, RolledBack, Equivocation):
        assert issubclass(error, DocumentRejected) and issubclass(error, DirectoryError)
