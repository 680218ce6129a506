"""A mix's Sphinx keys on disk: one X25519 private key per key epoch, owner-only.

The keys must survive a restart: the directory has published their public halves, and packets
built on them are in flight. So the key ring is written whenever it changes, atomically (a new
file renamed over the old), created with mode 0600; a key file others can read is refused, as
the node runtime refuses its TLS key (`nyx.transport.certs.check_private_file`).
`write_private` is that atomic owner-only write, shared with the replay state (`nyx.mix.restart`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from nyx.mix.keys import KeyRing
from nyx.transport.certs import CertificateError, check_private_file

KEY_FILE = "sphinx-keys.json"


class KeyStoreError(ValueError):
    """The Sphinx key file is unreadable, malformed, or readable by others."""


def load_keyring(data_dir: Path, epoch_s: float, overlap_s: float, now: float) -> KeyRing:
    """The ring stored in `data_dir` (or a new one), rotated to `now` and saved if that changed it."""
    ring = read_keyring(data_dir, epoch_s, overlap_s) or KeyRing(epoch_s=epoch_s, overlap_s=overlap_s)
    before = set(ring.keys)
    ring.rotate(now)
    if set(ring.keys) != before or not (data_dir / KEY_FILE).exists():
        save_keyring(ring, data_dir)
    return ring


def read_keyring(data_dir: Path, epoch_s: float, overlap_s: float) -> KeyRing | None:
    """The ring stored in `data_dir` exactly as found (not rotated, nothing written), or None if
    there is no key file; KeyStoreError if it is unreadable, malformed or readable by others."""
    path = data_dir / KEY_FILE
    if not path.exists():
        return None
    ring = KeyRing(epoch_s=epoch_s, overlap_s=overlap_s)
    try:
        check_private_file(path)
        document = json.loads(path.read_text())
        if document.get("epoch_s") != epoch_s:
            raise KeyStoreError(
                f"{path} holds keys for {document.get('epoch_s')} s epochs, the config says {epoch_s} s; "
                "keep the epoch length or move the file away (its keys are then lost)"
            )
        for epoch, private_hex in document["keys"].items():
            ring.add(int(epoch), X25519PrivateKey.from_private_bytes(bytes.fromhex(private_hex)))
    except CertificateError as exc:
        raise KeyStoreError(str(exc)) from exc
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        if isinstance(exc, KeyStoreError):
            raise
        raise KeyStoreError(f"{path}: not a Sphinx key file ({exc})") from exc
    return ring


def save_keyring(ring: KeyRing, data_dir: Path) -> None:
    """Write every key of `ring` to `data_dir` (0600, atomically)."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    document = {
        "epoch_s": ring.epoch_s,
        "keys": {str(epoch): key.private_key.private_bytes_raw().hex() for epoch, key in sorted(ring.keys.items())},
    }
    write_private(data_dir / KEY_FILE, [(json.dumps(document, indent=1) + "\n").encode()])


def write_private(path: Path, chunks: Iterable[bytes]) -> None:
    """Replace `path` with `chunks`, owner-only (0600), atomically and durably: a temporary file
    is written and fsynced, renamed over `path`, and the directory fsynced, so a crash at any
    point leaves either the old file or the new one, never a mix of both."""
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        for chunk in chunks:
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)
    sync_directory(path.parent)


def sync_directory(directory: Path) -> None:
    """fsync a directory, so a rename or unlink in it survives a power loss."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
