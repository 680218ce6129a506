"""The authority's Ed25519 signing key on disk: generated on first start, owner-only.

Its public half is what clients and nodes pin (`--authority HEX`); losing the private half means
every client must be told a new key, and leaking it lets anyone sign documents, so the file is
created 0600 and a key file others can read is refused (as node keys are, nyx.node.keys).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from nyx.directory.records import DirectoryError
from nyx.transport.certs import CertificateError, check_private_file

log = logging.getLogger(__name__)

AUTHORITY_KEY_FILE = "authority.key"


def load_or_create_authority_key(data_dir: Path, create: bool = True) -> Ed25519PrivateKey:
    """The key in `data_dir`; a new one (dir 0700, file 0600) if there is none and `create`."""
    path = data_dir / AUTHORITY_KEY_FILE
    if path.exists():
        try:
            check_private_file(path)
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (OSError, ValueError, CertificateError) as exc:
            raise DirectoryError(f"cannot use the authority key {path}: {exc}") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise DirectoryError(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
        return key
    if not create:
        raise DirectoryError(f"no authority key in {data_dir} ({AUTHORITY_KEY_FILE})")
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, pem)
    finally:
        os.close(fd)
    log.info("generated a new authority key in %s", path)
    return key
