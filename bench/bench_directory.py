"""pytest-benchmark suite for the signed directory document at network scale (50,000 mixes).

CI runs these once with --benchmark-disable (each is then a correctness check); time them with
`python -m pytest bench/bench_directory.py --benchmark-enable`. The floor: an Ed25519 check over a
large body is one SHA-512 pass over it, so the k = 3 signature checks sit beside a plain SHA-512
of the same bytes, and should cost about 3 of them. Parsing (JSON, records, the canonical check)
is the larger cost, and it runs only after the signatures pass. `python -m nyx.directory.measure`
prints the same figures as JSON.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from nyx.directory.document import (
    DocumentBody,
    SignedDocument,
    TrustPolicy,
    _check_signatures,
    decode_body,
    encode_body,
    sign_body,
    verify_document,
)
from nyx.directory.measure import VALID_AFTER, build_body, measure_document

NODES = 50_000
ROUNDS = 3


class Fixture:
    def __init__(self) -> None:
        self.body: DocumentBody = build_body(NODES)
        self.body_bytes = encode_body(self.body)
        self.keys = [Ed25519PrivateKey.from_private_bytes(bytes([i + 1]) * 32) for i in range(5)]
        self.policy = TrustPolicy(frozenset(k.public_key().public_bytes_raw() for k in self.keys), 3)
        self.signed = SignedDocument(self.body_bytes, tuple(sign_body(self.body_bytes, k) for k in self.keys))
        self.wire = self.signed.encode()


@pytest.fixture(scope="module")
def document() -> Fixture:
    return Fixture()


def test_document_encode_50k(benchmark: Any, document: Fixture) -> None:
    raw = benchmark.pedantic(encode_body, (document.body,), rounds=ROUNDS, iterations=1)
    assert raw == document.body_bytes


def test_document_sign_50k(benchmark: Any, document: Fixture) -> None:
    public_key, _ = benchmark.pedantic(sign_body, (document.body_bytes, document.keys[0]),
                                       rounds=ROUNDS, iterations=1)
    assert public_key in document.policy.authorities


def test_floor_sha512_of_the_50k_body(benchmark: Any, document: Fixture) -> None:
    digest = benchmark.pedantic(lambda: hashlib.sha512(document.body_bytes).digest(),
                                rounds=ROUNDS, iterations=1)
    assert len(digest) == 64


def test_document_signature_checks_3_of_5_50k(benchmark: Any, document: Fixture) -> None:
    benchmark.pedantic(_check_signatures, (document.signed, document.policy), rounds=ROUNDS, iterations=1)


def test_document_verify_3_of_5_50k(benchmark: Any, document: Fixture) -> None:
    body = benchmark.pedantic(verify_document, (document.wire, document.policy, VALID_AFTER + 60),
                              rounds=ROUNDS, iterations=1)
    assert len(body.nodes) == NODES


def test_document_decode_body_50k(benchmark: Any, document: Fixture) -> None:
    body = benchmark.pedantic(decode_body, (document.body_bytes,), rounds=ROUNDS, iterations=1)
    assert body == document.body


def test_measure_document_reports_every_figure() -> None:
    figures = measure_document(200, 3, repeats=1)
    assert figures["body_bytes"] < figures["wire_bytes"] == figures["body_bytes"] + 10 + 5 * 96
    assert all(figures[name] > 0 for name in (
        "encode_s", "sign_s", "signatures_s", "verify_s", "decode_s", "sha512_s"))
