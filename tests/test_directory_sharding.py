"""Directory sharding: consistent hashing of node ids, shard maps with home regions, the index.

The figures (50,000 ids on 4 shards of 128 virtual nodes) are deterministic: the ids and BLAKE2b
are fixed, so the bounds below are checks of the measured values, not statistical bets.
Measured: shares 0.235..0.268; a 5th shard moves 0.200 of the ids, all onto itself.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nyx.directory.records import DirectoryError, NodeRecord
from nyx.directory.sharding import HashRing, ShardedIndex, ShardMap, moved_fraction, moves, ring_point

FOUR = ["eu-0", "us-0", "ap-0", "sa-0"]
IDS = [f"node-{i:05d}" for i in range(50_000)]


def record(node_id: str, region: str | None = None, port: int = 9) -> NodeRecord:
    return NodeRecord(node_id, "mix", 1, "127.0.0.1", port, "00" * 32, {7: bytes(range(32))}, region)


def four_map() -> ShardMap:
    return ShardMap({"eu-0": "eu", "us-0": "us", "ap-0": "ap", "sa-0": "sa"})


# --- HashRing ---------------------------------------------------------------------------------

def test_placement_is_the_same_whatever_the_order_shards_were_added_in() -> None:
    a, b = HashRing(FOUR), HashRing(reversed(FOUR))
    assert all(a.shard_for(key) == b.shard_for(key) for key in IDS[:5_000])


def test_placement_is_pinned_across_runs_and_machines() -> None:
    # Pinned values: a change of hash, label format or tie rule would move every deployed record.
    assert ring_point("eu-0#0") == 5055797243123727565
    ring = HashRing(FOUR)
    assert [ring.shard_for(f"node-{i:05d}") for i in range(8)] == \
        ["ap-0", "us-0", "eu-0", "eu-0", "us-0", "ap-0", "eu-0", "eu-0"]
    assert ring.shard_for("mix-1-01") == "ap-0"


def test_every_key_maps_to_a_shard_on_the_ring() -> None:
    ring = HashRing(FOUR)
    assert {ring.shard_for(key) for key in IDS} == set(FOUR)


def test_four_shards_share_50000_ids_within_four_points_of_a_quarter() -> None:
    ring = HashRing(FOUR)
    shares = {shard: n / len(IDS) for shard, n in Counter(ring.shard_for(k) for k in IDS).items()}
    assert min(shares.values()) > 0.21 and max(shares.values()) < 0.29, shares


def test_a_fifth_shard_takes_about_a_fifth_of_the_ids_and_only_onto_itself() -> None:
    before = HashRing(FOUR)
    after = before.copy()
    after.add("af-0")
    fraction = moved_fraction(before, after, IDS)
    assert 0.2 * 0.7 < fraction < 0.2 * 1.3, fraction
    assert {new for _, new in moves(before, after, IDS)} == {"af-0"}


def test_removing_a_shard_moves_only_its_own_ids() -> None:
    before = HashRing(FOUR)
    after = before.copy()
    after.remove("us-0")
    moved = moves(before, after, IDS)
    assert {old for old, _ in moved} == {"us-0"}
    assert sum(moved.values()) == sum(before.shard_for(k) == "us-0" for k in IDS)


def test_adding_then_removing_a_shard_restores_every_placement() -> None:
    ring = HashRing(FOUR)
    changed = ring.copy()
    changed.add("af-0")
    changed.remove("af-0")
    assert moved_fraction(ring, changed, IDS[:5_000]) == 0.0


def test_moved_fraction_of_no_keys_is_zero() -> None:
    assert moved_fraction(HashRing(FOUR), HashRing(["eu-0"]), []) == 0.0


def test_an_empty_ring_refuses_to_place_a_key() -> None:
    with pytest.raises(DirectoryError, match="no shards"):
        HashRing().shard_for("mix-1")


def test_a_shard_cannot_be_added_twice_or_removed_when_absent() -> None:
    ring = HashRing(["eu-0"])
    with pytest.raises(DirectoryError, match="already"):
        ring.add("eu-0")
    with pytest.raises(DirectoryError, match="not on the ring"):
        ring.remove("us-0")


def test_a_ring_needs_a_virtual_node_and_named_shards() -> None:
    with pytest.raises(DirectoryError):
        HashRing(FOUR, vnodes=0)
    with pytest.raises(DirectoryError):
        HashRing([""])


# --- ShardMap ---------------------------------------------------------------------------------

def test_a_map_places_by_node_id_whatever_the_record_region() -> None:
    shard_map = four_map()
    assert shard_map.shard_for("mix-1-01") == HashRing(FOUR).shard_for("mix-1-01")


def test_a_map_tells_each_shard_home_region_and_the_shards_of_a_region() -> None:
    shard_map = ShardMap({"eu-0": "eu", "eu-1": "eu", "us-0": "us", "lab": None})
    assert shard_map.regions_of("eu-1") == frozenset({"eu"})
    assert shard_map.regions_of("lab") == frozenset()
    assert shard_map.home_region("us-0") == "us"
    assert shard_map.shards_in_region("eu") == ("eu-0", "eu-1")
    assert shard_map.shards_in_region("ap") == ()


def test_for_regions_names_shards_after_their_home_region() -> None:
    shard_map = ShardMap.for_regions(["eu", "us"], per_region=2)
    assert dict(shard_map.shards) == {"eu-0": "eu", "eu-1": "eu", "us-0": "us", "us-1": "us"}


def test_a_map_refuses_no_shards_and_unknown_shard_questions() -> None:
    with pytest.raises(DirectoryError):
        ShardMap({})
    with pytest.raises(DirectoryError, match="no shard"):
        four_map().regions_of("xx-0")


def test_with_and_without_shard_make_new_maps_and_leave_the_old_one() -> None:
    shard_map = four_map()
    grown = shard_map.with_shard("af-0", "af")
    assert "af-0" in grown.shards and "af-0" not in shard_map.shards
    assert grown.without_shard("af-0") == shard_map


# --- ShardedIndex -----------------------------------------------------------------------------

def test_a_put_record_is_found_by_its_id_in_the_shard_the_ring_names() -> None:
    index = ShardedIndex(four_map())
    shard = index.put(record("mix-1-01", "eu"))
    assert shard == four_map().shard_for("mix-1-01")
    assert index.get("mix-1-01") == record("mix-1-01", "eu")
    assert index.shard_sizes()[shard] == 1


def test_a_get_of_an_unknown_id_is_none() -> None:
    assert ShardedIndex(four_map()).get("mix-9") is None


def test_a_put_replaces_the_record_with_the_same_id() -> None:
    index = ShardedIndex(four_map())
    index.put(record("mix-1", port=1))
    index.put(record("mix-1", port=2))
    assert len(index) == 1 and index.get("mix-1").port == 2  # type: ignore[union-attr]


def test_remove_drops_the_record_and_returns_it() -> None:
    index = ShardedIndex(four_map())
    index.put(record("mix-1"))
    assert index.remove("mix-1") == record("mix-1")
    assert index.get("mix-1") is None and index.remove("mix-1") is None


def test_shard_sizes_list_every_shard_and_add_up() -> None:
    index = ShardedIndex(four_map())
    for i in range(1_000):
        index.put(record(f"mix-{i}"))
    sizes = index.shard_sizes()
    assert set(sizes) == set(FOUR) and sum(sizes.values()) == 1_000


def test_rebalance_to_five_shards_moves_only_the_records_the_new_shard_claims() -> None:
    index = ShardedIndex(four_map())
    ids = [f"mix-{i}" for i in range(2_000)]
    for node_id in ids:
        index.put(record(node_id))
    new_map = four_map().with_shard("af-0", "af")
    moved = index.rebalance(new_map)
    assert moved == index.shard_sizes()["af-0"] == sum(new_map.shard_for(i) == "af-0" for i in ids)
    assert all(index.get(node_id) == record(node_id) for node_id in ids)


def test_rebalance_after_removing_a_shard_moves_its_records_to_the_others() -> None:
    index = ShardedIndex(four_map())
    for i in range(2_000):
        index.put(record(f"mix-{i}"))
    held = index.shard_sizes()["us-0"]
    assert index.rebalance(four_map().without_shard("us-0")) == held
    assert "us-0" not in index.shard_sizes() and len(index) == 2_000


def test_a_snapshot_is_canonical_json_of_the_shard_records_in_id_order() -> None:
    index = ShardedIndex(four_map())
    for i in range(50):
        index.put(record(f"mix-{i}"))
    shard = "eu-0"
    raw = index.snapshot(shard)
    document = json.loads(raw)
    assert raw == json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    ids = [r["node_id"] for r in document["records"]]
    assert ids == sorted(ids) and len(ids) == index.shard_sizes()[shard]


def test_the_same_records_put_in_any_order_give_the_same_snapshot() -> None:
    a, b = ShardedIndex(four_map()), ShardedIndex(four_map())
    for i in range(50):
        a.put(record(f"mix-{i}"))
    for i in reversed(range(50)):
        b.put(record(f"mix-{i}"))
    assert all(a.snapshot(s) == b.snapshot(s) for s in FOUR)


def test_a_shard_is_rebuilt_from_its_snapshot() -> None:
    index = ShardedIndex(four_map())
    for i in range(200):
        index.put(record(f"mix-{i}", "eu"))
    snapshots = {shard: index.snapshot(shard) for shard in FOUR}
    rebuilt = ShardedIndex(four_map())
    for shard, raw in snapshots.items():
        rebuilt.restore(shard, raw)
    assert all(rebuilt.get(f"mix-{i}") == record(f"mix-{i}", "eu") for i in range(200))
    assert rebuilt.shard_sizes() == index.shard_sizes()


def test_restore_replaces_what_the_shard_held() -> None:
    index = ShardedIndex(four_map())
    empty = index.snapshot("eu-0")
    for i in range(200):
        index.put(record(f"mix-{i}"))
    assert index.restore("eu-0", empty) == 0
    assert index.shard_sizes()["eu-0"] == 0


def test_restore_refuses_a_record_that_belongs_to_another_shard() -> None:
    index = ShardedIndex(four_map())
    stranger = next(f"mix-{i}" for i in range(100) if four_map().shard_for(f"mix-{i}") != "eu-0")
    raw = json.dumps({"version": 1, "shard": "eu-0", "records": [record(stranger).to_json()]})
    index.put(record("mix-5"))  # on eu-0
    before = index.snapshot("eu-0")
    with pytest.raises(DirectoryError, match="places on shard"):
        index.restore("eu-0", raw.encode())
    assert index.snapshot("eu-0") == before


def test_restore_refuses_another_shard_snapshot() -> None:
    index = ShardedIndex(four_map())
    with pytest.raises(DirectoryError, match="not 'eu-0'"):
        index.restore("eu-0", index.snapshot("us-0"))


def test_restore_refuses_a_stale_snapshot_from_before_a_rebalance() -> None:
    index = ShardedIndex(four_map())
    for i in range(500):
        index.put(record(f"mix-{i}"))
    stale = index.snapshot("eu-0")
    index.rebalance(four_map().with_shard("af-0", "af"))
    with pytest.raises(DirectoryError, match="places on shard 'af-0'"):
        index.restore("eu-0", stale)


def test_restore_refuses_an_id_listed_twice() -> None:
    index = ShardedIndex(four_map())
    mine = next(f"mix-{i}" for i in range(100) if four_map().shard_for(f"mix-{i}") == "eu-0")
    raw = json.dumps({"version": 1, "shard": "eu-0", "records": [record(mine).to_json()] * 2})
    with pytest.raises(DirectoryError, match="twice"):
        index.restore("eu-0", raw.encode())


def test_snapshot_and_restore_refuse_a_shard_not_in_the_map() -> None:
    index = ShardedIndex(four_map())
    with pytest.raises(DirectoryError, match="no shard"):
        index.snapshot("xx-0")
    with pytest.raises(DirectoryError, match="no shard"):
        index.restore("xx-0", b"{}")


@given(st.binary(max_size=300))
def test_restore_of_any_bytes_is_a_directory_error_or_a_count(raw: bytes) -> None:
    index = ShardedIndex(four_map())
    try:
        assert index.restore("eu-0", raw) >= 0
    except DirectoryError:
        pass


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                    max_leaves=12))
def test_restore_of_any_json_is_a_directory_error_or_a_count(value: object) -> None:
    index = ShardedIndex(four_map())
    for document in (value, {"version": 1, "shard": "eu-0", "records": value},
                     {"version": 1, "shard": "eu-0", "records": [value]}):
        try:
            index.restore("eu-0", json.dumps(document).encode())
        except DirectoryError:
            pass
