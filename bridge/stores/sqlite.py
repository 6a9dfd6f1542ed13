"""The embedded job store and idempotency ledger, on the embedded database (`sqlite_db`).

Saves ride the database's group commit; `durable=True` waits for the commit. Reads see pending
writes first. Clean-up deletes in small chunks on aiosqlite's thread, never blocking the loop.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from bridge.jobs import JobRecord, JobStatus
from bridge.stores.base import (
    Data,
    JobFilter,
    LedgerEntry,
    decode_cursor,
    encode_cursor,
    with_report,
)
from bridge.stores.sqlite_db import Database, Table

LOOKUP_CHUNK = 500  # keys per query, well under SQLite's bound on parameters
UNFINISHED = (JobStatus.QUEUED.value, JobStatus.RUNNING.value)


def tables(retention_s: Mapping[str, float]) -> tuple[Table, ...]:
    def job_row(job: JobRecord) -> tuple[Any, ...]:
        expires = job.finished_at + retention_s[job.mode] if job.finished_at is not None else None
        return (
            job.job_id,
            job.workflow_id,
            job.execution_id,
            job.idempotency_key if job.mode == "async" else None,  # unique among async jobs
            job.status.value,
            job.created_at,
            expires,
            job.model_dump_json().encode(),
            job.processing_type,
            job.queue,
        )

    return (
        Table(
            "jobs",
            "INSERT INTO jobs (job_id, workflow_id, execution_id, idempotency_key, status,"
            " created_at, expires_at, record, processing_type, queue)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (job_id) DO UPDATE SET status = excluded.status,"
            " expires_at = excluded.expires_at, record = excluded.record",
            job_row,
        ),
        Table(
            "job_request",
            "INSERT INTO job_data (job_id, request) VALUES (?, ?)"
            " ON CONFLICT (job_id) DO UPDATE SET request = excluded.request",
            lambda pair: pair,
        ),
        Table(
            "job_result",
            "INSERT INTO job_data (job_id, result) VALUES (?, ?)"
            " ON CONFLICT (job_id) DO UPDATE SET result = excluded.result",
            lambda pair: pair,
        ),
        Table(
            "job_report",
            "INSERT INTO job_data (job_id, report) VALUES (?, ?)"
            " ON CONFLICT (job_id) DO UPDATE SET report = excluded.report",
            lambda pair: pair,
        ),
        Table(
            "ledger_settle",
            "UPDATE ledger SET state = 'sent', result = ?, updated_at = ? WHERE key = ?",
            lambda entry: (orjson.dumps(entry[1]), time.time(), entry[0]),
        ),
    )


def _conditions(
    filters: JobFilter, after: tuple[float, str] | None
) -> tuple[list[str] | None, list[object]]:
    """The WHERE terms (and their arguments) of every filter but the status; None when the
    credential's limit reaches no workflow at all."""
    where: list[str] = []
    args: list[object] = []
    for column, value in (
        ("processing_type", filters.processing_type),
        ("queue", filters.queue),
        ("workflow_id", filters.workflow_id),
        ("execution_id", filters.execution_id),
    ):
        if value is not None:
            where.append(f"{column} = ?")
            args.append(value)
    if filters.since is not None:
        where.append("created_at >= ?")
        args.append(filters.since)
    if filters.until is not None:
        where.append("created_at < ?")
        args.append(filters.until)
    if after is not None:
        where.append("(created_at, job_id) < (?, ?)")
        args += list(after)
    limit = filters.workflows
    if limit is not None:
        reach = [f"workflow_id IN ({','.join('?' * len(limit.exact))})"] if limit.exact else []
        reach += ["substr(workflow_id, 1, ?) = ?"] * len(limit.prefixes)
        if not reach:
            return None, []
        where.append(f"({' OR '.join(reach)})")
        args += sorted(limit.exact)
        for prefix in limit.prefixes:
            args += [len(prefix), prefix]
    return where, args


