"""The replay state file, the clean-shutdown marker and the restart rule (sans-I/O), plus the
file shell (`nyx.mix.restart.recover`) on a real directory."""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from nyx.mix import KeyRing, MixCore
from nyx.mix.__main__ import mix_settings, parser
from nyx.mix.keystore import KEY_FILE, save_keyring
from nyx.mix.replay import ReplayFilter
from nyx.mix.replay_store import (
    ReplayState,
    ReplayStateError,
    decode_marker,
    decode_state,
    encode_marker,
    encode_state,
    plan_restart,
    snapshot,
)
from nyx.mix.restart import MARKER_FILE, STATE_FILE, ReplaySaver, read_state, recover
from nyx.node.config import ConfigError, parse_config

SAVE_ID = bytes(range(16))


def filled(capacity: int, tags: list[bytes]) -> ReplayFilter:
    table = ReplayFilter(capacity)
    for tag in tags:
        table.add(tag)
    return table


def test_a_saved_table_still_recognises_every_tag_and_only_those() -> None:
    tags = [os.urandom(16) for _ in range(300)]
    key = os.urandom(32)
    data = encode_state(SAVE_ID, 1234.5, [snapshot(7, key, filled(512, tags))])
    state = decode_state(data)
    assert (state.save_id, state.saved_at, list(state.tables)) == (SAVE_ID, 1234.5, [7])
    restored = state.tables[7]
    assert restored.public_key == key and restored.replay.capacity == 512 and restored.replay.count == 300
    assert not any(restored.replay.add(tag) for tag in tags)  # all replays
    assert restored.replay.add(os.urandom(16))


def test_a_state_with_no_tables_round_trips() -> None:
    assert decode_state(encode_state(SAVE_ID, 0.0, [])) == ReplayState(SAVE_ID, 0.0, {})


