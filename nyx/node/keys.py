"""Node keys on disk: generated on first start, owner-only, refused when others can read them.

A node's TLS key is its identity on every link; a key file readable by other local users is a
key others may already hold. So the node refuses to start on one rather than silently fixing the
mode (the operator should know, and maybe rotate).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from nyx.transport.certs import CertificateError, NodeIdentity, check_private_file

log = logging.getLogger(__name__)

KEY_FILE = "node.key"
CERT_FILE = "node.crt"


def load_or_create_identity(data_dir: Path, node_id: str) -> NodeIdentity:
    """The node's TLS identity from `data_dir`, created (dir 0700, key 0600) if absent."""
    key_path, cert_path = data_dir / KEY_FILE, data_dir / CERT_FILE
    if key_path.exists() or cert_path.exists():
        if not (key_path.exists() and cert_path.exists()):
            raise CertificateError(
                f"{data_dir} holds only one of {KEY_FILE} and {CERT_FILE}; restore the other or remove both"
            )
        check_private_file(key_path)
        return NodeIdentity.load(node_id, cert_path, key_path)
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(data_dir, os.stat(data_dir).st_mode & 0o700 | 0o700)
    identity = NodeIdentity.generate(node_id)
    identity.save(cert_path, key_path)
    check_private_file(key_path)
    log.info("generated a new identity for %s in %s (fingerprint %s)", node_id, data_dir, identity.fingerprint)
    return identity
