"""Where a node record lives: consistent hashing of node ids onto directory shards.

The directory's lookup side ("give me the record of node X") is split over a few shards, each
served by its own servers, so that no single server has to hold and answer for every record. The
issue asks for "records placed on 4 shards by region and consistent hashing (virtual nodes), so a
shard change moves about 1/n of the keys; lookups by node id go to the shard that holds it". Here
is what each part means in this module, and what it does not mean.

Placement is by node id alone. `HashRing` puts every shard at `vnodes` points of a 64-bit circle
(BLAKE2b-64 of f"{shard}#{i}") and a record on the shard owning the first point at or after
BLAKE2b-64 of its node id. Anyone holding the shard list can therefore name the one shard that
holds a record from the node id only: a lookup is a single hop, and the asker need not know (or
reveal) the node's region. Virtual nodes even out the shares (4 shards x 128 points, 50,000 ids:
each shard holds 23.5-26.8% of them), and adding or removing one shard moves only the keys that the
change itself claims or releases, about 1/n of them (a 5th shard takes 20.0%), never a key
between two shards that stay.

"By region" is the shards' home regions, not the records' placement. `ShardMap` gives each shard a
home region (or None), the region where that shard's servers and replicas run, so that readers
in a region find a nearby copy of the shards they ask most (`shards_in_region`) and one region's
outage takes only its shards' primaries down. We do not place a record on a shard by the node's
region: regions are few and uneven (most mixes may sit in one), so region placement would overload
one shard, move whole regions when a node moves, and make a lookup need the region first. Hashing
by id keeps shards even and lookups single-hop; the home region decides where the shard is served.

Lookups are for single records (a node's current address and keys, a fingerprint check). Clients
choose routes from the full, verified per-epoch document (`nyx.directory.document`), never from
lookups: a client that built routes from the few records it looked up would reveal, and be
limited to, a partial view (an epistemic attack). Sharding is about serving and storing records,
not about what a client may see.

`ShardedIndex` is the sans-I/O store behind a shard server: records per shard, lookups that look
only where the ring says, rebalancing to a new map, and canonical per-shard snapshots for rebuilding
a shard elsewhere.
"""

from __future__ import annotations

import bisect
import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from types import MappingProxyType

from nyx.directory.records import DirectoryError, NodeRecord

DEFAULT_VNODES = 128
SNAPSHOT_VERSION = 1


def ring_point(label: str) -> int:
    """A position on the ring: BLAKE2b with an 8-byte digest, read big-endian."""
    return int.from_bytes(hashlib.blake2b(label.encode("utf-8"), digest_size=8).digest(), "big")


class HashRing:
    """Consistent hashing of string keys onto named shards, with virtual nodes.

    Each shard owns `vnodes` points; a key belongs to the shard of the first point at or after the
    key's own point (wrapping around). The same shard list gives the same placement on every
    machine and in every run: nothing depends on insertion order or on Python's `hash`.
    """

    def __init__(self, shards: Iterable[str] = (), vnodes: int = DEFAULT_VNODES) -> None:
        if vnodes < 1:
            raise DirectoryError(f"a ring needs at least 1 virtual node per shard, got {vnodes}")
        self.vnodes = vnodes
        self._shards: set[str] = set()
        self._ring: list[tuple[int, str]] = []
        self._points: list[int] = []
        self._owners: list[str] = []
        for shard in shards:
            self.add(shard)

    @property
    def shards(self) -> frozenset[str]:
        return frozenset(self._shards)

    def __len__(self) -> int:
        return len(self._shards)

    def __contains__(self, shard: object) -> bool:
        return shard in self._shards

    def add(self, shard: str) -> None:
        """Give `shard` its points; only keys falling just before them change owner."""
        if not isinstance(shard, str) or not shard:
            raise DirectoryError(f"a shard name is a non-empty string, got {shard!r}")
        if shard in self._shards:
            raise DirectoryError(f"shard {shard!r} is already on the ring")
        self._shards.add(shard)
        self._ring.extend((ring_point(f"{shard}#{i}"), shard) for i in range(self.vnodes))
        self._reindex()

    def _reindex(self) -> None:
        # Sorting (point, shard) pairs: on a 64-bit collision the lower shard name comes first and
        # wins, so placement is a function of the shard set, not of the order shards were added in.
        self._ring.sort()
        self._points = [point for point, _ in self._ring]
        self._owners = [owner for _, owner in self._ring]

    def remove(self, shard: str) -> None:
        """Take `shard`'s points away; its keys go to the shards that follow them, no others move."""
        if shard not in self._shards:
            raise DirectoryError(f"shard {shard!r} is not on the ring")
        self._shards.remove(shard)
        self._ring = [(point, owner) for point, owner in self._ring if owner != shard]
        self._reindex()

    def shard_for(self, key: str) -> str:
        """The shard that holds `key`."""
        if not self._points:
            raise DirectoryError("the ring has no shards to place keys on")
        at = bisect.bisect_left(self._points, ring_point(key))
        return self._owners[at % len(self._owners)]

    def copy(self) -> HashRing:
        ring = HashRing(vnodes=self.vnodes)
        ring._shards = set(self._shards)
        ring._ring = list(self._ring)
        ring._points = list(self._points)
        ring._owners = list(self._owners)
        return ring


