"""The embedded job store: one SQLite file (WAL) through aiosqlite, written with group commit.

Every save goes to an in-memory pending map that a writer task flushes in one transaction: at once
when a caller needs durability (it waits for that commit, and every save that came before rides
along), otherwise within FLUSH_INTERVAL_S. Reads see pending records first, so a job is visible the
moment it is saved. Clean-up deletes in small chunks on aiosqlite's thread, never blocking the loop.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import aiosqlite
import orjson

from bridge.jobs import JobRecord
from bridge.stores.base import LedgerEntry

log = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 0.05
MAX_BATCH = 2000
PURGE_CHUNK = 500
LOOKUP_CHUNK = 500  # keys per query, well under SQLite's bound on parameters

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE jobs (
        job_id      TEXT PRIMARY KEY,
        workflow_id TEXT,
        status      TEXT NOT NULL,
        created_at  REAL NOT NULL,
        expires_at  REAL,
        record      BLOB NOT NULL
    );
    CREATE INDEX jobs_by_workflow ON jobs (workflow_id, created_at DESC, job_id DESC);
    CREATE INDEX jobs_by_expiry ON jobs (expires_at) WHERE expires_at IS NOT NULL;
    """,
    """
    CREATE TABLE ledger (
        key        TEXT PRIMARY KEY,
        state      TEXT NOT NULL,
        result     BLOB,
        updated_at REAL NOT NULL
    );
    CREATE INDEX ledger_by_age ON ledger (updated_at);
    """,
)


