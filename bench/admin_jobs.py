"""Benchmark: the cross-workflow job listing (`list_jobs`, `GET /admin/jobs`) over 100,000 jobs,
on each backend (the embedded SQLite file; a real redis-server).

A bridge app runs in this process (aiohttp's test server) on a fresh data directory or Redis;
`fill_store` writes the jobs through its store's own writes (group commit: thousands per
transaction or script call), varied over workflows, processors, queues and statuses, created over
the past week. Then each case is timed on the store (`list_jobs`) and over HTTP (the request, the
handler and the JSON answer, read by a client in the same process), `--repeats` times: the first
page, the 21st page (after following 20 cursors), each filter, a rare combination of filters,
a token limited to a few workflows by a prefix.
Prints a table of the median and p95 in milliseconds.

    bash bench/run.sh admin_jobs [--jobs 100000] [--repeats 30] [--backend embedded|redis]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer
from redis.exceptions import RedisError

from bench.common import SECRET, free_port, token
from bridge.api.models import AdminJobsQuery
from bridge.app import create_app
from bridge.ids import new_id
from bridge.jobs import JobRecord, JobStatus
from bridge.keys import STORE
from bridge.settings import Settings
from bridge.stores.base import JobFilter, JobStore
from bridge.workflow_limit import WorkflowLimit

R = TypeVar("R")
PROCESSORS = ("echo", "template_render", "validation", "email_send", "n8n_trigger")
QUEUES = ("default", "bulk", "priority")
WORKFLOWS = 200
# Most jobs finished, as in a store that keeps them a week; a few failing, waiting or running.
STATUSES: tuple[tuple[JobStatus, float], ...] = (
    (JobStatus.COMPLETED, 0.86),
    (JobStatus.FAILED, 0.08),
    (JobStatus.CANCELLED, 0.02),
    (JobStatus.QUEUED, 0.02),
    (JobStatus.RUNNING, 0.02),
)
WEEK_S = 7 * 24 * 3600
RETENTION_S = 5 * WEEK_S
CHUNK = 2_000  # jobs per commit while filling
DEEP_PAGES = 20  # the deep page: after following this many cursors
# Workflows few jobs belong to, named by a prefix: no index holds them (SQLite walks one of its
# indexes whole, Redis answers short pages).
RARE_REACH = ["wf-19*"]
REDIS_SERVER = ("redis-server", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")


def make_jobs(count: int, seed: int = 20, span_s: float = WEEK_S) -> list[JobRecord]:
    """`count` jobs, oldest first, created over the `span_s` seconds up to now: a quarter sync
    (no queue), the rest background jobs in one of QUEUES; workflows `wf-000`… (a few
    without), executions shared by a handful of jobs each."""
    rng = random.Random(seed)
    now = time.time()
    statuses = [status for status, _ in STATUSES]
    weights = [weight for _, weight in STATUSES]
    jobs = []
    for n in range(count):
        created = now - span_s + span_s * (n + rng.random()) / count
        mode = "sync" if rng.random() < 0.25 else "async"
        status = rng.choices(statuses, weights)[0]
        if mode == "sync" and status is JobStatus.QUEUED:
            status = JobStatus.RUNNING  # a sync job is never queued
        workflow = f"wf-{int(rng.paretovariate(1.2)) % WORKFLOWS:03d}" if n % 50 else None
        finished = created + rng.uniform(0.01, 5) if status.finished else None
        jobs.append(
            JobRecord(
                job_id=new_id(),
                status=status,
                mode=mode,
                processing_type=rng.choice(PROCESSORS),
                workflow_id=workflow,
                execution_id=f"ex-{n // 4}" if workflow else None,
                queue=rng.choice(QUEUES) if mode == "async" else None,
                created_at=created,
                started_at=created if status is not JobStatus.QUEUED else None,
                finished_at=finished,
                attempts=0 if status is JobStatus.QUEUED else 1,
                item_count=rng.randint(1, 50),
            )
        )
    return jobs


def as_accepted(job: JobRecord, **changes: Any) -> JobRecord:
    """The background job as it was accepted: queued, never run (with `changes`)."""
    update = {"status": JobStatus.QUEUED, "attempts": 0, "started_at": None, "finished_at": None}
    return job.model_copy(update={**update, **changes})


async def store_jobs(store: JobStore, jobs: Sequence[JobRecord]) -> None:
    """Save `jobs` as the bridge would have, CHUNK to a commit: a background job first as it is
    accepted (queued, never run — what makes the Redis store index it as new), then as it is."""
    for start in range(0, len(jobs), CHUNK):
        chunk = jobs[start : start + CHUNK]
        accepted = [
            as_accepted(job)
            for job in chunk
            if job.mode == "async" and job.status is not JobStatus.QUEUED
        ]
        for job in accepted:
            await store.save(job)
        if accepted:
            await store.flush()
        for job in chunk:
            await store.save(job)
        await store.flush()


async def fill_store(store: JobStore, count: int, seed: int = 20) -> list[JobRecord]:
    """`count` jobs of `make_jobs`, written to `store`; the jobs."""
    jobs = make_jobs(count, seed)
    await store_jobs(store, jobs)
    return jobs


def cases(jobs: Sequence[JobRecord]) -> dict[str, dict[str, str]]:
    """The queries timed: each filter alone, and a rare combination (of the jobs there are)."""
    rare = next(
        (
            job
            for job in reversed(jobs)
            if job.status is JobStatus.FAILED and job.queue == "priority" and job.workflow_id
        ),
        jobs[-1],
    )
    middle = jobs[len(jobs) // 2].created_at
    return {
        "first page": {},
        "status=failed": {"status": "failed"},
        "status=queued,running": {"status": "queued,running"},
        "processing_type": {"processing_type": "email_send"},
        "queue": {"queue": "bulk"},
        "workflow_id": {"workflow_id": "wf-007"},
        "execution_id": {"execution_id": rare.execution_id or ""},
        "since/until (a day)": {"since": str(middle - 43200), "until": str(middle + 43200)},
        "rare combination": {
            "status": rare.status.value,
            "processing_type": rare.processing_type,
            "queue": rare.queue or "default",
            "workflow_id": rare.workflow_id or "wf-000",
        },
    }


def filters_of(query: dict[str, str]) -> tuple[JobFilter, int, str | None]:
    parsed = AdminJobsQuery.model_validate(query)
    return parsed.filters(), parsed.limit, parsed.cursor


async def deep_cursor(store: JobStore, pages: int) -> str:
    """The cursor of page `pages` + 1 of the unfiltered listing."""
    cursor = None
    for _ in range(pages):
        _, cursor = await store.list_jobs(JobFilter(), limit=50, cursor=cursor)
        assert cursor is not None, "fewer jobs than pages"
    assert cursor is not None
    return cursor


async def timed(run: Callable[[], Awaitable[object]], repeats: int) -> list[float]:
    await run()  # warm: the first call pays for caches
    took = []
    for _ in range(repeats):
        start = time.perf_counter()
        await run()
        took.append((time.perf_counter() - start) * 1000)
    return took


@dataclass
class Row:
    backend: str
    case: str
    store_ms: list[float]
    http_ms: list[float]


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1] if len(values) > 1 else values[0]


async def measure(
    backend: str, app_client: TestClient[Any, Any], jobs: Sequence[JobRecord], repeats: int
) -> list[Row]:
    store = app_client.app[STORE]
    headers = {"Authorization": f"Bearer {token('admin')}"}
    queries = cases(jobs)
    pages = min(DEEP_PAGES, (len(jobs) - 1) // 50)
    if pages:
        queries[f"page {pages + 1} (cursors)"] = {"cursor": await deep_cursor(store, pages)}
    limited = f"a token limited to {', '.join(RARE_REACH)}"
    queries[limited] = {}
    rows = []
    for name, query in queries.items():
        filters, limit, cursor = filters_of(query)
        if name == limited:  # no filter of the query's, but only some workflows' jobs
            filters = replace(filters, workflows=WorkflowLimit.parse(RARE_REACH))
            auth = {"Authorization": f"Bearer {token('admin', workflows=RARE_REACH)}"}
        else:
            auth = headers

        async def on_store(
            filters: JobFilter = filters, limit: int = limit, cursor: str | None = cursor
        ) -> object:
            return await store.list_jobs(filters, limit=limit, cursor=cursor)

        async def over_http(query: dict[str, str] = query, auth: dict[str, str] = auth) -> object:
            async with app_client.get("/admin/jobs", params=query, headers=auth) as answer:
                assert answer.status == 200, await answer.text()
                return await answer.read()

        rows.append(
            Row(backend, name, await timed(on_store, repeats), await timed(over_http, repeats))
        )
    return rows


def table(rows: list[Row]) -> str:
    lines = [
        "| backend | query | list_jobs median ms | p95 ms | GET /admin/jobs median ms | p95 ms |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row.backend} | {row.case} | {statistics.median(row.store_ms):.1f} | "
            f"{p95(row.store_ms):.1f} | {statistics.median(row.http_ms):.1f} | "
            f"{p95(row.http_ms):.1f} |"
        )
    return "\n".join(lines)


@asynccontextmanager
async def redis_server() -> AsyncIterator[str]:
    """A redis-server of its own on a free port, stopped after."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        *REDIS_SERVER, "--port", str(port), stdout=asyncio.subprocess.DEVNULL
    )
    try:
        url = f"redis://127.0.0.1:{port}/0"
        client = aioredis.Redis.from_url(url)
        try:
            for _ in range(200):
                try:
                    await client.ping()
                    break
                except (OSError, RedisError):
                    await asyncio.sleep(0.05)
        finally:
            await client.aclose()
        yield url
    finally:
        process.terminate()
        await process.wait()


