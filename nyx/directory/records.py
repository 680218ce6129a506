"""Node records and the directory of them: what every node and client must agree on.

A directory document's JSON is

    {"version": 1,
     "nodes": [{"node_id": "mix-1-01", "role": "mix", "layer": 1,
                "host": "127.0.0.1", "port": 43300,
                "fingerprint": "<SHA-256 of the TLS certificate, 64 hex>",
                "sphinx_keys": {"492305": "<X25519 public key, 64 hex>"},
                "region": null, "weight": 1.0, "versions": [1]}, ...]}

A gateway (role "gateway", layer 0) also lists `"stream_keys": {"hybrid": "<X-Wing public key hex>"}`:
its static handshake keys by suite label, which clients use to open end-to-end sessions to it as an
exit (the mix layer only carries them; `nyx.stream` gives them meaning).

`sphinx_keys` maps key epochs to keys: a mix publishes the current and the next epoch's key, so
senders switch at the epoch boundary while packets built just before are still accepted (see
`nyx.mix.KeyRing`). Nodes that are not mixes (gateways, test endpoints) have layer 0 and may have
no keys. `versions` lists the stream protocol versions a node speaks (absent means [1]).

This is the unsigned form: a static file for tests and offline runs. `nyx.directory.document`
wraps the same records in a per-epoch document signed by k of n authorities.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nyx.transport.base import PeerAddress

NODE_ID_BYTES = 16  # a node id is carried in Sphinx routing slots of this size


@dataclass(frozen=True, slots=True)
class Hop:
    """One node of a route: its id and its Sphinx public key for the packet's epoch."""

    node_id: str
    public_key: bytes


def node_id_problem(node_id: str) -> str | None:
    """Why `node_id` cannot name a node (None if it can): 1..16 ASCII characters, no NUL, because
    the mix layer writes it zero-padded into a 16-byte routing field."""
    if not node_id.isascii() or not 0 < len(node_id) <= NODE_ID_BYTES or "\x00" in node_id:
        return f"node id {node_id!r} must be 1..{NODE_ID_BYTES} ASCII characters"
    return None


DIRECTORY_VERSION = 1

