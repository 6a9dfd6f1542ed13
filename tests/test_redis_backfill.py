"""The one-time backfill of the Redis `jobs:*` indexes (`redis_backfill`), on a real redis-server:
jobs written as a bridge before these indexes wrote them end in the same indexes a save of new
jobs writes, are listed by GET /admin/jobs under every filter once a bridge has started, and are
purged from the indexes when their retention ends; the marker makes a second start do nothing; a
status change during the backfill leaves the job under its latest status only; two instances at
once, or a run cut short, end the same; a Redis failure leaves the work for the next start."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

import orjson
import pytest
import redis.asyncio as aioredis

from bench.admin_jobs import as_accepted, make_jobs, store_jobs
from bridge.jobs import JobRecord, JobStatus
from bridge.keys import SETTINGS
from bridge.stores import redis as redis_store
from bridge.stores import redis_backfill
from bridge.stores.base import JobFilter
from bridge.stores.redis_db import RedisDb, key
from tests.conftest import ClientFactory
from tests.redis_server import RedisServer
from tests.test_admin_jobs import RETENTION, admin_headers, listed, newest_first

Snapshot = dict[str, set[tuple[bytes, float | None]]]


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[redis_store.RedisJobStore]:
    db = RedisDb(redis_url, redis_store.kinds(RETENTION))
    await db.open()
    yield redis_store.RedisJobStore(db, RETENTION)
    await db.close()


async def store_as_before(
    redis: aioredis.Redis, jobs: Sequence[JobRecord], retention_s: dict[str, float] = RETENTION
) -> None:
    """Write `jobs` as a bridge before the `jobs:` indexes did (its `write_job`): the record
    (expiring once finished, as its request does), a finished job's `expiring` entry of three
    fields, and its workflow's indexes, written when the job was new. Each job also has its
    request stored, a key the backfill must pass over."""
    now = time.time()
    async with redis.pipeline(transaction=False) as pipe:
        for job in jobs:
            base = key("job", job.job_id)
            ttl = None
            if job.finished_at is not None:
                ttl = max(1, int(job.finished_at + retention_s[job.mode] - now))
                member = orjson.dumps([job.job_id, job.workflow_id, job.execution_id])
                pipe.zadd(key("expiring"), {member: job.finished_at + retention_s[job.mode]})
            elif job.mode == "sync":
                ttl = redis_store.UNFINISHED_SYNC_TTL_S
            pipe.set(base, job.model_dump_json(), ex=ttl)
            pipe.set(base + ":request", b'{"items": []}', ex=ttl)
            if job.workflow_id is not None:
                pipe.zadd(key("wf", job.workflow_id), {job.job_id: job.created_at})
                if job.execution_id is not None:
                    index = key("wfx", job.workflow_id, job.execution_id)
                    pipe.zadd(index, {job.job_id: job.created_at})
        await pipe.execute()


async def snapshot(redis: aioredis.Redis, jobs: Sequence[JobRecord]) -> Snapshot:
    """Every index: its members and scores; of `expiring`, the entries of five fields (a sync
    job still running without a score: it is the time it was written plus a day)."""
    found: Snapshot = {}
    for pattern in ("jobs:*", "wf:*", "wfx:*"):
        for name in await redis.keys(key(pattern)):
            if await redis.type(name) == b"zset":
                found[name.decode()] = set(await redis.zrange(name, 0, -1, withscores=True))
    running = {job.job_id for job in jobs if job.finished_at is None}
    expiring = set()
    for member, score in await redis.zrange(key("expiring"), 0, -1, withscores=True):
        fields = orjson.loads(member)
        if len(fields) == 5:
            expiring.add((member, None if fields[0] in running else score))
    found["expiring"] = expiring
    return found


def with_sync_running(jobs: list[JobRecord]) -> list[JobRecord]:
    """`jobs` and a sync job whose instance died mid-request (before the indexes, it had no
    `expiring` entry)."""
    died = jobs[0].model_copy(
        update={
            "job_id": "e" * 32,
            "mode": "sync",
            "status": JobStatus.RUNNING,
            "queue": None,
            "finished_at": None,
        }
    )
    return [*jobs, died]


async def test_old_jobs_get_the_indexes_a_save_of_new_jobs_writes(
    store: redis_store.RedisJobStore, caplog: pytest.LogCaptureFixture
) -> None:
    redis = store.db.redis
    jobs = with_sync_running(make_jobs(1_200, seed=30, span_s=60))
    await store_jobs(store, jobs)
    expected = await snapshot(redis, jobs)
    await redis.flushdb()
    await store_as_before(redis, jobs)
    await redis.set(key("job", "garbled"), b"not a job")
    assert await store.list_jobs(JobFilter(), limit=5) == ([], None)
    with caplog.at_level(logging.INFO, logger=redis_backfill.__name__):
        await redis_backfill.backfill(store.db, RETENTION)
    assert await snapshot(redis, jobs) == expected
    assert await redis.get(redis_backfill.MARKER) == redis_backfill.VERSION
    said = [record.getMessage() for record in caplog.records]
    assert said[0] == "Indexing the jobs stored by an earlier version, for the job listing"
    assert said[1].startswith(f"Indexed {len(jobs)} jobs stored by an earlier version in ")
    assert said[1].endswith(" s (1 unreadable records left out)")
    page, _ = await store.list_jobs(JobFilter(), limit=100)
    assert [job.job_id for job in page] == newest_first(jobs, JobFilter())[:100]


async def test_a_second_start_does_nothing_until_the_marker_goes(
    store: redis_store.RedisJobStore, caplog: pytest.LogCaptureFixture
) -> None:
    """Once the marker is set, old jobs are not looked for again; deleted, the next start
    indexes them (jobs stored meanwhile by an instance of the earlier version)."""
    redis = store.db.redis
    first, later = make_jobs(2, seed=31, span_s=10)
    await store_as_before(redis, [first])
    await redis_backfill.backfill(store.db, RETENTION)
    await store_as_before(redis, [later])
    with caplog.at_level(logging.INFO, logger=redis_backfill.__name__):
        await redis_backfill.backfill(store.db, RETENTION)
    assert not caplog.records
    assert [job.job_id for job in (await store.list_jobs(JobFilter(), limit=5))[0]] == [
        first.job_id
    ]
    await redis.delete(redis_backfill.MARKER)
    await redis_backfill.backfill(store.db, RETENTION)
    assert [job.job_id for job in (await store.list_jobs(JobFilter(), limit=5))[0]] == [
        later.job_id,
        first.job_id,
    ]


async def test_a_status_change_during_the_backfill_leaves_the_latest_status_only(
    store: redis_store.RedisJobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job moves on (queued → running, saved by this version) after the backfill read it
    and before it wrote its indexes: it ends under `running` only, and in the listing."""
    redis = store.db.redis
    old = as_accepted(make_jobs(1, seed=32, span_s=1)[0], mode="async", queue="default")
    await store_as_before(redis, [old])
    running = old.advance(JobStatus.RUNNING)
    read = redis.mget

    async def read_then_run(names: list[bytes]) -> list[bytes | None]:
        records = await read(names)
        if await redis.get(key("job", old.job_id)) == old.model_dump_json().encode():
            await store.save(running, durable=True)
        return records  # type: ignore[no-any-return]

    monkeypatch.setattr(redis, "mget", read_then_run)
    await redis_backfill.backfill(store.db, RETENTION)
    monkeypatch.undo()
    assert await store.get(old.job_id) == running
    for status in JobStatus:
        members = await redis.zrange(key("jobs", "status", status.value), 0, -1)
        assert members == ([old.job_id.encode()] if status is JobStatus.RUNNING else []), status
    assert (await store.list_jobs(JobFilter(), limit=5))[0] == [running]
    queued = JobFilter(statuses=frozenset({JobStatus.QUEUED}))
    assert await store.list_jobs(queued, limit=5) == ([], None)