@asynccontextmanager
async def bridge(
    data_dir: Path, redis_url: str | None, **overrides: object
) -> AsyncIterator[TestClient[Any, Any]]:
    """A bridge app in this process, on `data_dir` (embedded) or `redis_url`, and its client;
    `overrides`: other settings."""
    settings = Settings.model_validate(
        {
            "data_dir": data_dir,
            "redis_url": redis_url,
            "jwt_secret": SECRET,
            "access_log": False,
            "cpu_executor": "thread",
            # The jobs were created over the past week: none may expire while timed.
            "job_retention_s": RETENTION_S,
            "sync_job_retention_s": RETENTION_S,
            **overrides,
        }
    )
    client = TestClient(TestServer(create_app(settings)))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


@asynccontextmanager
async def filled(
    backend: str, count: int, folder: Path, seed: int = 20, **overrides: object
) -> AsyncIterator[tuple[TestClient[Any, Any], list[JobRecord], float]]:
    """A bridge on `backend` whose store holds `count` jobs of `make_jobs`; its client, the jobs,
    and the seconds the filling took. What the console's benchmarks build on too."""
    async with (
        _backend_url(backend) as redis_url,
        bridge(folder / backend, redis_url, **overrides) as client,
    ):
        start = time.perf_counter()
        jobs = await fill_store(client.app[STORE], count, seed)
        yield client, jobs, time.perf_counter() - start


