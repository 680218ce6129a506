"""What a mix keeps of its replay tables across a restart, and the rule for trusting it (sans-I/O).

A replay table only protects while it is complete: a tag missing from it lets that packet through
a second time, and the mix then emits the byte-identical next-hop packet, linking input to
output at this hop. So a restarted mix may apply saved tables only if nothing was accepted after
they were taken. The shell (`nyx.mix.restart`) saves on drain and periodically, and writes a
clean-shutdown marker naming the save it ends with; this module holds the bytes and the rule:

- `encode_state` / `decode_state`: the state file. Per epoch the table is bound to the epoch's
  public key, so it is never applied to another key; a SHA-256 over the whole file catches
  corruption and truncation, and the tables themselves are checked (`ReplayFilter.from_table`).
- `encode_marker` / `decode_marker`: the clean-shutdown marker, bound to one save by its id.
- `plan_restart`: given the keys found on disk, the state and the marker, which tables to install
  and which epochs' keys must be replaced because their replay state is not accounted for.

Every error is a `ReplayStateError` that says what is wrong with which part of the file.
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from nyx.mix.keys import EpochKey
from nyx.mix.replay import SLOT_BYTES, ReplayFilter

STATE_MAGIC = b"NYXRPL01"  # state file format, version 1
MARKER_MAGIC = b"NYXCLN01"  # clean-shutdown marker, version 1
SAVE_ID_BYTES = 16
MAX_TABLES = 64  # a ring holds 2-3 epochs; more is not a file we wrote
_HEADER = struct.Struct("<8s16sdI")  # magic, save id, saved_at (wall-clock s), table count
_TABLE = struct.Struct("<q32sQQ")  # epoch, public key, capacity (tags), count (tags held)
_DIGEST_BYTES = 32  # SHA-256 of everything before it


class ReplayStateError(ValueError):
    """A replay state file or clean-shutdown marker is corrupt, truncated or not ours."""


@dataclass(frozen=True, slots=True)
class TableSnapshot:
    """One epoch's table as saved: `table` from `ReplayFilter.table_bytes`."""

    epoch: int
    public_key: bytes
    capacity: int
    count: int
    table: bytes


@dataclass(frozen=True, slots=True)
class EpochTable:
    """One epoch's restored table and the public key it was recorded under."""

    epoch: int
    public_key: bytes
    replay: ReplayFilter


@dataclass(frozen=True, slots=True)
class ReplayState:
    """A decoded state file."""

    save_id: bytes
    saved_at: float
    tables: dict[int, EpochTable] = field(default_factory=dict)


def snapshot(epoch: int, public_key: bytes, replay: ReplayFilter) -> TableSnapshot:
    """Copy one live table (on the event loop: one memcpy; the write can then go to a thread)."""
    return TableSnapshot(epoch, public_key, replay.capacity, replay.count, replay.table_bytes())


def state_chunks(save_id: bytes, saved_at: float, tables: list[TableSnapshot]) -> Iterator[bytes]:
    """The state file as a sequence of chunks (a 34 MB table is written, never concatenated)."""
    if len(save_id) != SAVE_ID_BYTES:
        raise ValueError(f"a save id is {SAVE_ID_BYTES} bytes, not {len(save_id)}")
    if len(tables) > MAX_TABLES:
        raise ValueError(f"at most {MAX_TABLES} replay tables per file, not {len(tables)}")
    digest = hashlib.sha256()
    header = _HEADER.pack(STATE_MAGIC, save_id, saved_at, len(tables))
    digest.update(header)
    yield header
    for table in tables:
        if len(table.public_key) != 32 or len(table.table) != 2 * table.capacity * SLOT_BYTES:
            raise ValueError(f"epoch {table.epoch}: malformed table snapshot")
        head = _TABLE.pack(table.epoch, table.public_key, table.capacity, table.count)
        digest.update(head)
        digest.update(table.table)
        yield head
        yield table.table
    yield digest.digest()


def encode_state(save_id: bytes, saved_at: float, tables: list[TableSnapshot]) -> bytes:
    return b"".join(state_chunks(save_id, saved_at, tables))


