"""The mix layer's view of the directory: route selection and watching a static directory file.

The records and the file format live in `nyx.directory.records` (re-exported here, where the mix
and stream layers have always imported them); the signed, sharded directory service is
`nyx.directory` (docs/directory.md).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from nyx.directory.paths import select_layers
from nyx.directory.records import DIRECTORY_VERSION, Directory, DirectoryError, Hop, NodeRecord

__all__ = [
    "DIRECTORY_VERSION",
    "Directory",
    "DirectoryError",
    "NodeRecord",
    "select_route",
    "watch_directory",
]

log = logging.getLogger(__name__)


def select_route(
    directory: Directory,
    epoch: int,
    layers: Sequence[int] | None = None,
    exit_node: str | None = None,
    rng: random.Random | None = None,
    avoid: Iterable[str] = (),
) -> list[Hop]:
    """One mix per layer, in layer order, drawn by `nyx.directory.paths.select_layers` from the
    layer's full list (mixes that publish a key for `epoch`, in proportion to their weight, no
    region above half a layer's mass); then `exit_node` if given (the gateway that removes the
    last layer). `avoid` excludes nodes (e.g. a failed mix, or the mixes of another route when
    building disjoint routes)."""
    chosen = select_layers(directory, epoch, rng, layers=layers, avoid=avoid)
    route = [record.hop(epoch) for record in chosen]
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
