"""The embedded job store on a real SQLite file."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge.ids import new_id
from bridge.jobs import IllegalTransition, JobRecord, JobStatus
from bridge.stores import sqlite, sqlite_log
from bridge.stores.base import JobFilter
from bridge.stores.sqlite import SqliteJobStore
from bridge.stores.sqlite_db import Database
from bridge.stores.sqlite_schema import MIGRATIONS

RETENTION = {"async": 600.0, "sync": 60.0}


async def open_store(path: Path) -> SqliteJobStore:
    db = Database(path, (*sqlite.tables(RETENTION), *sqlite_log.TABLES))
    await db.open()
    return SqliteJobStore(db, RETENTION)


def job(workflow_id: str = "wf", created_at: float | None = None) -> JobRecord:
    return JobRecord(
        job_id=new_id(),
        status=JobStatus.RUNNING,
        mode="sync",
        processing_type="echo",
        workflow_id=workflow_id,
        created_at=created_at or time.time(),
        started_at=time.time(),
    )


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteJobStore]:
    store = await open_store(tmp_path / "jobs.sqlite3")
    yield store
    await store.db.close()


def rows_on_disk(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT count(*) FROM jobs").fetchone()[0])


async def test_a_saved_job_is_readable_at_once_and_on_disk_after_flush(
    store: SqliteJobStore,
) -> None:
    record = job()
    await store.save(record)
    assert await store.get(record.job_id) == record
    await store.flush()
    assert rows_on_disk(store.db.path) == 1


async def test_durable_save_is_committed_before_it_returns(store: SqliteJobStore) -> None:
    await store.save(job(), durable=True)
    assert rows_on_disk(store.db.path) == 1


async def test_latest_state_wins(store: SqliteJobStore) -> None:
    record = job()
    await store.save(record)
    done = record.advance(JobStatus.COMPLETED, output_count=1)
    await store.save(done, durable=True)
    again = await store.get(record.job_id)
    assert again is not None and again.status == JobStatus.COMPLETED


async def test_data_survives_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    first = await open_store(path)
    record = job()
    await first.save(record)
    await first.db.close()  # flushes what is pending
    second = await open_store(path)
    assert await second.get(record.job_id) == record
    await second.db.close()


async def test_workflow_listing_pages_newest_first(store: SqliteJobStore) -> None:
    base = time.time()
    records = [job("wf-a", base + i) for i in range(7)]
    for record in records:
        await store.save(record)
    await store.save(job("wf-b"))
    seen: list[str] = []
    cursor = None
    while True:
        page, cursor = await store.list_for_workflow("wf-a", limit=3, cursor=cursor)
        seen += [r.job_id for r in page]
        if cursor is None:
            break
    assert seen == [r.job_id for r in reversed(records)]


async def test_a_foreign_cursor_is_refused(store: SqliteJobStore) -> None:
    with pytest.raises(ValueError, match="cursor"):
        await store.list_for_workflow("wf", limit=3, cursor="bm90IGEgY3Vyc29y")


async def test_finished_jobs_expire_and_running_ones_stay(store: SqliteJobStore) -> None:
    running = job()
    finished = job().advance(JobStatus.COMPLETED)
    background = job().model_copy(update={"mode": "async"}).advance(JobStatus.COMPLETED)
    for record in (running, finished, background):
        await store.save(record, durable=True)
    assert await store.purge_expired(time.time()) == 0
    assert await store.purge_expired(time.time() + 61) == 1  # the sync job's retention
    assert await store.get(finished.job_id) is None
    assert await store.purge_expired(time.time() + 601) == 1  # the async job's retention
    assert await store.get(background.job_id) is None
    assert await store.get(running.job_id) is not None


async def test_schema_version_is_recorded(store: SqliteJobStore) -> None:
    with sqlite3.connect(store.db.path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_a_version_4_database_gets_the_listing_columns_of_its_jobs(tmp_path: Path) -> None:
    """Migration 5 fills processing_type and queue from each record already there, so the
    jobs listing finds them by either."""
    path = tmp_path / "jobs.sqlite3"
    old = job("wf-old").model_copy(update={"mode": "async", "queue": "bulk"})
    with sqlite3.connect(path) as db:
        for migration in MIGRATIONS[:4]:
            db.executescript(migration)
        db.execute("PRAGMA user_version=4")
        db.execute(  # as version 4 wrote a job
            "INSERT INTO jobs (job_id, workflow_id, execution_id, idempotency_key, status,"
            " created_at, expires_at, record) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (old.job_id, "wf-old", None, None, "running", old.created_at, None,
             old.model_dump_json().encode()),
        )  # fmt: skip
    store = await open_store(path)
    try:
        for filters in (JobFilter(processing_type="echo"), JobFilter(queue="bulk"), JobFilter()):
            page, cursor = await store.list_jobs(filters, limit=5)
            assert ([job.job_id for job in page], cursor) == ([old.job_id], None), filters
        assert (await store.list_jobs(JobFilter(queue="default"), limit=5)) == ([], None)
        newer = job("wf-new")
        await store.save(newer)
        page, _ = await store.list_jobs(JobFilter(processing_type="echo"), limit=5)
        assert [job.job_id for job in page] == [newer.job_id, old.job_id]
    finally:
        await store.db.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)


def test_transitions_are_enforced() -> None:
    record = job()
    done = record.advance(JobStatus.COMPLETED)
    assert done.duration_ms is not None and done.finished_at is not None
    with pytest.raises(IllegalTransition):
        done.advance(JobStatus.RUNNING)
    queued = record.model_copy(update={"status": JobStatus.QUEUED, "attempts": 0})
    assert queued.advance(JobStatus.RUNNING).attempts == 1


async def test_a_failed_batch_is_kept_for_the_next_try(
    store: SqliteJobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch whose write fails is neither lost nor in the way: waiters see the error, ledger
    claims still work, and the records go out with the next flush."""
    record = job()
    original = store.db._write_batch
    failures = iter([RuntimeError("disk full")])

    async def failing_once(*args: object) -> None:
        error = next(failures, None)
        if error is not None:
            raise error
        await original(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(store.db, "_write_batch", failing_once)
    await store.save(record)
    with pytest.raises(RuntimeError, match="disk full"):
        await store.flush()
    assert await store.claim("key-1") is None
    assert rows_on_disk(store.db.path) == 0
    await store.flush()
    assert rows_on_disk(store.db.path) == 1


async def test_records_stay_visible_while_their_batch_is_being_written(
    store: SqliteJobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = job()
    await store.claim("key-2")
    writing, release = asyncio.Event(), asyncio.Event()
    original = store.db._write_batch

    async def held(*args: object) -> None:
        writing.set()
        await release.wait()
        await original(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(store.db, "_write_batch", held)
    await store.save(record)
    await store.settle("key-2", {"message_id": "<m@x>"})
    flushing = asyncio.create_task(store.flush())
    try:
        await writing.wait()  # the batch has left the pending map, and is not on disk yet
        assert await store.get(record.job_id) == record
        assert (await store.lookup(["key-2"]))["key-2"].state == "sent"
        assert (await store.claim("key-2")) == (await store.lookup(["key-2"]))["key-2"]
    finally:
        release.set()
        await flushing
    assert await store.get(record.job_id) == record


async def test_purge_removes_the_data_of_every_expired_job(
    store: SqliteJobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Expired sync jobs (no data) ahead of an expired background job do not hide its data."""
    from bridge.stores import sqlite_db

    monkeypatch.setattr(sqlite_db, "DELETE_CHUNK", 2)
    for _ in range(3):
        await store.save(job().advance(JobStatus.COMPLETED))
    background = job().model_copy(update={"mode": "async"}).advance(JobStatus.COMPLETED)
    await store.save(background, durable=True, request=b"{}", result=b"{}")
    assert await store.purge_expired(time.time() + 601) == 4
    with sqlite3.connect(store.db.path) as db:
        assert db.execute("SELECT count(*) FROM job_data").fetchone()[0] == 0


async def test_a_jobs_report_outlives_its_workers_save_and_goes_with_it(
    store: SqliteJobStore,
) -> None:
    running = job().model_copy(update={"mode": "async"})
    await store.save(running, durable=True)
    await store.save_report(running.job_id, b'{"status": "success"}')
    await store.save(running.advance(JobStatus.COMPLETED), durable=True)
    got = await store.get(running.job_id)
    assert got is not None and got.reported == {"status": "success"}
    page, _ = await store.list_for_workflow("wf", limit=5)
    assert [record.reported for record in page] == [{"status": "success"}]
    await store.purge_expired(time.time() + 601)
    with sqlite3.connect(store.db.path) as db:
        assert db.execute("SELECT count(*) FROM job_data").fetchone()[0] == 0
