"""What a signed directory document costs at network scale: size, encode, sign, verify, decode.

`measure_document(50_000, 3)` builds a document of 50,000 mixes with realistic fields (3 layers,
IPv4 addresses, certificate fingerprints, two Sphinx keys each for the current and next epoch,
regions, full-precision bandwidth weights), signs it with 5 authorities and checks it with a
3-of-5 policy. Every figure is the best of `repeats` runs (the least disturbed by other work on a
noisy machine), and a plain SHA-512 over the same body bytes is measured in the same run as the
reference: an Ed25519 verification over a large message is one SHA-512 pass plus a constant, so
`signatures_s / sha512_s` near k says the signature checks cost what hashing costs and no more.

Run it as `python -m nyx.directory.measure [NODES [THRESHOLD]]` (prints JSON).
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
import time
from collections.abc import Callable
from typing import Any

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
from nyx.directory.records import NodeRecord

REGIONS = ("eu-west", "eu-central", "us-east", "us-west", "ap-south", "ap-northeast", "sa-east")
EPOCH = 492_305
VALID_AFTER = 1_772_000_000
VALIDITY_S = 3_600


def build_body(nodes: int, layers: int = 3, seed: int = 1) -> DocumentBody:
    """A body of `nodes` mixes spread over `layers` layers, deterministic for a seed."""
    rng = random.Random(seed)
    records = [
        NodeRecord(
            node_id=f"mix-{i:07d}",
            role="mix",
            layer=1 + i % layers,
            host=f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
            port=rng.randrange(1024, 65536),
            fingerprint=rng.randbytes(32).hex(),
            sphinx_keys={EPOCH: rng.randbytes(32), EPOCH + 1: rng.randbytes(32)},
            region=rng.choice(REGIONS),
            weight=rng.uniform(1.0, 1000.0),
        )
        for i in range(nodes)
    ]
    return DocumentBody.of(EPOCH, VALID_AFTER, VALID_AFTER + VALIDITY_S, records)


def _best(run: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - start)
    return best, result


def measure_document(nodes: int, threshold: int, *, authorities: int = 5, repeats: int = 3,
                     seed: int = 1) -> dict[str, Any]:
    """Figures (seconds, bytes) for a `nodes`-mix document checked with `threshold` of
    `authorities` keys: body/wire size, encode, one signature, the k signature checks alone, a
    full `verify_document` (framing, signatures, parse, canonical check, window), `decode_body`
    alone, SHA-512 over the body, and the ratio of the signature checks to that SHA-512."""
    body = build_body(nodes, seed=seed)
    keys = [Ed25519PrivateKey.generate() for _ in range(authorities)]
    policy = TrustPolicy(frozenset(k.public_key().public_bytes_raw() for k in keys), threshold)
    encode_s, body_bytes = _best(lambda: encode_body(body), repeats)
    sign_s, _ = _best(lambda: sign_body(body_bytes, keys[0]), repeats)
    signed = SignedDocument(body_bytes, tuple(sign_body(body_bytes, k) for k in keys))
    wire = signed.encode()
    sha512_s, _ = _best(lambda: hashlib.sha512(body_bytes).digest(), repeats)
    signatures_s, _ = _best(lambda: _check_signatures(signed, policy), repeats)
    now = VALID_AFTER + 60
    verify_s, verified = _best(lambda: verify_document(wire, policy, now), repeats)
    decode_s, decoded = _best(lambda: decode_body(body_bytes), repeats)
    assert verified == body and decoded == body
    return {
        "nodes": nodes,
        "threshold": threshold,
        "authorities": authorities,
        "body_bytes": len(body_bytes),
        "wire_bytes": len(wire),
        "encode_s": encode_s,
        "sign_s": sign_s,
        "signatures_s": signatures_s,
        "verify_s": verify_s,
        "decode_s": decode_s,
        "sha512_s": sha512_s,
        "signatures_over_sha512": signatures_s / sha512_s,
        "verify_over_sha512": verify_s / sha512_s,
    }


if __name__ == "__main__":
    arguments = [int(a) for a in sys.argv[1:3]]
    figures = measure_document(*(arguments + [50_000, 3][len(arguments):]))
    print(json.dumps(figures, indent=2))