@asynccontextmanager
async def _backend_url(backend: str) -> AsyncIterator[str | None]:
    if backend == "redis":
        async with redis_server() as url:
            yield url
    else:
        yield None


async def run(backends: Sequence[str], count: int, repeats: int) -> list[Row]:
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-admin-jobs-") as tmp:
        for backend in backends:
            async with filled(backend, count, Path(tmp)) as (client, jobs, seconds):
                print(f"{backend}: {count} jobs written in {seconds:.1f} s", flush=True)
                rows += await measure(backend, client, jobs, repeats)
    return rows


def parse_args(argv: Sequence[str] | None, description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument(
        "--backend", choices=("embedded", "redis"), action="append", help="default: both"
    )
    return parser.parse_args(argv)


def cli(
    run: Callable[[Sequence[str], int, int], Coroutine[Any, Any, list[R]]],
    table: Callable[[list[R]], str],
    description: str,
    argv: Sequence[str] | None = None,
) -> list[R]:
    """A benchmark over a filled store, run from the command line: --jobs, --repeats, --backend."""
    args = parse_args(argv, description)
    rows = asyncio.run(run(args.backend or ["embedded", "redis"], args.jobs, args.repeats))
    print(table(rows))
    return rows


def main(argv: Sequence[str] | None = None) -> Any:
    return cli(run, table, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    main()
