"""The directory's storage: registrations by shard and the documents it issued, in SQLite.

Why keep them: an authority that restarts must go on with the next epoch number (clients refuse an
older epoch than they hold) and must still know which certificate each node id registered with
(else anyone could re-register a known id with their own key). Health is not stored: after a
restart every node is unknown until its next heartbeat, which is the safe direction.

Lookups by node id read the row of the shard that holds the id (`shard` column, from
`ShardMap`), so with the cache off (SCL-046) every lookup is one indexed read. SQLite calls block,
so the asyncio service runs them on the store's single worker thread (`call`), never on the loop;
one thread also keeps the connection on the thread that made it.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from nyx.directory.authority import Registration
from nyx.directory.records import NodeRecord

T = TypeVar("T")
DB_FILE = "directory.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS registrations (
    node_id TEXT PRIMARY KEY,
    shard TEXT NOT NULL,
    record TEXT NOT NULL,
    certificate BLOB NOT NULL,
    last_issued_at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS registrations_by_shard ON registrations (shard, node_id);
CREATE TABLE IF NOT EXISTS documents (epoch INTEGER PRIMARY KEY, raw BLOB NOT NULL);
"""


class Store:
    """One SQLite file in the data directory. Methods are synchronous; `call` runs one on the
    store's thread from asyncio."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nyx-directory-store")
        self._db: sqlite3.Connection | None = None
        self._executor.submit(self._open).result()

    def _open(self) -> None:
        self._db = sqlite3.connect(self.path)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    @property
    def db(self) -> sqlite3.Connection:
        assert self._db is not None
        return self._db

    async def call(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def close(self) -> None:
        def shut() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        self._executor.submit(shut).result()
        self._executor.shutdown()

    # --- registrations ---------------------------------------------------------------------

    def save_registration(self, shard: str, registration: Registration) -> None:
        self.save_registrations([(shard, registration)])

    def save_registrations(self, entries: Iterable[tuple[str, Registration]]) -> None:
        """Registrations with their shards, in one transaction (a rebuild loads a shard at once)."""
        rows = [
            (r.record.node_id, shard, json.dumps(r.record.to_json(), sort_keys=True), r.certificate_der,
             r.last_issued_at_ms)
            for shard, r in entries
        ]
        with self.db:
            self.db.executemany("INSERT OR REPLACE INTO registrations VALUES (?, ?, ?, ?, ?)", rows)

    def touch(self, node_id: str, last_issued_at_ms: int) -> None:
        """Remember the newest statement time (replay protection survives a restart)."""
        self.touch_many([(node_id, last_issued_at_ms)])

    def touch_many(self, entries: Iterable[tuple[str, int]]) -> None:
        with self.db:
            self.db.executemany(
                "UPDATE registrations SET last_issued_at_ms = ? WHERE node_id = ?", [(ms, n) for n, ms in entries]
            )

    def delete_registration(self, node_id: str) -> None:
        with self.db:
            self.db.execute("DELETE FROM registrations WHERE node_id = ?", (node_id,))

    def load_registrations(self) -> dict[str, Registration]:
        rows = self.db.execute("SELECT record, certificate, last_issued_at_ms FROM registrations").fetchall()
        registrations = {}
        for record_json, certificate, issued in rows:
            record = NodeRecord.from_json(json.loads(record_json), "store")
            registrations[record.node_id] = Registration(record, bytes(certificate), issued)
        return registrations

    def lookup(self, shard: str, node_id: str) -> str | None:
        """The record JSON of `node_id` in `shard` (None if that shard does not hold it)."""
        row = self.db.execute(
            "SELECT record FROM registrations WHERE shard = ? AND node_id = ?", (shard, node_id)
        ).fetchone()
        return row[0] if row else None

    def shard_sizes(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT shard, COUNT(*) FROM registrations GROUP BY shard").fetchall())

    # --- documents -------------------------------------------------------------------------

    def save_document(self, epoch: int, raw: bytes, keep: int = 8) -> None:
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO documents VALUES (?, ?)", (epoch, raw))
            self.db.execute(
                "DELETE FROM documents WHERE epoch NOT IN (SELECT epoch FROM documents ORDER BY epoch DESC LIMIT ?)",
                (keep,),
            )

    def last_document(self) -> tuple[int, bytes] | None:
        row = self.db.execute("SELECT epoch, raw FROM documents ORDER BY epoch DESC LIMIT 1").fetchone()
        return (row[0], bytes(row[1])) if row else None
