"""GET /admin/jobs and the store query under it (`list_jobs`), on both backends: every filter
alone and together against a plain reading of the jobs, newest first, pages that neither repeat
nor miss a job, a status change moving a job between status filters, expiry taking the Redis
indexes with it, and what a workflow-limited credential sees."""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient

from bench.admin_jobs import as_accepted, make_jobs, store_jobs
from bench.admin_jobs import run as run_bench
from bridge.auth import mint_token
from bridge.jobs import JobRecord, JobStatus
from bridge.keys import STORE
from bridge.settings import Settings
from bridge.stores import redis as redis_store
from bridge.stores import redis_listing, sqlite, sqlite_log
from bridge.stores.base import JobFilter, Store
from bridge.stores.redis_db import RedisDb, key
from bridge.stores.sqlite_db import Database
from bridge.workflow_limit import WorkflowLimit
from tests.conftest import token

RETENTION = {"async": 3600.0, "sync": 3600.0}
JOBS = "/admin/jobs"
redis_only = pytest.mark.parametrize("backend", ["redis"])


@pytest.fixture
async def store(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """A job store on its own (no app): the embedded file, or the session's redis-server."""
    if backend == "redis":
        db = RedisDb(request.getfixturevalue("redis_url"), redis_store.kinds(RETENTION))
        await db.open()
        yield redis_store.RedisJobStore(db, RETENTION)
        await db.close()
    else:
        path = tmp_path / "jobs.sqlite3"
        sqlite_db = Database(path, (*sqlite.tables(RETENTION), *sqlite_log.TABLES))
        await sqlite_db.open()
        yield sqlite.SqliteJobStore(sqlite_db, RETENTION)
        await sqlite_db.close()


def tied(jobs: list[JobRecord]) -> list[JobRecord]:
    """The jobs with their creation times on whole seconds: many share one (the order is then
    by job id, and pages must cut between them)."""
    return [job.model_copy(update={"created_at": float(int(job.created_at))}) for job in jobs]


def newest_first(jobs: Sequence[JobRecord], filters: JobFilter) -> list[str]:
    """What list_jobs must answer, page after page: the plain reading."""
    kept = [job for job in jobs if filters.keeps(job)]
    return [
        job.job_id for job in sorted(kept, key=lambda j: (j.created_at, j.job_id), reverse=True)
    ]


async def every_page(store: Store, filters: JobFilter, limit: int) -> tuple[list[str], int]:
    """The ids of every page, in order, and how many pages were short but not the last."""
    seen: list[str] = []
    short = 0
    cursor = None
    for _ in range(10_000):
        page, cursor = await store.list_jobs(filters, limit=limit, cursor=cursor)
        assert len(page) <= limit
        seen += [job.job_id for job in page]
        if cursor is None:
            return seen, short
        short += len(page) < limit
    raise AssertionError("the pages never end")


def random_filters(rng: random.Random, jobs: Sequence[JobRecord]) -> JobFilter:
    """Each filter given or not, mostly with a value some job has."""
    some = rng.choice(jobs)
    times = sorted(rng.choice(jobs).created_at for _ in range(2))
    limits = [
        WorkflowLimit.parse([some.workflow_id or "wf-none"]),
        WorkflowLimit.parse(["wf-00*", "wf-010"]),
        WorkflowLimit.parse([f"wf-{n:03d}" for n in range(0, 40, 2)]),  # past MAX_LIMIT_KEYS
    ]
    return JobFilter(
        statuses=frozenset(rng.sample(list(JobStatus), rng.choice([0, 0, 1, 1, 2, 3, 5]))),
        processing_type=rng.choice([None, None, some.processing_type, "nope"]),
        queue=rng.choice([None, None, some.queue, "bulk"]),
        workflow_id=rng.choice([None, None, None, some.workflow_id, "wf-001"]),
        execution_id=rng.choice([None, None, None, some.execution_id]),
        since=rng.choice([None, None, times[0]]),
        until=rng.choice([None, None, times[1]]),
        workflows=rng.choice([None, None, None, *limits]),
    )


async def test_every_filter_alone_and_together_pages_newest_first(store: Store) -> None:
    """A few hundred random combinations of the filters, paged with random sizes: the pages
    together are exactly the jobs that pass, newest first, none twice."""
    jobs = tied(make_jobs(400, seed=3, span_s=120))
    await store_jobs(store, jobs)
    rng = random.Random(7)
    for _ in range(150):
        filters = random_filters(rng, jobs)
        limit = rng.choice([1, 3, 10, 50, 100])
        seen, short = await every_page(store, filters, limit)
        assert seen == newest_first(jobs, filters), (filters, limit)
        assert short == 0  # never short at this size: no store ran out of its budget


async def test_each_filter_alone_finds_its_jobs(store: Store) -> None:
    jobs = make_jobs(300, seed=5, span_s=60)
    await store_jobs(store, jobs)
    some = jobs[123]
    assert some.workflow_id is not None and some.execution_id is not None
    for filters in [
        JobFilter(),
        JobFilter(statuses=frozenset({some.status})),
        JobFilter(statuses=frozenset({JobStatus.QUEUED, JobStatus.RUNNING})),
        JobFilter(statuses=frozenset(JobStatus)),  # every status: no filter
        JobFilter(processing_type=some.processing_type),
        JobFilter(queue="bulk"),
        JobFilter(workflow_id=some.workflow_id),
        JobFilter(execution_id=some.execution_id),
        JobFilter(workflow_id=some.workflow_id, execution_id=some.execution_id),
        JobFilter(since=some.created_at),
        JobFilter(until=some.created_at),
        JobFilter(since=jobs[100].created_at, until=jobs[200].created_at),
        JobFilter(workflows=WorkflowLimit.parse([some.workflow_id])),
        JobFilter(workflows=WorkflowLimit.parse([])),  # reaches no workflow
    ]:
        expected = newest_first(jobs, filters)
        seen, _ = await every_page(store, filters, 50)
        assert seen == expected, filters
    # since is inclusive, until exclusive: a range cut in two finds each job once
    middle = jobs[150].created_at
    before, _ = await every_page(store, JobFilter(until=middle), 50)
    after, _ = await every_page(store, JobFilter(since=middle), 50)
    assert len(before) + len(after) == len(jobs) and some.job_id in before + after


async def test_a_page_carries_the_jobs_reports(store: Store) -> None:
    jobs = make_jobs(5, seed=1, span_s=10)
    await store_jobs(store, jobs)
    await store.save_report(jobs[2].job_id, b'{"status": "success"}')
    page, cursor = await store.list_jobs(JobFilter(), limit=10)
    assert cursor is None
    assert [job.reported for job in page] == [None, None, {"status": "success"}, None, None]


async def test_a_status_change_moves_the_job_between_status_filters(store: Store) -> None:
    queued = as_accepted(make_jobs(1, seed=2, span_s=1)[0], mode="async", queue="default")
    running = queued.advance(JobStatus.RUNNING)
    for state in (
        queued,
        running,
        running.advance(JobStatus.QUEUED),
        running,
        running.advance(JobStatus.FAILED),
    ):
        await store.save(state, durable=True)
        for status in JobStatus:
            page, _ = await store.list_jobs(JobFilter(statuses=frozenset({status})), limit=5)
            assert [job.job_id for job in page] == (
                [queued.job_id] if status is state.status else []
            )


async def test_a_cursor_not_handed_out_is_refused(store: Store) -> None:
    for cursor in ("bm90IGEgY3Vyc29y", "", "x" * 40):
        with pytest.raises(ValueError, match="cursor"):
            await store.list_jobs(JobFilter(), limit=5, cursor=cursor)


@redis_only
async def test_redis_bounds_its_work_and_a_short_page_is_not_the_end(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a budget of a few index entries, a rare filter answers short pages (even empty
    ones) with a cursor; followed to the end they hold exactly the jobs that pass."""
    assert redis_listing.SCAN_BUDGET == 2_000  # as docs/api.md says
    monkeypatch.setattr(redis_listing, "SCAN_BUDGET", 30)
    monkeypatch.setattr(redis_listing, "BATCH", 10)
    jobs = tied(make_jobs(400, seed=11, span_s=100))
    await store_jobs(store, jobs)
    shorts = 0
    rng = random.Random(13)
    for _ in range(60):
        filters = random_filters(rng, jobs)
        seen, short = await every_page(store, filters, rng.choice([1, 5, 20]))
        assert seen == newest_first(jobs, filters), filters
        shorts += short
    assert shorts > 0  # the budget did cut pages short
    # One filter that a prefix limit leaves to the records: short pages, nothing missed.
    limited = JobFilter(workflows=WorkflowLimit.parse(["wf-01*"]))
    seen, short = await every_page(store, limited, 10)
    assert seen == newest_first(jobs, limited) and short > 0


@redis_only
async def test_redis_indexes_go_when_their_jobs_expire(store: Any) -> None:
    """Finished jobs, a sync job whose instance died mid-request, and a job finished before
    these indexes (its expiry entry of three fields): every index entry goes at purge."""
    redis = store.db.redis
    jobs = make_jobs(40, seed=4, span_s=10)
    await store_jobs(store, jobs)
    died = jobs[0].model_copy(
        update={
            "job_id": "e" * 32,
            "mode": "sync",
            "status": JobStatus.RUNNING,
            "queue": None,
            "finished_at": None,
        }
    )
    await store.save(died, durable=True)
    old = jobs[1].model_copy(update={"job_id": "f" * 32, "status": JobStatus.COMPLETED})
    await redis.set(key("job", old.job_id), old.model_dump_json())
    await redis.zadd(key("jobs", "status", "completed"), {old.job_id: old.created_at})
    member = orjson.dumps([old.job_id, old.workflow_id, old.execution_id])
    await redis.zadd(key("expiring"), {member: time.time()})
    assert await redis.keys(key("jobs", "*"))
    assert await store.purge_expired(time.time()) == 1  # the old one: its time has come
    assert await redis.zscore(key("jobs", "status", "completed"), old.job_id) is None
    unfinished = {job.job_id for job in jobs if not job.status.finished}
    await store.purge_expired(time.time() + 3700)  # every finished job's retention
    ids = await redis.zrange(key("jobs", "all"), 0, -1)
    assert {job_id.decode() for job_id in ids} == unfinished | {died.job_id}
    await store.purge_expired(time.time() + 25 * 3600)  # past a running sync job's day
    left = [name.decode() for name in await redis.keys(key("jobs", "*"))]
    async_left = {job.job_id for job in jobs if job.mode == "async" and not job.status.finished}
    for name in left:  # only background jobs still waiting or running (they never expire)
        members = {m.decode() for m in await redis.zrange(name, 0, -1)}
        assert members <= async_left, name
    assert died.job_id not in {m.decode() for m in await redis.zrange(key("jobs", "all"), 0, -1)}


@redis_only
async def test_redis_jobs_stored_before_these_indexes_are_listed_by_workflow_only(
    store: Any,
) -> None:
    """As a bridge before list_jobs wrote a job (the record and its workflow's index): it is
    not in the cross-workflow listing, and is by its workflow and id; once its status changes,
    it is under that status's filter (as docs/api.md says)."""
    redis = store.db.redis
    old = as_accepted(
        make_jobs(1, seed=6, span_s=1)[0], mode="async", queue="default", workflow_id="wf-old"
    )
    await redis.set(key("job", old.job_id), old.model_dump_json())
    await redis.zadd(key("wf", "wf-old"), {old.job_id: old.created_at})
    assert await store.list_jobs(JobFilter(), limit=5) == ([], None)
    assert [job.job_id for job in (await store.list_for_workflow("wf-old", limit=5))[0]] == [
        old.job_id
    ]
    assert await store.get(old.job_id) == old
    running = old.advance(JobStatus.RUNNING)
    await store.save(running, durable=True)
    assert await store.list_jobs(JobFilter(), limit=5) == ([], None)
    page, _ = await store.list_jobs(JobFilter(statuses=frozenset({JobStatus.RUNNING})), limit=5)
    assert page == [running]


# ---- GET /admin/jobs -----------------------------------------------------------------------------


def admin_headers(settings: Settings, workflows: list[str] | None = None) -> dict[str, str]:
    if workflows is None:
        return {"Authorization": f"Bearer {token(settings, 'admin')}"}
    return {"Authorization": f"Bearer {mint_token(settings, ['admin'], 300, workflows=workflows)}"}


async def listed(client: TestClient, headers: dict[str, str], **query: str) -> list[str]:
    """The job ids of every page."""
    ids: list[str] = []
    while True:
        answer = await client.get(JOBS, params=query, headers=headers)
        assert answer.status == 200, await answer.text()
        page = await answer.json()
        assert page.keys() == {"jobs", "next_cursor"}
        ids += [job["job_id"] for job in page["jobs"]]
        if page["next_cursor"] is None:
            return ids
        query["cursor"] = page["next_cursor"]


async def test_the_endpoint_filters_and_pages(
    client: TestClient, settings: Settings, auth: dict[str, str]
) -> None:
    jobs = make_jobs(120, seed=8, span_s=60)
    await store_jobs(client.app[STORE], jobs)
    headers = admin_headers(settings)
    assert await listed(client, headers, limit="7") == newest_first(jobs, JobFilter())
    failed = JobFilter(statuses=frozenset({JobStatus.FAILED, JobStatus.CANCELLED}), queue="bulk")
    got = await listed(client, headers, status="failed,cancelled", queue="bulk", limit="2")
    assert got == newest_first(jobs, failed)
    since, until = jobs[30].created_at, jobs[90].created_at
    got = await listed(client, headers, since=repr(since), until=repr(until))
    assert got == newest_first(jobs, JobFilter(since=since, until=until))
    assert len(got) == 60
    # each job as its status shows it (a finished background job's without its items)
    page = await (await client.get(JOBS, params={"limit": "100"}, headers=headers)).json()
    for shown in page["jobs"][::10]:
        url = f"/api/v1/workflow/status/{shown['job_id']}"
        one = await (await client.get(url, headers=auth)).json()
        one.pop("items", None)
        assert shown == one


async def test_a_limited_token_sees_only_its_workflows(
    client: TestClient, settings: Settings
) -> None:
    jobs = make_jobs(80, seed=9, span_s=60)
    await store_jobs(client.app[STORE], jobs)
    headers = admin_headers(settings, ["wf-001", "wf-00*"])
    reach = WorkflowLimit.parse(["wf-001", "wf-00*"])
    got = await listed(client, headers)
    assert got == newest_first(jobs, JobFilter(workflows=reach)) and got
    without = {job.job_id for job in jobs if job.workflow_id is None}
    assert without and not without & set(got)  # a job of no workflow is no limited token's
    assert await listed(client, headers, workflow_id="wf-002") == newest_first(
        jobs, JobFilter(workflow_id="wf-002")
    )
    answer = await client.get(JOBS, params={"workflow_id": "wf-010"}, headers=headers)
    assert answer.status == 403
    error = (await answer.json())["error"]
    assert error["details"] == [
        {
            "pointer": "/query/workflow_id",
            "message": "outside the workflows this token is limited to",
        }
    ]
    nothing = admin_headers(settings, [])
    assert await listed(client, nothing) == []


async def test_bad_queries_are_422_and_name_the_parameter(
    client: TestClient, settings: Settings
) -> None:
    headers = admin_headers(settings)
    for query, pointer in [
        ({"cursor": "bm90IGEgY3Vyc29y"}, "/query/cursor"),
        ({"status": "done"}, "/query/status"),
        ({"status": "failed,"}, "/query/status"),
        ({"limit": "101"}, "/query/limit"),
        ({"limit": "0"}, "/query/limit"),
        ({"since": "1e9"}, "/query/since"),
        ({"queue": "a b"}, "/query/queue"),
        ({"workflow": "wf-1"}, "/query/workflow"),  # unknown: refused, not ignored
    ]:
        answer = await client.get(JOBS, params=query, headers=headers)
        assert answer.status == 422, query
        body = await answer.json()
        assert [detail["pointer"] for detail in body["error"]["details"]] == [pointer], query
        assert body["error"]["code"] and body["error"]["trace_id"]


async def test_a_bad_query_says_in_words_what_is_wanted(
    client: TestClient, settings: Settings
) -> None:
    """Each field's error says what it takes, never the pattern the validator matched."""
    headers = admin_headers(settings)
    statuses = "queued, running, completed, failed, cancelled"
    for query, pointer, words in [
        ({"status": "bogus"}, "/query/status", f"one or more of {statuses}, separated by commas"),
        ({"execution_id": "ex\x01"}, "/query/execution_id", "no control characters"),
        ({"workflow_id": "wf\x7f"}, "/query/workflow_id", "no control characters"),
        ({"processing_type": "e\x1bcho"}, "/query/processing_type", "no control characters"),
        ({"queue": "a b"}, "/query/queue", "letters, digits"),
        ({"cursor": "not a cursor!"}, "/query/cursor", "next_cursor"),
    ]:
        answer = await client.get(JOBS, params=query, headers=headers)
        assert answer.status == 422, query
        error = (await answer.json())["error"]
        [detail] = error["details"]
        assert detail["pointer"] == pointer and words in detail["message"], detail
        assert error["message"] == f"{pointer}: {detail['message']}"
        assert "pattern" not in error["message"] and "^" not in error["message"], error


async def test_it_needs_the_admin_scope(client: TestClient, settings: Settings) -> None:
    status_only = {"Authorization": f"Bearer {token(settings, 'status')}"}
    assert (await client.get(JOBS, headers=status_only)).status == 403
    assert (await client.get(JOBS)).status == 401


async def test_the_benchmark_runs_at_a_tiny_size() -> None:
    rows = await run_bench(["embedded", "redis"], 300, 2)
    assert {row.backend for row in rows} == {"embedded", "redis"}
    assert len(rows) == 2 * 11 and all(row.store_ms and row.http_ms for row in rows)


async def test_a_parameter_given_twice_is_refused_not_half_applied(
    client: TestClient, settings: Settings
) -> None:
    """`status=completed&status=cancelled` once answered the completed jobs only; several
    statuses are one parameter, comma-separated. The same holds on every endpoint."""
    headers = admin_headers(settings)
    for path in (
        "/admin/jobs?status=completed&status=cancelled",
        "/admin/jobs?workflow_id=a&workflow_id=b&queue=x&queue=y",
        "/admin/dead-letters?limit=1&limit=2",
        "/api/v1/status/wf-1?limit=1&limit=2",
    ):
        answer = await client.get(path, headers=headers)
        assert answer.status == 422, path
        body = await answer.json()
        assert "given more than once" in body["error"]["message"], path
    answer = await client.get(
        "/admin/jobs?workflow_id=a&workflow_id=b&queue=x&queue=y", headers=headers
    )
    pointers = [d["pointer"] for d in (await answer.json())["error"]["details"]]
    assert pointers == ["/query/queue", "/query/workflow_id"]
