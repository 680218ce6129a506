"""`watch_directory`: the node programs' refresh of the directory file, shared by mix and gateway."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from nyx.mix.directory import Directory, NodeRecord, watch_directory


def record(node_id: str) -> NodeRecord:
    return NodeRecord(node_id, "mix", 1, "127.0.0.1", 9, "00" * 32, {0: bytes(range(32))})


async def test_a_changed_file_is_adopted_and_a_malformed_one_skipped(tmp_path: Path) -> None:
    path = tmp_path / "directory.json"
    Directory.of([record("mix-1")]).save(path)
    seen: list[list[str]] = []
    watcher = asyncio.create_task(watch_directory(path, 0.01, lambda d: seen.append(sorted(d.nodes))))
    try:
        await asyncio.sleep(0.05)
        assert seen == []  # unchanged: nothing to adopt
        path.write_text("{ half written")
        os.utime(path, (1, 1))
        await asyncio.sleep(0.05)
        assert seen == []  # malformed: the last good directory stays
        Directory.of([record("mix-1"), record("mix-2")]).save(path)
        os.utime(path, (2, 2))
        for _ in range(100):
            if seen:
                break
            await asyncio.sleep(0.01)
        assert seen == [["mix-1", "mix-2"]]
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
