"""The embedded database: one SQLite file (WAL) through aiosqlite, written with group commit.

Stores put rows (`put`) or deletions (`remove`) into a pending map that a writer task flushes in one
transaction: at once when a caller needs durability (`flush` waits for that commit, and every write
that came before rides along), otherwise within FLUSH_INTERVAL_S. A row stays readable from memory
(`pending`) until it is on disk, so what was saved is visible the moment it was saved. Single
statements that must be atomic on their own (a ledger claim) run under `writing`, so none lands
inside a batch's transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite

from bridge.stores.sqlite_schema import MIGRATIONS

log = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 0.05
MAX_BATCH = 2000
DELETE_CHUNK = 500  # rows per clean-up statement: each is short, other writes go between


@dataclass(frozen=True, slots=True)
class Table:
    """How pending objects of one kind become statements: `write` takes `to_row(obj)`,
    `delete` takes the key."""

    name: str
    write: str
    to_row: Callable[[Any], tuple[Any, ...]]
    delete: str | None = None


_REMOVED = object()


class Database:
    def __init__(self, path: Path, tables: tuple[Table, ...]) -> None:
        self.path = path
        self._tables = {table.name: table for table in tables}
        self._db: aiosqlite.Connection | None = None
        self._pending: dict[str, dict[str, Any]] = {name: {} for name in self._tables}
        self._in_flight: dict[str, dict[str, Any]] = {name: {} for name in self._tables}
        self._count = 0
        self._waiters: list[asyncio.Future[None]] = []
        self._has_work = asyncio.Event()  # something is pending
        self._urgent = asyncio.Event()  # someone waits for a commit, or the batch is full
        self._writer: asyncio.Task[None] | None = None
        self.writing = asyncio.Lock()  # every write: no statement may land inside a batch

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit: a single statement (a ledger claim) is one round trip to aiosqlite's thread
        # and durable when it returns; batches open their own transaction under `writing`.
        self._db = await aiosqlite.connect(self.path, isolation_level=None)
        await self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a commit survives a crash of this process; a power cut may lose
        # the last transactions, never corrupt the file.
        await self._db.execute("PRAGMA synchronous=NORMAL")
        await self._db.execute("PRAGMA busy_timeout=5000")
        await self._migrate()
        self._writer = asyncio.create_task(self._write_loop(), name="sqlite-writer")

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
        if self._writer is not None:
            if not self._writer.done():
                await self.flush()
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None
        if self._db is not None:
            await self._db.close()
            self._db = None

    def put(self, table: str, key: str, obj: Any) -> None:
        self._pending[table][key] = obj
        self._queued()

    def remove(self, table: str, key: str) -> None:
        self._pending[table][key] = _REMOVED
        self._queued()

    def _queued(self) -> None:
        self._count += 1
        self._has_work.set()
        if self._count >= MAX_BATCH:
            self._urgent.set()

    def pending(self, table: str, key: str) -> tuple[bool, Any]:
        """(True, obj) when a write of `key` is not on disk yet (obj None: a removal)."""
        for layer in (self._pending[table], self._in_flight[table]):
            if key in layer:
                obj = layer[key]
                return True, None if obj is _REMOVED else obj
        return False, None

    def pending_items(self, table: str) -> list[tuple[str, Any]]:
        """Every write of `table` not on disk yet, newest last (removals as None)."""
        merged = {**self._in_flight[table], **self._pending[table]}
        return [(key, None if obj is _REMOVED else obj) for key, obj in merged.items()]

    async def flush(self) -> None:
        """Return once everything written so far is committed."""
        if self._writer is None or self._writer.done():
            raise RuntimeError("the database writer is not running")
        if not any(self._pending.values()) and not any(self._in_flight.values()):
            return  # nothing to wait for: no empty transaction on every read that flushes
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._has_work.set()
        self._urgent.set()
        await waiter

    async def _write_loop(self) -> None:
        while True:
            await self._has_work.wait()
            if not self._urgent.is_set():  # gather more writes for a moment
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._urgent.wait(), FLUSH_INTERVAL_S)
            self._has_work.clear()
            self._urgent.clear()
            batch = self._pending
            self._pending = {name: {} for name in self._tables}
            self._in_flight = batch
            self._count = 0
            waiters, self._waiters = self._waiters, []
            try:
                await self._write(batch)
            except Exception as exc:
                log.error("database write failed, will retry: %s", exc)
                # Keep the writes for the next attempt; anything written since is newer.
                self._pending = {
                    name: {**batch[name], **self._pending[name]} for name in self._tables
                }
                self._count = sum(len(rows) for rows in self._pending.values())
                self._in_flight = {name: {} for name in self._tables}
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_exception(exc)
                await asyncio.sleep(FLUSH_INTERVAL_S)
                self._has_work.set()
            else:
                self._in_flight = {name: {} for name in self._tables}
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result(None)

    async def _write(self, batch: dict[str, dict[str, Any]]) -> None:
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
                    removals = [(key,) for key, obj in rows.items() if obj is _REMOVED]
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
        if self._writer is None or self._writer.done():
            raise RuntimeError("the database writer has stopped")


def _rows(table: Table, pending: dict[str, Any]) -> list[tuple[Any, ...]]:
    """The rows to write; an object that cannot become a row (a bug) is dropped with an error
    logged, instead of failing every batch after it."""
    rows = []
    for key, obj in pending.items():
        if obj is _REMOVED:
            continue
        try:
            rows.append(table.to_row(obj))
        except Exception:
            log.exception("%s %s cannot be stored; dropped", table.name, key)
    return rows