def moves(before: HashRing, after: HashRing, keys: Iterable[str]) -> Counter[tuple[str, str]]:
    """How many of `keys` go from which shard to which when `before` becomes `after`."""
    counts: Counter[tuple[str, str]] = Counter()
    for key in keys:
        old, new = before.shard_for(key), after.shard_for(key)
        if old != new:
            counts[(old, new)] += 1
    return counts


def moved_fraction(before: HashRing, after: HashRing, keys: Iterable[str]) -> float:
    """The share of `keys` whose shard differs between the two rings (0.0 for no keys)."""
    total = moved = 0
    for key in keys:
        total += 1
        moved += before.shard_for(key) != after.shard_for(key)
    return moved / total if total else 0.0


class ShardMap:
    """The directory's shards, each with a home region (or None), and the ring that places records.

    Immutable: a change of shards is a new map (`with_shard`, `without_shard`), which
    `ShardedIndex.rebalance` moves records to.
    """

    def __init__(self, shards: Mapping[str, str | None], vnodes: int = DEFAULT_VNODES) -> None:
        if not shards:
            raise DirectoryError("a shard map needs at least one shard")
        for name, region in shards.items():
            if region is not None and (not isinstance(region, str) or not region):
                raise DirectoryError(f"shard {name!r}: a home region is a non-empty string or None")
        self._regions: Mapping[str, str | None] = MappingProxyType(dict(sorted(shards.items())))
        self.ring = HashRing(self._regions, vnodes)

    @classmethod
    def for_regions(cls, regions: Iterable[str], per_region: int = 1,
                    vnodes: int = DEFAULT_VNODES) -> ShardMap:
        """`per_region` shards homed in each region, named f"{region}-{i}"."""
        return cls({f"{region}-{i}": region for region in regions for i in range(per_region)}, vnodes)

    @property
    def shards(self) -> Mapping[str, str | None]:
        """Shard name -> home region (read-only)."""
        return self._regions

    def shard_for(self, node_id: str) -> str:
        """The shard holding `node_id`'s record: from the id alone, whatever the node's region."""
        return self.ring.shard_for(node_id)

    def home_region(self, shard: str) -> str | None:
        if shard not in self._regions:
            raise DirectoryError(f"no shard {shard!r} in the map")
        return self._regions[shard]

    def regions_of(self, shard: str) -> frozenset[str]:
        """The regions `shard` is served from: its home region (empty when it has none). A set, so
        that a shard replicated in several regions fits the same question later."""
        region = self.home_region(shard)
        return frozenset() if region is None else frozenset({region})

    def shards_in_region(self, region: str) -> tuple[str, ...]:
        """The shards homed in `region`, sorted: what a server or cache there should hold."""
        return tuple(name for name, home in self._regions.items() if home == region)

    def with_shard(self, shard: str, region: str | None) -> ShardMap:
        if shard in self._regions:
            raise DirectoryError(f"shard {shard!r} is already in the map")
        return ShardMap({**self._regions, shard: region}, self.ring.vnodes)

    def without_shard(self, shard: str) -> ShardMap:
        if shard not in self._regions:
            raise DirectoryError(f"no shard {shard!r} in the map")
        return ShardMap({k: v for k, v in self._regions.items() if k != shard}, self.ring.vnodes)

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, ShardMap) and dict(self._regions) == dict(other._regions)
                and self.ring.vnodes == other.ring.vnodes)

    def __hash__(self) -> int:
        return hash((tuple(self._regions.items()), self.ring.vnodes))

    def __repr__(self) -> str:
        return f"ShardMap({dict(self._regions)!r})"