class SqliteJobStore:
    def __init__(self, db: Database, retention_s: Mapping[str, float]) -> None:
        self.db = self._db = db
        # Sync callers already have their result: their jobs need not be kept as long.
        self.retention_s = retention_s

    async def save(
        self,
        job: JobRecord,
        *,
        durable: bool = False,
        request: bytes | None = None,
        result: bytes | None = None,
    ) -> None:
        self._db.put("jobs", job.job_id, job)
        if request is not None:
            self._db.put("job_request", job.job_id, (job.job_id, request))
        if result is not None:
            self._db.put("job_result", job.job_id, (job.job_id, result))
        if durable:
            await self._db.flush()

    async def flush(self) -> None:
        await self._db.flush()

    async def save_report(self, job_id: str, report: bytes) -> None:
        self._db.put("job_report", job_id, (job_id, report))
        await self._db.flush()

    async def get(self, job_id: str) -> JobRecord | None:
        found, job = self._db.pending("jobs", job_id)
        if found:
            return with_report(job, await self.get_data(job_id, "report")) if job else None
        # One query: a report is committed before save_report returns.
        row = await self._db.fetch_one(
            "SELECT record, (SELECT report FROM job_data WHERE job_data.job_id = jobs.job_id)"
            " FROM jobs WHERE job_id = ?",
            (job_id,),
        )
        return with_report(JobRecord.model_validate_json(row[0]), row[1]) if row else None

    async def get_data(self, job_id: str, which: Data) -> bytes | None:
        found, pair = self._db.pending(f"job_{which}", job_id)
        if found:
            return pair[1] if pair else None
        column = {"request": "request", "result": "result", "report": "report"}[which]
        row = await self._db.fetch_one(f"SELECT {column} FROM job_data WHERE job_id = ?", (job_id,))
        return bytes(row[0]) if row and row[0] is not None else None

    async def claim_idempotency_key(self, key: str, job_id: str) -> JobRecord | None:
        # One process owns the file, and the worker pool accepts one job per key at a time: the
        # job row, committed before the key is released to others, is the claim.
        row = await self._db.fetch_one("SELECT record FROM jobs WHERE idempotency_key = ?", (key,))
        return JobRecord.model_validate_json(row[0]) if row else None

    async def release_idempotency_key(self, key: str, job_id: str) -> None:
        pass  # nothing was reserved beyond the job row, which was not written

    def withdraw(self, job: JobRecord) -> None:
        for table in ("job_request", "jobs"):
            self._db.withdraw(table, job.job_id)

    async def unfinished(self) -> list[JobRecord]:
        """Jobs queued or running, oldest first: what a restart must take up again."""
        await self._db.flush()
        rows = await self._db.fetch_all(
            "SELECT record FROM jobs WHERE status IN (?, ?) ORDER BY created_at", UNFINISHED
        )
        return [JobRecord.model_validate_json(row[0]) for row in rows]

    async def list_for_workflow(
        self,
        workflow_id: str,
        *,
        limit: int,
        cursor: str | None = None,
        execution_id: str | None = None,
    ) -> tuple[list[JobRecord], str | None]:
        await self._db.flush()
        query = (
            "SELECT record, created_at, job_id,"
            " (SELECT report FROM job_data WHERE job_data.job_id = jobs.job_id)"
            " FROM jobs WHERE workflow_id = ?"
        )
        args: list[object] = [workflow_id]
        if execution_id is not None:
            query += " AND execution_id = ?"
            args.append(execution_id)
        if cursor is not None:
            created_at, job_id = decode_cursor(cursor)
            query += " AND (created_at, job_id) < (?, ?)"
            args += [created_at, job_id]
        query += " ORDER BY created_at DESC, job_id DESC LIMIT ?"
        args.append(limit + 1)
        found = await self._db.fetch_all(query, args)
        jobs = [with_report(JobRecord.model_validate_json(row[0]), row[3]) for row in found[:limit]]
        more = len(found) > limit
        next_cursor = encode_cursor(found[limit - 1][1], found[limit - 1][2]) if more else None
        return jobs, next_cursor

    async def list_jobs(
        self, filters: JobFilter, *, limit: int, cursor: str | None = None
    ) -> tuple[list[JobRecord], str | None]:
        """One query, always a full page: each filter has its index (`sqlite_schema`)."""
        await self._db.flush()
        after = decode_cursor(cursor) if cursor is not None else None
        where, args = _conditions(filters, after)
        if where is None:
            return [], None
        statuses: list[JobStatus | None] = [*sorted(filters.wanted_statuses())] or [None]
        # One status: an equality the planner can put in front of an index. Several: one
        # query per status, each walking its index newest first, merged — an IN would sort
        # every job of those statuses to find the newest.
        parts, part_args = [], []
        for status in statuses:
            conditions = [*where, *(["status = ?"] if status else [])]
            parts.append(
                "SELECT * FROM (SELECT record, created_at, job_id,"
                " (SELECT report FROM job_data WHERE job_data.job_id = jobs.job_id)"
                f" FROM jobs WHERE {' AND '.join(conditions) or '1'}"
                " ORDER BY created_at DESC, job_id DESC LIMIT ?)"
            )
            part_args += [*args, *([status.value] if status else []), limit + 1]
        query = " UNION ALL ".join(parts) + " ORDER BY created_at DESC, job_id DESC LIMIT ?"
        found = await self._db.fetch_all(query, [*part_args, limit + 1])
        jobs = [with_report(JobRecord.model_validate_json(row[0]), row[3]) for row in found[:limit]]
        more = len(found) > limit
        next_cursor = encode_cursor(found[limit - 1][1], found[limit - 1][2]) if more else None
        return jobs, next_cursor

    async def purge_expired(self, now: float) -> int:
        """Finished jobs past their retention (with their data), and ledger keys as old as the
        longest retention; the jobs and keys removed."""
        await self._db.delete_in_chunks(
            "DELETE FROM job_data WHERE rowid IN (SELECT job_data.rowid FROM job_data"
            " JOIN jobs USING (job_id) WHERE jobs.expires_at < ? LIMIT ?)",
            now,
        )
        jobs = await self._db.delete_in_chunks(
            "DELETE FROM jobs WHERE rowid IN (SELECT rowid FROM jobs"
            " WHERE expires_at IS NOT NULL AND expires_at < ? LIMIT ?)",
            now,
        )
        keys = await self._db.delete_in_chunks(
            "DELETE FROM ledger WHERE rowid IN (SELECT rowid FROM ledger"
            " WHERE updated_at < ? LIMIT ?)",
            now - max(self.retention_s.values()),
        )
        return jobs + keys

    async def lookup(self, keys: Sequence[str]) -> dict[str, LedgerEntry]:
        found = {key: entry for key in keys if (entry := self._settled_in_memory(key))}
        rest = [key for key in keys if key not in found]
        for start in range(0, len(rest), LOOKUP_CHUNK):
            chunk = rest[start : start + LOOKUP_CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = await self._db.fetch_all(
                f"SELECT key, state, result FROM ledger WHERE key IN ({marks})", chunk
            )
            for key, state, result in rows:
                found[key] = LedgerEntry(state, orjson.loads(result) if result else None)
        return found

    def _settled_in_memory(self, key: str) -> LedgerEntry | None:
        found, entry = self._db.pending("ledger_settle", key)
        return LedgerEntry("sent", entry[1]) if found and entry is not None else None

    async def claim(self, key: str) -> LedgerEntry | None:
        settled = self._settled_in_memory(key)
        if settled is not None:
            return settled
        changed = await self._db.execute(
            "INSERT INTO ledger (key, state, updated_at) VALUES (?, 'sending', ?)"
            " ON CONFLICT (key) DO NOTHING",
            (key, time.time()),
        )
        if changed == 1:
            return None
        entry = (await self.lookup([key])).get(key)
        return entry if entry is not None else await self.claim(key)  # released in between

    async def settle(self, key: str, result: dict[str, Any]) -> None:
        """Written with the next group commit: should the process die before, the key stays
        "sending" — reported as unknown on a retry, never sent twice."""
        self._db.put("ledger_settle", key, (key, result))

    async def release(self, key: str) -> None:
        await self._db.execute("DELETE FROM ledger WHERE key = ? AND state = 'sending'", (key,))

    async def ping(self) -> None:
        await self._db.ping()

    def unavailable(self) -> str | None:
        failing = self._db.failing
        if failing is None:
            return None
        reason = f"the database cannot be written: {type(failing).__name__}: {failing}"
        if isinstance(failing, sqlite3.OperationalError) and (
            "disk" in str(failing) or "full" in str(failing)
        ):
            reason += f" (is the disk under {self._db.path.parent} full or failing?)"
        return reason
