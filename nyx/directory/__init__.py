"""nyx.directory: who the nodes are, signed so that anyone may serve it.

Node records and the unsigned static file (`records`), used by tests and offline runs. The signed
per-epoch document, sharded lookups, health and path selection, and `python -m nyx.directory serve`
are described in docs/directory.md.
"""

from nyx.directory.records import DIRECTORY_VERSION, Directory, DirectoryError, Hop, NodeRecord

__all__ = ["DIRECTORY_VERSION", "Directory", "DirectoryError", "Hop", "NodeRecord"]