async def test_old_jobs_leave_the_new_indexes_when_their_retention_ends(
    store: redis_store.RedisJobStore,
) -> None:
    """Finished ones (an `expiring` entry of three fields, which names no type or queue) and a
    sync job whose instance died mid-request (none): only waiting or running background jobs
    are left in the indexes."""
    redis = store.db.redis
    jobs = with_sync_running(make_jobs(60, seed=33, span_s=10))
    await store_as_before(redis, jobs)
    await redis_backfill.backfill(store.db, RETENTION)
    await store.purge_expired(time.time() + 25 * 3600)  # past every retention and a day
    waiting = {job.job_id.encode() for job in jobs if job.mode == "async" and not job.finished_at}
    assert waiting
    names = [
        name for name in await redis.keys(key("jobs", "*")) if name.startswith(b"bridge:jobs:")
    ]
    for name in names:
        assert set(await redis.zrange(name, 0, -1)) <= waiting, name
    assert set(await redis.zrange(key("jobs", "all"), 0, -1)) == waiting


async def test_two_instances_at_once_end_as_one(
    store: redis_store.RedisJobStore, redis_url: str
) -> None:
    redis = store.db.redis
    jobs = with_sync_running(make_jobs(1_100, seed=34, span_s=60))
    await store_as_before(redis, jobs)
    await redis_backfill.backfill(store.db, RETENTION)
    alone = await snapshot(redis, jobs)
    await redis.flushdb()
    await store_as_before(redis, jobs)
    other = RedisDb(redis_url, redis_store.kinds(RETENTION))
    await other.open()
    try:
        await asyncio.gather(
            redis_backfill.backfill(store.db, RETENTION),
            redis_backfill.backfill(other, RETENTION),
        )
    finally:
        await other.close()
    assert await snapshot(redis, jobs) == alone