class SqliteJobStore:
    def __init__(self, path: Path, retention_s: float, sync_retention_s: float) -> None:
        self.path = path
        # Sync callers already have their result: their jobs need not be kept as long.
        self.retention_s = {"async": retention_s, "sync": sync_retention_s}
        self._db: aiosqlite.Connection | None = None
        self._pending: dict[str, JobRecord] = {}
        self._settled: dict[str, dict[str, Any]] = {}  # ledger keys done, not yet written
        # The batch being written: still read from memory until it is on disk.
        self._writing_jobs: dict[str, JobRecord] = {}
        self._writing_settled: dict[str, dict[str, Any]] = {}
        self._waiters: list[asyncio.Future[None]] = []
        self._has_work = asyncio.Event()  # something is pending
        self._urgent = asyncio.Event()  # someone waits for a commit, or the batch is full
        self._writer: asyncio.Task[None] | None = None
        self._writing = asyncio.Lock()  # every write: no statement may land inside a batch

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit: a single statement (a ledger claim) is one round trip to aiosqlite's thread
        # and durable when it returns; batches open their own transaction under `_writing`.
        self._db = await aiosqlite.connect(self.path, isolation_level=None)
        await self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a commit survives a crash of this process; a power cut may lose
        # the last transactions, never corrupt the file.
        await self._db.execute("PRAGMA synchronous=NORMAL")
        await self._db.execute("PRAGMA busy_timeout=5000")
        await self._migrate()
        self._writer = asyncio.create_task(self._write_loop(), name="sqlite-writer")

    async def _migrate(self) -> None:
        db = self._conn
        async with db.execute("PRAGMA user_version") as cursor:
            row = await cursor.fetchone()
        version = row[0] if row else 0
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            await db.executescript(f"BEGIN;\n{script}\nPRAGMA user_version={number};\nCOMMIT;")
            log.info("job store %s migrated to schema %d", self.path, number)

    @property
    def _conn(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("the job store is not open")
        return self._db

    async def close(self) -> None:
        if self._writer is not None:
            await self.flush()
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def save(self, job: JobRecord, *, durable: bool = False) -> None:
        self._pending[job.job_id] = job
        if durable:
            await self.flush()
            return
        self._has_work.set()
        if len(self._pending) >= MAX_BATCH:
            self._urgent.set()

    async def flush(self) -> None:
        """Return once everything saved so far is committed."""
        if self._writer is None or self._writer.done():
            raise RuntimeError("the job store's writer is not running")
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._has_work.set()
        self._urgent.set()
        await waiter

    async def _write_loop(self) -> None:
        while True:
            await self._has_work.wait()
            if not self._urgent.is_set():  # gather more saves for a moment
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._urgent.wait(), FLUSH_INTERVAL_S)
            self._has_work.clear()
            self._urgent.clear()
            batch, self._pending = self._pending, {}
            settled, self._settled = self._settled, {}
            waiters, self._waiters = self._waiters, []
            self._writing_jobs, self._writing_settled = batch, settled
            try:
                await self._write(batch.values(), settled)
            except Exception as exc:
                log.error("job store write of %d record(s) failed: %s", len(batch), exc)
                # Keep the records for the next attempt; anything saved since is newer.
                self._pending = {**batch, **self._pending}
                self._settled = {**settled, **self._settled}
                self._writing_jobs, self._writing_settled = {}, {}
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_exception(exc)
                await asyncio.sleep(FLUSH_INTERVAL_S)
                self._has_work.set()
            else:
                self._writing_jobs, self._writing_settled = {}, {}
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result(None)

    async def _write(self, jobs: Iterable[JobRecord], settled: dict[str, dict[str, Any]]) -> None:
        rows = [
            (
                job.job_id,
                job.workflow_id,
                job.status.value,
                job.created_at,
                job.finished_at + self.retention_s[job.mode]
                if job.finished_at is not None
                else None,
                job.model_dump_json().encode(),
            )
            for job in jobs
        ]
        db = self._conn
        async with self._writing:
            await db.execute("BEGIN")
            try:
                await db.executemany(
                    "INSERT INTO jobs (job_id, workflow_id, status, created_at, expires_at,"
                    " record) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (job_id) DO UPDATE SET"
                    " status = excluded.status, expires_at = excluded.expires_at,"
                    " record = excluded.record",
                    rows,
                )
                if settled:
                    now = time.time()
                    await db.executemany(
                        "UPDATE ledger SET state = 'sent', result = ?, updated_at = ?"
                        " WHERE key = ?",
                        [(orjson.dumps(result), now, key) for key, result in settled.items()],
                    )
                await db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(Exception):  # keep the first error, not the rollback's
                    await db.execute("ROLLBACK")
                raise

    async def get(self, job_id: str) -> JobRecord | None:
        pending = self._pending.get(job_id) or self._writing_jobs.get(job_id)
        if pending is not None:
            return pending
        async with self._conn.execute(
            "SELECT record FROM jobs WHERE job_id = ?", (job_id,)
        ) as cursor:
            row = await cursor.fetchone()
        return JobRecord.model_validate_json(row[0]) if row else None

    async def list_for_workflow(
        self, workflow_id: str, *, limit: int, cursor: str | None = None
    ) -> tuple[list[JobRecord], str | None]:
        await self.flush()
        query = "SELECT record, created_at, job_id FROM jobs WHERE workflow_id = ?"
        args: list[object] = [workflow_id]
        if cursor is not None:
            created_at, job_id = _decode_cursor(cursor)
            query += " AND (created_at, job_id) < (?, ?)"
            args += [created_at, job_id]
        query += " ORDER BY created_at DESC, job_id DESC LIMIT ?"
        args.append(limit + 1)
        async with self._conn.execute(query, args) as rows:
            found = list(await rows.fetchall())
        jobs = [JobRecord.model_validate_json(row[0]) for row in found[:limit]]
        more = len(found) > limit
        next_cursor = _encode_cursor(found[limit - 1][1], found[limit - 1][2]) if more else None
        return jobs, next_cursor

    async def purge_expired(self, now: float) -> int:
        """Finished jobs past their retention, and ledger keys as old as the longest retention."""
        total = 0
        for query, cutoff in (
            (
                "DELETE FROM jobs WHERE rowid IN (SELECT rowid FROM jobs"
                " WHERE expires_at IS NOT NULL AND expires_at < ? LIMIT ?)",
                now,
            ),
            (
                "DELETE FROM ledger WHERE rowid IN (SELECT rowid FROM ledger"
                " WHERE updated_at < ? LIMIT ?)",
                now - max(self.retention_s.values()),
            ),
        ):
            while True:
                async with self._writing:
                    cursor = await self._conn.execute(query, (cutoff, PURGE_CHUNK))
                total += cursor.rowcount
                if cursor.rowcount < PURGE_CHUNK:
                    break
        return total

    async def lookup(self, keys: Sequence[str]) -> dict[str, LedgerEntry]:
        found = {key: entry for key in keys if (entry := self._settled_in_memory(key))}
        rest = [key for key in keys if key not in found]
        for start in range(0, len(rest), LOOKUP_CHUNK):
            chunk = rest[start : start + LOOKUP_CHUNK]
            marks = ",".join("?" * len(chunk))
            async with self._conn.execute(
                f"SELECT key, state, result FROM ledger WHERE key IN ({marks})", chunk
            ) as rows:
                for key, state, result in await rows.fetchall():
                    found[key] = LedgerEntry(state, orjson.loads(result) if result else None)
        return found

    def _settled_in_memory(self, key: str) -> LedgerEntry | None:
        result = self._settled.get(key, self._writing_settled.get(key))
        return LedgerEntry("sent", result) if result is not None else None

    async def claim(self, key: str) -> LedgerEntry | None:
        settled = self._settled_in_memory(key)
        if settled is not None:
            return settled
        async with self._writing:
            cursor = await self._conn.execute(
                "INSERT INTO ledger (key, state, updated_at) VALUES (?, 'sending', ?)"
                " ON CONFLICT (key) DO NOTHING",
                (key, time.time()),
            )
        if cursor.rowcount == 1:
            return None
        entry = (await self.lookup([key])).get(key)
        return entry if entry is not None else await self.claim(key)  # released in between

    async def settle(self, key: str, result: dict[str, Any]) -> None:
        """Written with the next group commit: should the process die before, the key stays
        "sending" — reported as unknown on a retry, never sent twice."""
        self._settled[key] = result
        self._has_work.set()

    async def release(self, key: str) -> None:
        async with self._writing:
            await self._conn.execute(
                "DELETE FROM ledger WHERE key = ? AND state = 'sending'", (key,)
            )

    async def ping(self) -> None:
        async with self._conn.execute("SELECT 1") as cursor:
            await cursor.fetchone()
        if self._writer is None or self._writer.done():
            raise RuntimeError("the job store's writer has stopped")


def _encode_cursor(created_at: float, job_id: str) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([created_at, job_id])).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[float, str]:
    try:
        created_at, job_id = orjson.loads(
            base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        )
        return float(created_at), str(job_id)
    except (ValueError, TypeError, orjson.JSONDecodeError):
        raise ValueError("not a cursor this API handed out") from None