def test_a_truncated_state_is_refused_with_a_clear_error() -> None:
    data = encode_state(SAVE_ID, 1.0, [snapshot(1, bytes(32), filled(64, [os.urandom(16)]))])
    for cut in (0, 10, len(data) // 2, len(data) - 1):
        with pytest.raises(ReplayStateError, match="truncated|checksum"):
            decode_state(data[:cut])


def test_a_flipped_bit_is_refused_by_the_checksum() -> None:
    data = bytearray(encode_state(SAVE_ID, 1.0, [snapshot(1, bytes(32), filled(64, [os.urandom(16)]))]))
    data[100] ^= 1
    with pytest.raises(ReplayStateError, match="checksum"):
        decode_state(bytes(data))


def test_another_format_is_refused_by_its_magic() -> None:
    with pytest.raises(ReplayStateError, match="magic"):
        decode_state(b"{" + bytes(100))


def _resealed(body: bytes) -> bytes:
    return body + hashlib.sha256(body).digest()


def test_a_table_whose_count_disagrees_with_its_slots_is_refused_even_with_a_valid_checksum() -> None:
    good = encode_state(SAVE_ID, 1.0, [snapshot(1, bytes(32), filled(64, [os.urandom(16)]))])[:-32]
    # the table header's count field sits after magic, id, saved_at, n and epoch + public key + capacity
    at = 8 + 16 + 8 + 4 + 8 + 32 + 8
    forged = good[:at] + (5).to_bytes(8, "little") + good[at + 8 :]
    with pytest.raises(ReplayStateError, match="holds 1 tags but says 5"):
        decode_state(_resealed(forged))


def test_a_table_with_every_slot_filled_is_refused_since_adding_to_it_would_never_end() -> None:
    table = ReplayFilter.from_table(2, 2, (1).to_bytes(4, "little") * 2 + bytes(8))
    assert table.count == 2
    with pytest.raises(ValueError, match="holds 4 tags"):
        ReplayFilter.from_table(2, 2, (1).to_bytes(4, "little") * 4)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_any_bytes_decode_to_a_state_or_a_replay_state_error(data: bytes) -> None:
    for candidate in (data, _resealed(data), _resealed(b"NYXRPL01" + data)):
        try:
            state = decode_state(candidate)
        except ReplayStateError:
            continue
        assert all(t.replay.count <= t.replay.capacity for t in state.tables.values())


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_any_bytes_decode_to_a_marker_or_a_replay_state_error(data: bytes) -> None:
    try:
        assert len(decode_marker(data)) == 16
    except ReplayStateError:
        pass
    assert decode_marker(encode_marker(SAVE_ID)) == SAVE_ID


def ring_at(epochs: list[int]) -> KeyRing:
    ring = KeyRing(epoch_s=100.0, overlap_s=10.0)
    for epoch in epochs:
        ring.add(epoch, X25519PrivateKey.generate())
    return ring


def test_a_clean_restart_installs_the_saved_tables_of_the_same_keys() -> None:
    ring = ring_at([2, 3])
    table = filled(64, [os.urandom(16)])
    state = decode_state(encode_state(SAVE_ID, 250.0, [snapshot(2, ring.keys[2].public_key, table)]))
    plan = plan_restart(ring.keys, state, SAVE_ID, now=260.0)
    assert plan.discard == [] and list(plan.tables) == [2] and plan.tables[2].count == 1


def test_a_table_saved_under_another_key_is_never_applied() -> None:
    ring = ring_at([2, 3])
    state = decode_state(encode_state(SAVE_ID, 250.0, [snapshot(2, os.urandom(32), filled(64, [os.urandom(16)]))]))
    plan = plan_restart(ring.keys, state, SAVE_ID, now=260.0)
    assert plan.tables == {} and plan.discard == [2] and "other keys" in plan.reason


def test_without_a_marker_every_key_already_valid_is_replaced_and_future_ones_kept() -> None:
    ring = ring_at([2, 3])  # epoch 3's key is valid from 290
    state = decode_state(encode_state(SAVE_ID, 250.0, []))
    plan = plan_restart(ring.keys, state, None, now=260.0)
    assert plan.discard == [2] and "no clean-shutdown marker" in plan.reason
    assert plan_restart(ring.keys, None, None, now=295.0).discard == [2, 3]
    # a marker for another save vouches for nothing
    assert plan_restart(ring.keys, state, bytes(16), now=260.0).discard == [2]
    # the save's clock bounds it too, if the clock has since gone back
    assert plan_restart(ring.keys, decode_state(encode_state(SAVE_ID, 295.0, [])), None, now=260.0).discard == [2, 3]


def test_a_first_start_has_nothing_to_replace() -> None:
    assert plan_restart({}, None, None, now=10.0).discard == []


def test_recover_consumes_the_marker_and_replaces_keys_after_a_corrupt_state(tmp_path: Path) -> None:
    ring = ring_at([2, 3])
    save_keyring(ring, tmp_path)
    (tmp_path / STATE_FILE).write_bytes(b"NYXRPL01 torn write")
    (tmp_path / MARKER_FILE).write_bytes(encode_marker(SAVE_ID))
    recovered = recover(tmp_path, 100.0, 10.0, now=260.0)
    assert recovered.replaced == [2] and recovered.tables == {}
    assert recovered.ring.keys[2].public_key != ring.keys[2].public_key
    assert recovered.ring.keys[3].public_key == ring.keys[3].public_key
    assert not (tmp_path / MARKER_FILE).exists() and not (tmp_path / STATE_FILE).exists()
    again = recover(tmp_path, 100.0, 10.0, now=261.0)  # no marker now: a crash right after start
    assert again.replaced == [2]


async def test_the_saver_writes_owner_only_files_that_recover_trusts_once(tmp_path: Path) -> None:
    ring = ring_at([2, 3])
    save_keyring(ring, tmp_path)
    core = MixCore(ring, replay_capacity=128)
    tag = os.urandom(16)
    assert core.replay.check(2, tag) is None
    saver = ReplaySaver(core, tmp_path, interval_s=60.0, clock=lambda: 255.0)
    assert await saver.save() and not (tmp_path / MARKER_FILE).exists()  # periodic: no marker
    assert await saver.save_final()
    for name in (STATE_FILE, MARKER_FILE, KEY_FILE):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600
    assert read_state(tmp_path).saved_at == 255.0
    recovered = recover(tmp_path, 100.0, 10.0, now=260.0)
    assert recovered.replaced == [] and recovered.tables[2].add(tag) is False
    assert recover(tmp_path, 100.0, 10.0, now=260.0).replaced == [2]  # the marker was consumed


async def test_a_table_whose_key_retired_while_the_mix_was_down_is_not_installed(tmp_path: Path) -> None:
    ring = ring_at([2, 3])
    save_keyring(ring, tmp_path)
    core = MixCore(ring, replay_capacity=64)
    core.replay.check(2, os.urandom(16))
    assert await ReplaySaver(core, tmp_path, 60.0, clock=lambda: 255.0).save_final()
    recovered = recover(tmp_path, 100.0, 10.0, now=315.0)  # epoch 2's key retired at 310
    assert recovered.replaced == [] and recovered.tables == {} and sorted(recovered.ring.keys) == [3, 4]


def test_a_marker_without_its_state_vouches_for_nothing() -> None:
    ring = ring_at([2, 3])
    plan = plan_restart(ring.keys, None, SAVE_ID, now=260.0)
    assert plan.discard == [2] and "no replay state" in plan.reason


async def test_the_saver_saves_every_interval_until_cancelled(tmp_path: Path) -> None:
    ring = ring_at([2, 3])
    core = MixCore(ring, replay_capacity=64)
    core.replay.check(2, os.urandom(16))
    saver = ReplaySaver(core, tmp_path, interval_s=0.02)
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(saver.run())
        async with asyncio.timeout(5):
            while saver.saves < 2:
                await asyncio.sleep(0.01)
        task.cancel()
    assert read_state(tmp_path).tables[2].replay.count == 1
    assert not (tmp_path / MARKER_FILE).exists()  # only a final save vouches for the state


def test_the_save_interval_must_be_positive() -> None:
    args = parser().parse_args([])
    config = parse_config({"node_id": "mix-1", "mix": {"replay_save_s": 0}}, tables=("mix",))
    with pytest.raises(ConfigError, match="replay_save_s"):
        mix_settings(config, args)
    assert mix_settings(parse_config({"node_id": "mix-1"}), args).replay_save_s == 60.0