class DirectoryError(ValueError):
    """The directory document is malformed (the message names the record and field), or it has
    no node to fill a requested layer."""


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """One node as the directory lists it."""

    node_id: str
    role: str
    layer: int
    host: str
    port: int
    fingerprint: str | None
    sphinx_keys: dict[int, bytes] = field(default_factory=dict)
    region: str | None = None
    weight: float = 1.0
    stream_keys: dict[str, bytes] = field(default_factory=dict)
    versions: tuple[int, ...] = (1,)

    def address(self) -> PeerAddress:
        return PeerAddress(self.host, self.port, self.fingerprint, self.region)

    def hop(self, epoch: int) -> Hop:
        key = self.sphinx_keys.get(epoch)
        if key is None:
            raise DirectoryError(f"{self.node_id} publishes no Sphinx key for epoch {epoch}")
        return Hop(self.node_id, key)

    def to_json(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "role": self.role,
            "layer": self.layer,
            "host": self.host,
            "port": self.port,
            "fingerprint": self.fingerprint,
            "sphinx_keys": {str(epoch): key.hex() for epoch, key in sorted(self.sphinx_keys.items())},
            "region": self.region,
            "weight": self.weight,
            **({"stream_keys": {label: key.hex() for label, key in sorted(self.stream_keys.items())}}
               if self.stream_keys else {}),
            **({"versions": list(self.versions)} if self.versions != (1,) else {}),
        }

    @classmethod
    def from_json(cls, raw: Any, where: str = "node") -> NodeRecord:
        if not isinstance(raw, dict):
            raise DirectoryError(f"{where}: expected an object")

        def get(name: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
            if name not in raw:
                if default is ...:
                    raise DirectoryError(f"{where}.{name}: required")
                return default
            value = raw[name]
            if isinstance(value, bool) or not isinstance(value, kind):
                if value is None and default is None:
                    return None
                raise DirectoryError(f"{where}.{name}: expected {kind}, got {value!r}")
            return value

        node_id = get("node_id", str)
        problem = node_id_problem(node_id)
        if problem is not None:
            raise DirectoryError(f"{where}.node_id: {problem}")
        keys: dict[int, bytes] = {}
        for epoch, key in get("sphinx_keys", dict, {}).items():
            try:
                keys[int(epoch)] = bytes.fromhex(key)
            except (ValueError, TypeError) as exc:
                raise DirectoryError(f"{where}.sphinx_keys[{epoch}]: expected hex of 32 bytes") from exc
            if len(keys[int(epoch)]) != 32:
                raise DirectoryError(f"{where}.sphinx_keys[{epoch}]: expected 32 bytes")
        stream_keys: dict[str, bytes] = {}
        for label, key in get("stream_keys", dict, {}).items():
            try:
                stream_keys[str(label)] = bytes.fromhex(key)
            except (ValueError, TypeError) as exc:
                raise DirectoryError(f"{where}.stream_keys[{label}]: expected hex") from exc
        versions = get("versions", list, [1])
        if not versions or not all(isinstance(v, int) and not isinstance(v, bool) and 0 < v < 256 for v in versions):
            raise DirectoryError(f"{where}.versions: expected a non-empty list of versions 1..255")
        try:
            weight = float(get("weight", (int, float), 1.0))
        except OverflowError:
            raise DirectoryError(f"{where}.weight: too large") from None
        if not math.isfinite(weight) or weight <= 0:
            raise DirectoryError(f"{where}.weight: must be a positive number, got {weight}")
        port = get("port", int)
        if not 0 <= port < 65536:
            raise DirectoryError(f"{where}.port: must be 0..65535, got {port}")
        return cls(
            node_id=node_id,
            role=get("role", str, "mix"),
            layer=get("layer", int, 0),
            host=get("host", str),
            port=port,
            fingerprint=get("fingerprint", str, None),
            sphinx_keys=keys,
            region=get("region", str, None),
            weight=weight,
            stream_keys=stream_keys,
            versions=tuple(versions),
        )


@dataclass(frozen=True, slots=True)
class Directory:
    """Node records by id."""

    nodes: dict[str, NodeRecord]

    @classmethod
    def of(cls, records: Iterable[NodeRecord]) -> Directory:
        return cls({r.node_id: r for r in records})

    def to_json(self) -> dict[str, Any]:
        return {"version": DIRECTORY_VERSION, "nodes": [r.to_json() for r in self.nodes.values()]}

    @classmethod
    def from_json(cls, document: Any) -> Directory:
        if not isinstance(document, dict) or document.get("version") != DIRECTORY_VERSION:
            raise DirectoryError(f"a directory is an object with \"version\": {DIRECTORY_VERSION}")
        nodes = document.get("nodes")
        if not isinstance(nodes, list):
            raise DirectoryError("directory.nodes: expected a list of node records")
        records = [NodeRecord.from_json(raw, f"nodes[{i}]") for i, raw in enumerate(nodes)]
        directory = cls.of(records)
        if len(directory.nodes) != len(records):
            raise DirectoryError("directory.nodes: a node_id appears twice")
        return directory

    @classmethod
    def load(cls, path: Path) -> Directory:
        try:
            return cls.from_json(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            raise DirectoryError(f"cannot read directory {path}: {exc}") from exc

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")

    def layer(self, layer: int) -> list[NodeRecord]:
        return [r for r in self.nodes.values() if r.role == "mix" and r.layer == layer]

    def layers(self) -> list[int]:
        return sorted({r.layer for r in self.nodes.values() if r.role == "mix"})

    def gateways(self) -> list[NodeRecord]:
        """Every node with the gateway role (entries for clients, exits for streams)."""
        return [r for r in self.nodes.values() if r.role == "gateway"]
