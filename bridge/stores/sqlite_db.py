"""The embedded database: one SQLite file (WAL) through aiosqlite, written with group commit
(`batching`): stores put rows or deletions of a `Table`; a batch is one transaction. Single
statements that must be atomic on their own (a ledger claim) run under `writing`, so none lands
inside a batch's transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite

from bridge import datadir
from bridge.datadir import private_dir, private_file
from bridge.settings import ConfigError, os_reason
from bridge.stores.batching import REMOVED, Batch, GroupCommit
from bridge.stores.sqlite_schema import MIGRATIONS

log = logging.getLogger(__name__)

DELETE_CHUNK = 500  # rows per clean-up statement: each is short, other writes go between


@dataclass(frozen=True, slots=True)
class Table:
    """How pending objects of one kind become statements: `write` takes `to_row(obj)`,
    `delete` takes the key."""

    name: str
    write: str
    to_row: Callable[[Any], tuple[Any, ...]]
    delete: str | None = None


class Database(GroupCommit):
    def __init__(self, path: Path, tables: tuple[Table, ...]) -> None:
        super().__init__((table.name for table in tables), self._write)
        self.path = path
        self._tables = {table.name: table for table in tables}
        self._db: aiosqlite.Connection | None = None
        self._lock: int | None = None  # the data directory's lock, held while open
        self.writing = asyncio.Lock()  # every write: no statement may land inside a batch

    async def open(self) -> None:
        """Take the data directory's lock and open the file; ConfigError naming
        BRIDGE_DATA_DIR when either cannot be (what was taken is let go by `close`)."""
        try:
            await self._open()
        except datadir.InUse as exc:
            raise ConfigError(f"BRIDGE_DATA_DIR: {exc}") from None
        except (OSError, sqlite3.Error) as exc:
            reason = os_reason(exc) if isinstance(exc, OSError) else str(exc)
            raise ConfigError(f"BRIDGE_DATA_DIR: cannot use {self.path}: {reason}") from None

    async def _open(self) -> None:
        warning = private_dir(self.path.parent)
        if warning:
            log.warning(warning)
        self._lock = datadir.hold(self.path.parent)
        # Created 0600 before SQLite opens it: SQLite gives its -wal and -shm files the
        # database file's permissions; those of an older version are tightened below.
        private_file(self.path)
        # Autocommit: a single statement (a ledger claim) is one round trip to aiosqlite's thread
        # and durable when it returns; batches open their own transaction under `writing`.
        self._db = await aiosqlite.connect(self.path, isolation_level=None)
        await self._db.execute("PRAGMA journal_mode=WAL")
        for suffix in ("-wal", "-shm"):
            companion = self.path.with_name(self.path.name + suffix)
            if companion.exists():
                private_file(companion)
        # NORMAL in WAL mode: a commit survives a crash of this process; a power cut may lose
        # the last transactions, never corrupt the file.
        await self._db.execute("PRAGMA synchronous=NORMAL")
        await self._db.execute("PRAGMA busy_timeout=5000")
        await self._migrate()
        self.start("sqlite-writer")

    async def _migrate(self) -> None:
        version = (await self.fetch_one("PRAGMA user_version") or (0,))[0]
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            await self.conn.executescript(
                f"BEGIN;\n{script}\nPRAGMA user_version={number};\nCOMMIT;"
            )
            log.info("database %s migrated to schema %d", self.path, number)

    @property
    def conn(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("the database is not open")
        return self._db

    async def close(self) -> None:
        await self.stop()
        if self._db is not None:
            await self._db.close()
            self._db = None
        if self._lock is not None:
            os.close(self._lock)  # lets go of the lock
            self._lock = None

    async def _write(self, batch: Batch) -> None:
        db = self.conn
        async with self.writing:
            await db.execute("BEGIN")
            try:
                for name, rows in batch.items():
                    if not rows:
                        continue
                    table = self._tables[name]
                    writes = _rows(table, rows)
                    if writes:
                        await db.executemany(table.write, writes)
                    removals = [(key,) for key, obj in rows.items() if obj is REMOVED]
                    if removals and table.delete:
                        await db.executemany(table.delete, removals)
                await db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(Exception):  # keep the first error, not the rollback's
                    await db.execute("ROLLBACK")
                raise

    async def fetch_one(self, sql: str, args: tuple[Any, ...] | list[Any] = ()) -> Any:
        async with self.conn.execute(sql, args) as cursor:
            return await cursor.fetchone()

    async def fetch_all(self, sql: str, args: tuple[Any, ...] | list[Any] = ()) -> list[Any]:
        async with self.conn.execute(sql, args) as cursor:
            return list(await cursor.fetchall())

    async def execute(self, sql: str, args: tuple[Any, ...] | list[Any] = ()) -> int:
        """One statement on its own, outside any batch; returns the rows it changed."""
        async with self.writing:
            cursor = await self.conn.execute(sql, args)
        return cursor.rowcount

    async def delete_in_chunks(self, sql: str, bound: float) -> int:
        """Run `sql` (a DELETE whose parameters are `bound` and a LIMIT) until fewer than a
        chunk's rows go; the rows deleted. Clean-up never holds the database for long."""
        total = 0
        while True:
            removed = await self.execute(sql, (bound, DELETE_CHUNK))
            total += removed
            if removed < DELETE_CHUNK:
                return total

    async def ping(self) -> None:
        await self.fetch_one("SELECT 1")
        if not self.running:
            raise RuntimeError("the database writer has stopped")


def _rows(table: Table, pending: dict[str, Any]) -> list[tuple[Any, ...]]:
    """The rows to write; an object that cannot become a row (a bug) is dropped with an error
    logged, instead of failing every batch after it."""
    rows = []
    for key, obj in pending.items():
        if obj is REMOVED:
            continue
        try:
            rows.append(table.to_row(obj))
        except Exception:
            log.exception("%s %s cannot be stored; dropped", table.name, key)
    return rows