class ShardedIndex:
    """Node records kept per shard of a `ShardMap` (sans-I/O, in memory).

    A record is only ever in the shard the ring names for its id, and `get` looks only there, as a
    shard server that holds one shard would: a record that is not where the ring says is absent.
    """

    def __init__(self, shard_map: ShardMap) -> None:
        self._map = shard_map
        self._shards: dict[str, dict[str, NodeRecord]] = {name: {} for name in shard_map.shards}

    @property
    def shard_map(self) -> ShardMap:
        return self._map

    def __len__(self) -> int:
        return sum(len(records) for records in self._shards.values())

    def records(self) -> Iterator[NodeRecord]:
        for records in self._shards.values():
            yield from records.values()

    def put(self, record: NodeRecord) -> str:
        """Store (or replace) `record`; returns the shard it went to."""
        shard = self._map.shard_for(record.node_id)
        self._shards[shard][record.node_id] = record
        return shard

    def get(self, node_id: str) -> NodeRecord | None:
        return self._shards[self._map.shard_for(node_id)].get(node_id)

    def remove(self, node_id: str) -> NodeRecord | None:
        """Drop `node_id`'s record; returns it, or None if there was none."""
        return self._shards[self._map.shard_for(node_id)].pop(node_id, None)

    def shard_sizes(self) -> dict[str, int]:
        """Records per shard, every shard of the map listed (sorted by name)."""
        return {name: len(records) for name, records in sorted(self._shards.items())}

    def rebalance(self, new_map: ShardMap) -> int:
        """Switch to `new_map`, moving each record whose shard changed; returns how many moved.

        Records on shards that `new_map` drops go to the shards that take over their ring points;
        new shards start with the records they claim. Nothing else moves.
        """
        moved = 0
        shards: dict[str, dict[str, NodeRecord]] = {name: {} for name in new_map.shards}
        for old, records in self._shards.items():
            for node_id, record in records.items():
                new = new_map.shard_for(node_id)
                shards[new][node_id] = record
                moved += new != old
        self._map, self._shards = new_map, shards
        return moved

    def _known_shard(self, shard: str) -> dict[str, NodeRecord]:
        if shard not in self._shards:
            raise DirectoryError(f"no shard {shard!r} in the map (shards: {sorted(self._shards)})")
        return self._shards[shard]

    def snapshot(self, shard: str) -> bytes:
        """The shard's records as canonical JSON: one byte string for one set of records, so two
        servers holding the same shard can compare snapshots by hash."""
        records = self._known_shard(shard)
        document = {
            "version": SNAPSHOT_VERSION,
            "shard": shard,
            "records": [records[node_id].to_json() for node_id in sorted(records)],
        }
        return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()

    def restore(self, shard: str, snapshot: bytes) -> int:
        """Rebuild `shard` from a snapshot (replacing what it held); returns the record count.

        Refuses, leaving the shard as it was, a snapshot of another shard, of a record the current
        map places elsewhere (a stale snapshot from before a rebalance, or a forged one), or with
        a node id twice.
        """
        self._known_shard(shard)
        try:
            document = json.loads(snapshot)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DirectoryError(f"snapshot of shard {shard!r}: not JSON ({exc})") from exc
        if not isinstance(document, dict) or document.get("version") != SNAPSHOT_VERSION:
            raise DirectoryError(f"snapshot of shard {shard!r}: expected an object with "
                                 f"\"version\": {SNAPSHOT_VERSION}")
        if document.get("shard") != shard:
            raise DirectoryError(f"snapshot is of shard {document.get('shard')!r}, not {shard!r}")
        raw_records = document.get("records")
        if not isinstance(raw_records, list):
            raise DirectoryError(f"snapshot of shard {shard!r}: records must be a list")
        records: dict[str, NodeRecord] = {}
        for i, raw in enumerate(raw_records):
            record = NodeRecord.from_json(raw, f"snapshot[{shard}].records[{i}]")
            owner = self._map.shard_for(record.node_id)
            if owner != shard:
                raise DirectoryError(f"snapshot of shard {shard!r} holds {record.node_id!r}, "
                                     f"which the map places on shard {owner!r}")
            if record.node_id in records:
                raise DirectoryError(f"snapshot of shard {shard!r} lists {record.node_id!r} twice")
            records[record.node_id] = record
        self._shards[shard] = records
        return len(records)