async def test_a_redis_failure_leaves_it_for_the_next_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = RedisServer(tmp_path / "redis").start()
    db = RedisDb(server.url, redis_store.kinds(RETENTION))
    await db.open()
    try:
        await store_as_before(db.redis, make_jobs(10, seed=35, span_s=10))
        server.stop()
        with caplog.at_level(logging.WARNING, logger=redis_backfill.__name__):
            await redis_backfill.backfill(db, RETENTION)
        assert [record.getMessage().endswith(": the next start starts over")
                for record in caplog.records] == [True]  # fmt: skip
    finally:
        await db.close()


async def wait_for(check: Callable[[], Awaitable[bool]], bound_s: float = 20) -> None:
    deadline = time.monotonic() + bound_s
    while not await check():
        assert time.monotonic() < deadline, "not in time"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("backend", ["redis"])
async def test_a_bridge_started_on_old_jobs_lists_them_under_every_filter(
    make_client: ClientFactory, redis_url: str
) -> None:
    jobs = make_jobs(150, seed=36, span_s=60)
    redis = aioredis.Redis.from_url(redis_url)
    try:
        await store_as_before(redis, jobs, {"async": 7 * 24 * 3600.0, "sync": 24 * 3600.0})
        client = await make_client()

        async def marked() -> bool:
            return bool(await redis.get(redis_backfill.MARKER) == redis_backfill.VERSION)

        await wait_for(marked)
    finally:
        await redis.aclose()
    headers = admin_headers(client.app[SETTINGS])
    rare = next(job for job in reversed(jobs) if job.workflow_id and job.queue)
    cases: list[tuple[dict[str, str], JobFilter]] = [
        ({}, JobFilter()),
        (
            {"status": "failed,queued"},
            JobFilter(statuses=frozenset({JobStatus.FAILED, JobStatus.QUEUED})),
        ),
        ({"processing_type": "echo"}, JobFilter(processing_type="echo")),
        ({"queue": "bulk"}, JobFilter(queue="bulk")),
        ({"workflow_id": rare.workflow_id or ""}, JobFilter(workflow_id=rare.workflow_id)),
        ({"execution_id": rare.execution_id or ""}, JobFilter(execution_id=rare.execution_id)),
        (
            {"since": repr(jobs[40].created_at), "until": repr(jobs[100].created_at)},
            JobFilter(since=jobs[40].created_at, until=jobs[100].created_at),
        ),
    ]
    for query, filters in cases:
        expected = newest_first(jobs, filters)
        assert expected, query
        assert await listed(client, headers, limit="20", **query) == expected, query
