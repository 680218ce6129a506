"""A minimal directory: a JSON file of node records, and path selection over mix layers.

Enough for the mix layer to run and be tested; the full directory (signatures, health, sharding)
comes with `nyx.directory`. The file is

    {"version": 1,
     "nodes": [{"node_id": "mix-1-01", "role": "mix", "layer": 1,
                "host": "127.0.0.1", "port": 43300,
                "fingerprint": "<SHA-256 of the TLS certificate, 64 hex>",
                "sphinx_keys": {"492305": "<X25519 public key, 64 hex>"},
                "region": null, "weight": 1.0}, ...]}

A gateway (role "gateway", layer 0) also lists `"stream_keys": {"hybrid": "<X-Wing public key hex>"}`:
its static handshake keys by suite label, which clients use to open end-to-end sessions to it as an
exit (the mix layer only carries them; `nyx.stream` gives them meaning).

`sphinx_keys` maps key epochs to keys: a mix publishes the current and the next epoch's key, so
senders switch at the epoch boundary while packets built just before are still accepted (see
`KeyRing`). Nodes that are not mixes (gateways, test endpoints) have layer 0 and may have no keys.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nyx.mix.packet import Hop, MixPacketError, encode_node_id
from nyx.transport.base import PeerAddress

DIRECTORY_VERSION = 1

log = logging.getLogger(__name__)


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
        try:
            encode_node_id(node_id)
        except MixPacketError as exc:
            raise DirectoryError(f"{where}.node_id: {exc}") from exc
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
        weight = float(get("weight", (int, float), 1.0))
        if weight <= 0:
            raise DirectoryError(f"{where}.weight: must be positive, got {weight}")
        return cls(
            node_id=node_id,
            role=get("role", str, "mix"),
            layer=get("layer", int, 0),
            host=get("host", str),
            port=get("port", int),
            fingerprint=get("fingerprint", str, None),
            sphinx_keys=keys,
            region=get("region", str, None),
            weight=weight,
            stream_keys=stream_keys,
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


def select_route(
    directory: Directory,
    epoch: int,
    layers: Sequence[int] | None = None,
    exit_node: str | None = None,
    rng: random.Random | None = None,
    avoid: Iterable[str] = (),
) -> list[Hop]:
    """One mix per layer, in layer order, each drawn with probability proportional to its weight
    among the layer's mixes that publish a key for `epoch`; then `exit_node` if given (the gateway
    that removes the last layer). `avoid` excludes nodes (e.g. a failed mix, or the mixes of
    another route when building disjoint routes)."""
    rng = rng or random.SystemRandom()
    avoided = set(avoid)
    route: list[Hop] = []
    for layer in layers if layers is not None else directory.layers():
        candidates = [r for r in directory.layer(layer) if epoch in r.sphinx_keys and r.node_id not in avoided]
        if not candidates:
            raise DirectoryError(f"no usable mix in layer {layer} for epoch {epoch}")
        chosen = rng.choices(candidates, weights=[r.weight for r in candidates])[0]
        route.append(chosen.hop(epoch))
    if exit_node is not None:
        record = directory.nodes.get(exit_node)
        if record is None:
            raise DirectoryError(f"exit {exit_node!r} is not in the directory")
        route.append(record.hop(epoch))
    return route


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


async def watch_directory(path: Path, interval_s: float, on_change: Callable[[Directory], None]) -> None:
    """Until cancelled: every `interval_s`, re-read `path` if it changed and hand the new
    directory to `on_change` (the node programs adopt new peers, routes for loop cover).

    A file that is briefly malformed (an operator mid-edit) is logged and skipped; the last good
    directory stays in force.
    """
    seen = _mtime(path)
    while True:
        await asyncio.sleep(interval_s)
        mtime = _mtime(path)
        if mtime == seen:
            continue
        seen = mtime
        try:
            directory = Directory.load(path)
        except DirectoryError as exc:
            log.warning("directory %s not reloaded: %s", path, exc)
            continue
        on_change(directory)
        log.info("directory %s reloaded: %d nodes", path, len(directory.nodes))
