"""What a mix carries across a restart: its keys and replay tables on disk (the I/O shell).

The bytes and the rule are in `nyx.mix.replay_store`; this module reads and writes the files in
the node's data dir (owner-only, atomic: `keystore.write_private`):

- `replay-state.bin`: every epoch's replay table, bound to the epoch's public key. Written by
  `ReplaySaver` every `interval_s` and once more when the node stops.
- `clean-shutdown`: written only after that last save, once the node accepts no more packets; it
  names the save, so it certifies that the state file holds every tag this run accepted.
- `recover` (at start): consumes the marker. With it, the saved tables are installed; without it
  (SIGKILL, crash, power loss) the keys of every epoch that could have accepted packets since
  the last save are replaced by fresh ones, so no recorded packet can be replayed through them.

A save copies the tables on the event loop (one memcpy each) and writes them in a thread.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nyx.mix.core import MixCore
from nyx.mix.keys import KeyRing
from nyx.mix.keystore import read_keyring, save_keyring, sync_directory, write_private
from nyx.mix.replay import ReplayFilter
from nyx.mix.replay_store import (
    SAVE_ID_BYTES,
    ReplayState,
    ReplayStateError,
    TableSnapshot,
    decode_marker,
    decode_state,
    encode_marker,
    plan_restart,
    snapshot,
    state_chunks,
)

log = logging.getLogger(__name__)

STATE_FILE = "replay-state.bin"
MARKER_FILE = "clean-shutdown"


@dataclass(frozen=True, slots=True)
class Recovery:
    """A starting mix's key ring and the replay tables to install; `replaced` lists the epochs
    whose keys were replaced because their replay state was not accounted for."""

    ring: KeyRing
    tables: dict[int, ReplayFilter]
    replaced: list[int]


def recover(data_dir: Path, epoch_s: float, overlap_s: float, now: float) -> Recovery:
    """Load keys and replay state, apply the restart rule, save the resulting ring, and consume
    the clean-shutdown marker (before any packet is accepted). Blocking: run it in a thread.

    KeyStoreError if the key file is unusable (an operator must look); a bad replay state is
    logged and handled by the rule, never fatal.
    """
    ring = read_keyring(data_dir, epoch_s, overlap_s)
    found = dict(ring.keys) if ring is not None else {}
    marker_path, state_path = data_dir / MARKER_FILE, data_dir / STATE_FILE
    problem, marker, state = "", None, None
    try:
        marker = decode_marker(marker_path.read_bytes())
    except FileNotFoundError:
        pass
    except (OSError, ReplayStateError) as exc:
        problem = f"{marker_path} unreadable ({exc})"
    try:
        state = decode_state(state_path.read_bytes())
    except FileNotFoundError:
        pass
    except (OSError, ReplayStateError) as exc:
        problem = f"{state_path} unusable: {exc}"
        log.error("replay state not restored: %s", problem)
    plan = plan_restart(found, state, marker, now, problem)
    if ring is None:
        ring = KeyRing(epoch_s=epoch_s, overlap_s=overlap_s)
    for epoch in plan.discard:
        del ring.keys[epoch]
    if plan.discard:
        log.warning(
            "replacing the Sphinx keys of epochs %s: %s. Their replay state since the last save is "
            "unknown, so packets built for them are now dropped (reason epoch or mac) until the "
            "directory lists the new keys",
            plan.discard, plan.reason,
        )
    elif plan.tables:
        log.info("replay tables restored for epochs %s (%d tags)", sorted(plan.tables),
                 sum(t.count for t in plan.tables.values()))
    ring.rotate(now)
    if set(ring.keys) != set(found) or plan.discard:
        save_keyring(ring, data_dir)
    if plan.discard:  # the saved tables belong to keys that are gone
        state_path.unlink(missing_ok=True)
    try:
        marker_path.unlink()  # consumed: from here on only a new final save vouches for the state
    except FileNotFoundError:
        pass
    else:
        sync_directory(data_dir)  # a marker back after a power loss would vouch for stale state
    # A table whose key just retired would never be freed (tables go when their key retires).
    return Recovery(ring, {e: t for e, t in plan.tables.items() if e in ring.keys}, plan.discard)


@dataclass(frozen=True, slots=True)
class _Snapshot:
    sequence: int
    save_id: bytes
    saved_at: float
    tables: list[TableSnapshot]


class ReplaySaver:
    """Saves a `MixCore`'s replay tables to `data_dir`: `run()` every `interval_s`, and
    `save_final()` once the node accepts nothing more (that save also writes the marker).

    Writes are serialised by a thread lock and ordered by snapshot: a write whose snapshot is
    older than the one on disk is skipped, so a periodic save still finishing in its thread can
    never overwrite the final state. After `save_final` nothing more is written.
    """

    def __init__(self, core: MixCore, data_dir: Path, interval_s: float, clock: Callable[[], float] = time.time) -> None:
        if not interval_s > 0:
            raise ValueError(f"replay save interval must be > 0 s, not {interval_s}")
        self.core = core
        self.data_dir = data_dir
        self.interval_s = interval_s
        self.clock = clock
        self.saves = 0
        self.failures = 0
        self.last_save_s = 0.0  # wall time of the last write, in its thread
        self.final = False
        self._sequence = 0
        self._written = 0
        self._file_lock = threading.Lock()

    async def run(self) -> None:
        """Save every `interval_s` until cancelled or until the final save."""
        while not self.final:
            await asyncio.sleep(self.interval_s)
            if not self.final:
                await self.save()

    async def save(self) -> bool:
        """Write the tables as they are now; False (logged) if that failed."""
        return await self._save(final=False)

    async def save_final(self) -> bool:
        """The last save of this run, then the clean-shutdown marker. The caller must have
        stopped accepting packets first, or the marker would vouch for an incomplete state."""
        if self.final:
            return True
        self.final = True
        ok = await self._save(final=True)
        if ok:
            log.info("replay state saved for epochs %s; clean-shutdown marker written",
                     sorted(self.core.replay.filters()))
        else:
            log.error("final replay save failed: the next start will replace the current keys")
        return ok

    def _snapshot(self) -> _Snapshot:
        self._sequence += 1
        keys = self.core.keyring.keys
        tables = [
            snapshot(epoch, keys[epoch].public_key, table)
            for epoch, table in sorted(self.core.replay.filters().items())
            if epoch in keys
        ]
        return _Snapshot(self._sequence, os.urandom(SAVE_ID_BYTES), self.clock(), tables)

    async def _save(self, *, final: bool) -> bool:
        taken = self._snapshot()  # on the loop: the tables cannot change under the copy
        try:
            await asyncio.to_thread(self._write, taken, final)
        except OSError as exc:
            self.failures += 1
            log.error("replay state not saved to %s: %s", self.data_dir / STATE_FILE, exc)
            return False
        return True

    def _write(self, taken: _Snapshot, final: bool) -> None:
        with self._file_lock:
            if taken.sequence < self._written:
                return  # a newer snapshot is already on disk
            started = time.perf_counter()
            write_private(self.data_dir / STATE_FILE, state_chunks(taken.save_id, taken.saved_at, taken.tables))
            if final:
                write_private(self.data_dir / MARKER_FILE, [encode_marker(taken.save_id)])
            self._written = taken.sequence
            self.saves += 1
            self.last_save_s = time.perf_counter() - started
            log.debug("replay state saved: %d tables in %.3f s", len(taken.tables), self.last_save_s)


def read_state(data_dir: Path) -> ReplayState:
    """The state file in `data_dir` (for tools and tests); ReplayStateError or OSError if not."""
    return decode_state((data_dir / STATE_FILE).read_bytes())
