"""A gateway's static handshake keys on disk: made on first start, kept across restarts.

The directory publishes each gateway's static public key per suite (`stream_keys`), and clients
open sessions against exactly that key, so the key must survive a restart: a gateway that made a
new one at every start would refuse every client holding the directory of the hour before. The
file `stream_keys.json` in the node's data directory holds `{suite label: secret hex}` (the
seed where the KEM has one), owner-only (0600), written atomically; a file others may read is
refused at start, as the TLS and Sphinx key files are.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from nyx.crypto.kem import PrivateKey
from nyx.crypto.suites import Suite
from nyx.mix.keystore import write_private
from nyx.transport.certs import CertificateError, check_private_file

__all__ = ["STREAM_KEY_FILE", "StaticKeyError", "load_or_create_stream_keys"]

STREAM_KEY_FILE = "stream_keys.json"


class StaticKeyError(ValueError):
    """The key file is unsafe (others may read it) or is not a key file."""


def load_or_create_stream_keys(data_dir: Path, suites: Iterable[Suite]) -> dict[Suite, PrivateKey]:
    """The private key of every suite in `suites`: read from `data_dir`, made (and saved) for
    suites the file does not hold yet. Keys of suites no longer asked for stay in the file."""
    path = data_dir / STREAM_KEY_FILE
    stored: dict[str, str] = {}
    if path.exists():
        try:
            check_private_file(path)
        except CertificateError as exc:
            raise StaticKeyError(str(exc)) from exc
        try:
            document = json.loads(path.read_text())
            stored = {str(label): str(secret) for label, secret in document["keys"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StaticKeyError(f"{path}: not a stream key file ({exc})") from exc
    keys: dict[Suite, PrivateKey] = {}
    changed = False
    for suite in suites:
        secret = stored.get(suite.label)
        if secret is None:
            private, _ = suite.kem().generate()
            stored[suite.label] = private.secret.hex()
            keys[suite] = private
            changed = True
            continue
        try:
            keys[suite] = suite.kem().load_private(bytes.fromhex(secret))
        except ValueError as exc:
            raise StaticKeyError(f"{path}: the {suite.label} key does not load ({exc})") from exc
    if changed:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_private(path, [(json.dumps({"keys": stored}, indent=1) + "\n").encode()])
    return keys
