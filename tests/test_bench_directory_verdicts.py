"""The directory replays (SCL-011 rebuild, SCL-046 lookups with the cache off), run briefly, and
each driven to FAIL by a fault its test names (and SCL-046 to INCONCLUSIVE by a rate far beyond
this machine).

No speed assertions: the machines are shared. What is checked is that the value is really
measured from real work (every entry restored, the document lists exactly the live reachable
nodes, every lookup read the store), and that the verdict turns when the thing it measures
goes wrong.
"""

from __future__ import annotations

import math
import time

import pytest

from nyx.directory.sharding import ShardedIndex
from nyx.directory.store import Store
from tests.test_bench_stream_verdicts import brief, check_shape

# -- SCL-011: rebuild of the sharded directory from snapshots -----------------------------------------


def test_scl_011_rebuilds_every_entry_and_lists_exactly_the_live_reachable_nodes() -> None:
    from nyx.bench.scenarios import scl_011

    result = brief("SCL-011", duration_s=1.0, scale=0.02)  # 1,000 entries
    record = check_shape(result)
    counts = record["counts"]
    assert counts["nodes"] == counts["restored"] == 1000 and counts["problems"] == 0
    assert counts["gateways"] == 50 and counts["dead"] == 20
    assert counts["heartbeats_accepted"] == 980 and counts["heartbeats_refused"] == 0
    # The probed sample: the impostor and the unreachable node fail their probes and are left out,
    # as are the dead; everything else is listed, and the client accepted the signed document.
    assert counts["probed"] == 16 and counts["probed_impostor"] == 1 and counts["probed_unreachable"] == 1
    assert counts["probes_ok"] == 14
    assert counts["listed"] == counts["expected_listed"] <= 1000 - 20
    assert counts["lookups_checked"] == 100 and counts["lookups_wrong"] == 0
    # the value counts one heartbeat interval on top of the measured steps
    assert result.measurement.value > scl_011.HEARTBEAT_INTERVAL_S / 60
    assert math.isclose(result.measurement.value * 60, result.measurement.duration_s + scl_011.HEARTBEAT_INTERVAL_S)
    assert any("batch reload per shard" in note and "shard-3 (eu-central)" in note for note in result.notes())


def test_scl_011_fails_when_nodes_heartbeat_less_often_than_the_slo_allows(monkeypatch: pytest.MonkeyPatch) -> None:
    from nyx.bench.scenarios import scl_011

    # Agents heartbeating every 20 minutes: the rebuilt directory cannot tell a dead node from a
    # quiet one for longer than the whole 15-minute budget.
    monkeypatch.setattr(scl_011, "HEARTBEAT_INTERVAL_S", 1200.0)
    result = brief("SCL-011", duration_s=1.0, scale=0.01)
    assert result.verdict == "FAIL" and result.measurement.value > 20.0


def test_scl_011_fails_when_a_snapshot_lost_a_record(monkeypatch: pytest.MonkeyPatch) -> None:
    from nyx.bench.scenarios import scl_011

    taken = scl_011.take_snapshots

    def lossy(index: ShardedIndex) -> dict[str, bytes]:
        snapshots = taken(index)
        lost = min(r.node_id for r in index.records() if index.shard_map.shard_for(r.node_id) == "shard-0")
        index.remove(lost)
        snapshots["shard-0"] = index.snapshot("shard-0")
        return snapshots

    monkeypatch.setattr(scl_011, "take_snapshots", lossy)
    result = brief("SCL-011", duration_s=1.0, scale=0.01)
    assert result.verdict == "FAIL" and result.measurement.value == math.inf
    assert result.as_json()["counts"]["restored"] == 499
    assert any(note.startswith("REBUILD WRONG") and "records but 1" in note for note in result.notes())


def test_scl_011_fails_when_a_snapshot_is_of_another_shard(monkeypatch: pytest.MonkeyPatch) -> None:
    from nyx.bench.scenarios import scl_011

    taken = scl_011.take_snapshots

    def swapped(index: ShardedIndex) -> dict[str, bytes]:
        snapshots = taken(index)
        snapshots["shard-0"], snapshots["shard-1"] = snapshots["shard-1"], snapshots["shard-0"]
        return snapshots

    monkeypatch.setattr(scl_011, "take_snapshots", swapped)
    result = brief("SCL-011", duration_s=1.0, scale=0.01)
    assert result.verdict == "FAIL" and result.measurement.value == math.inf
    assert any("not restored" in note and "snapshot is of shard 'shard-1', not 'shard-0'" in note
               for note in result.notes())


# -- SCL-046: lookups with the cache off, open-loop load on a real service ---------------------------


def test_scl_046_every_lookup_reads_the_store_with_the_cache_off() -> None:
    result = brief("SCL-046", duration_s=1.5, scale=0.2)  # 100 lookups/s over 10,000 records
    record = check_shape(result)
    counts = record["counts"]
    assert counts["records"] == 10_000
    assert counts["completed"] >= 140 and counts["failed"] == 0 and counts["missed"] == 0
    assert counts["cache_misses"] == counts["served"] == counts["completed"]
    assert result.measurement.value > 0 and len(result.measurement.latencies_s) == counts["completed"]
    assert any(note.startswith("directory_lookup_latency (the service's handler time, /metrics): mean")
               for note in result.notes())


def test_scl_046_fails_when_the_store_reads_slowly(monkeypatch: pytest.MonkeyPatch) -> None:
    lookup = Store.lookup

    def slow(self: Store, shard: str, node_id: str) -> str | None:
        time.sleep(0.02)  # 20 ms per read on the store's one thread: 50 reads/s against 100 asked
        return lookup(self, shard, node_id)

    monkeypatch.setattr(Store, "lookup", slow)
    result = brief("SCL-046", duration_s=1.0, scale=0.2)
    assert result.verdict == "FAIL" and result.measurement.value > 180.0
    assert result.as_json()["counts"]["failed"] == 0  # slow, not broken: the queue is what fails it


def test_scl_046_is_inconclusive_when_asked_far_more_than_this_machine_offers(monkeypatch: pytest.MonkeyPatch) -> None:
    from nyx.bench.scenarios import scl_046

    monkeypatch.setattr(scl_046, "RECORDS", 2_000)  # the rate is the point, not the table's size
    result = brief("SCL-046", duration_s=1.0, scale=40.0)  # 20,000 lookups/s
    assert result.shortfall and result.verdict == "INCONCLUSIVE"
    assert result.as_json()["counts"]["missed"] > 0
    assert any("could not offer the load" in note for note in result.notes())
