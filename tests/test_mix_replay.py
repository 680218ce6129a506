"""The replay filter: exact for tags it holds, bounded memory, refuses rather than degrades."""

from __future__ import annotations

import os

import pytest

from nyx.mix.replay import BYTES_PER_TAG, FALSE_POSITIVE_RATE, ReplayCache, ReplayFilter


def test_a_tag_is_new_once_and_a_replay_after() -> None:
    table = ReplayFilter(capacity=100)
    tag = os.urandom(16)
    assert table.add(tag) is True
    assert table.add(tag) is False


def test_a_full_filter_refuses_new_tags_but_still_recognises_old_ones() -> None:
    table = ReplayFilter(capacity=1000)
    tags = [os.urandom(16) for _ in range(1000)]
    assert all(table.add(tag) for tag in tags)
    assert not any(table.add(tag) for tag in tags)
    cache = ReplayCache(capacity_per_epoch=1)
    assert cache.check(0, tags[0]) is None
    assert cache.check(0, tags[1]) == "replay_full"
    assert cache.check(0, tags[0]) == "replay"


def test_memory_is_bounded_by_the_capacity() -> None:
    table = ReplayFilter(capacity=1 << 16)
    assert table.memory_bytes == (1 << 16) * BYTES_PER_TAG


def test_false_positives_stay_near_the_stated_rate_at_full_load() -> None:
    table = ReplayFilter(capacity=1 << 16)
    for _ in range((1 << 16) - 20_000):
        table.add(os.urandom(16))
    false = sum(not table.add(os.urandom(16)) for _ in range(20_000))  # the last one fills it
    assert false == 0  # the stated rate is 5.8e-10; 20k fresh tags should see none
    assert table.count == table.capacity
    assert FALSE_POSITIVE_RATE < 1e-9


def test_tags_are_kept_per_epoch_and_freed_with_it() -> None:
    cache = ReplayCache(capacity_per_epoch=16)
    tag = os.urandom(16)
    assert cache.check(0, tag) is None
    assert cache.check(1, tag) is None  # another epoch's key never produces this tag for a replay
    cache.retire(0)
    assert cache.epochs() == [1]


def test_a_filter_needs_a_positive_capacity() -> None:
    with pytest.raises(ValueError, match="capacity"):
        ReplayFilter(0)