def decode_state(data: bytes | memoryview) -> ReplayState:
    """Parse and check a state file; ReplayStateError for anything but a file we wrote intact."""
    view = memoryview(data)
    if len(view) < _HEADER.size + _DIGEST_BYTES:
        raise ReplayStateError(f"replay state truncated: {len(view)} bytes, less than a header")
    if bytes(view[:8]) != STATE_MAGIC:
        raise ReplayStateError("not a replay state file (bad magic or another format version)")
    body, digest = view[:-_DIGEST_BYTES], bytes(view[-_DIGEST_BYTES:])
    if hashlib.sha256(body).digest() != digest:
        raise ReplayStateError("replay state checksum mismatch: the file is truncated or corrupt")
    _, save_id, saved_at, count = _HEADER.unpack_from(body)
    if not math.isfinite(saved_at):
        raise ReplayStateError(f"replay state saved_at is {saved_at}")
    if count > MAX_TABLES:
        raise ReplayStateError(f"replay state lists {count} tables (at most {MAX_TABLES})")
    offset, tables = _HEADER.size, {}
    for index in range(count):
        if len(body) - offset < _TABLE.size:
            raise ReplayStateError(f"replay state truncated in table {index}'s header")
        epoch, public_key, capacity, held = _TABLE.unpack_from(body, offset)
        offset += _TABLE.size
        size = 2 * capacity * SLOT_BYTES
        if capacity < 1 or size > len(body) - offset:
            raise ReplayStateError(f"replay table of epoch {epoch}: capacity {capacity} does not fit the file")
        if epoch in tables:
            raise ReplayStateError(f"replay state lists epoch {epoch} twice")
        try:
            replay = ReplayFilter.from_table(capacity, held, body[offset : offset + size])
        except ValueError as exc:
            raise ReplayStateError(f"replay table of epoch {epoch}: {exc}") from exc
        offset += size
        tables[epoch] = EpochTable(epoch, public_key, replay)
    if offset != len(body):
        raise ReplayStateError(f"replay state has {len(body) - offset} bytes after its last table")
    return ReplayState(save_id, saved_at, tables)


def encode_marker(save_id: bytes) -> bytes:
    """The clean-shutdown marker: "the state file with this save id holds every accepted tag"."""
    if len(save_id) != SAVE_ID_BYTES:
        raise ValueError(f"a save id is {SAVE_ID_BYTES} bytes, not {len(save_id)}")
    return MARKER_MAGIC + save_id


def decode_marker(data: bytes) -> bytes:
    """The save id a marker names; ReplayStateError if it is not a marker."""
    if len(data) != len(MARKER_MAGIC) + SAVE_ID_BYTES or not data.startswith(MARKER_MAGIC):
        raise ReplayStateError("not a clean-shutdown marker")
    return bytes(data[len(MARKER_MAGIC) :])


@dataclass(frozen=True, slots=True)
class RestartPlan:
    """What a starting mix does with the keys it found: install `tables`, replace the keys of
    `discard` (their replay state is not accounted for), and log `reason` if that is not empty."""

    tables: dict[int, ReplayFilter]
    discard: list[int]
    reason: str = ""


def plan_restart(
    keys: Mapping[int, EpochKey],
    state: ReplayState | None,
    marker_save_id: bytes | None,
    now: float,
    problem: str = "",
) -> RestartPlan:
    """The restart rule.

    Clean (a marker naming this very state, which the last process wrote after it stopped
    accepting): every key's table is the saved one, or empty if none was saved. A table recorded
    under another public key is never applied: that epoch is refused as unaccounted.

    Otherwise (SIGKILL, crash, power loss, a missing, corrupt or mismatched state; `problem`
    says what the caller found): tags accepted since the last save are lost, and the last process
    may have run until `now`, so every key that was already valid by then (or by the save's own
    clock, if the clock went back) must go. Keys not yet valid accepted nothing and stay.
    """
    tables: dict[int, ReplayFilter] = {}
    refused: list[int] = []
    for epoch, key in keys.items():
        saved = state.tables.get(epoch) if state is not None else None
        if saved is None:
            continue
        if saved.public_key != key.public_key:
            refused.append(epoch)
        else:
            tables[epoch] = saved.replay
    clean = state is not None and marker_save_id is not None and marker_save_id == state.save_id
    if clean and not refused:
        return RestartPlan(tables, [])
    if clean:
        return RestartPlan(
            {e: t for e, t in tables.items() if e not in refused},
            sorted(refused),
            f"the saved replay tables of epochs {sorted(refused)} were recorded under other keys",
        )
    if not keys:
        return RestartPlan({}, [])
    horizon = max(now, state.saved_at) if state is not None else now
    discard = sorted(set(refused) | {e for e, key in keys.items() if key.valid_from <= horizon})
    if not problem:
        if marker_save_id is None:
            problem = "no clean-shutdown marker (the last run was killed, crashed or lost power)"
        elif state is None:
            problem = "a clean-shutdown marker but no replay state"
        else:
            problem = "the clean-shutdown marker names another save than the replay state"
    return RestartPlan({e: t for e, t in tables.items() if e not in discard}, discard, problem)
