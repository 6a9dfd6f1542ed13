"""Benchmark: each page of the operator console (/admin/ui/) with 100,000 jobs in the store, on
each backend — issue 20's budget is 50 ms of server time per page — and the overview's weight
(its HTML and the assets it loads; budget 150 kB).

The store is filled as `bench/admin_jobs.py` fills it (`filled`: 100,000 jobs through the store's
own writes), then 20 background jobs run for real (items, results, events, callbacks to a dead
port that end as dead letters) so that a job's page, the dead letters and the charts have
something to show. A session signs in as a browser does; each page is then fetched `--repeats`
times by a client in the same process. Prints the median and p95 in milliseconds and the bytes.

    bash bench/run.sh console_pages [--jobs 100000] [--repeats 30] [--backend embedded|redis]
"""

from __future__ import annotations

import asyncio
import gc
import re
import statistics
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from bench.admin_jobs import cli, filled, p95, timed
from bench.common import free_port, token
from bridge.api.admin_jobs import find_jobs
from bridge.api.models import AdminJobsQuery
from bridge.console.sessions import COOKIE

REAL_JOBS = 20
ASSETS = ("/admin/ui/static/console.css", "/admin/ui/static/console.js")
_CSRF = re.compile(r'name="csrf" value="([^"]*)"')


@dataclass
class Row:
    backend: str
    page: str
    ms: list[float]
    size: int


async def sign_in(client: TestClient[Any, Any]) -> None:
    form = await (await client.get("/admin/ui/login")).text()
    found = _CSRF.search(form)
    assert found
    answer = await client.post(
        "/admin/ui/login",
        data={"credential": token("admin"), "csrf": found.group(1)},
        allow_redirects=False,
    )
    assert answer.status == 303, await answer.text()
    assert any(cookie.key == COOKIE for cookie in client.session.cookie_jar)


async def real_jobs(client: TestClient[Any, Any]) -> str:
    """Run REAL_JOBS echo jobs with items and a callback to a closed port; the last one's id."""
    headers = {"Authorization": f"Bearer {token('admin')}"}
    dead_end = f"http://127.0.0.1:{free_port()}/hook"
    job_id = ""
    for n in range(REAL_JOBS):
        answer = await client.post(
            "/api/v1/workflow/execute",
            json={
                "processing_type": "echo",
                "mode": "async",
                "workflow_id": "wf-console",
                "execution_id": f"ex-{n}",
                "items": [{"json": {"n": n, "name": f"item {i}"}} for i in range(30)],
                "callback_url": dead_end,
            },
            headers=headers,
        )
        assert answer.status == 202, await answer.text()
        job_id = (await answer.json())["job_id"]
    for _ in range(400):  # every callback given up: REAL_JOBS dead letters to list
        answer = await client.get("/admin/dead-letters", headers=headers)
        if len((await answer.json())["dead_letters"]) >= REAL_JOBS:
            break
        await asyncio.sleep(0.05)
    return job_id


async def pages(client: TestClient[Any, Any], job_id: str) -> dict[str, str]:
    deep: str | None = None
    for _ in range(20):  # the cursor of page 21, as a reader paging back would hold
        _, deep = await find_jobs(client.app, AdminJobsQuery(cursor=deep), None)
    assert deep is not None
    return {
        "overview": "/admin/ui/",
        "jobs, first page": "/admin/ui/jobs",
        "jobs, status=failed": "/admin/ui/jobs?status=failed",
        "jobs, processor and queue": "/admin/ui/jobs?processing_type=email_send&queue=bulk",
        "jobs, page 21": f"/admin/ui/jobs?cursor={deep}",
        "a job (30 items, events)": f"/admin/ui/jobs/{job_id}",
        "dead letters": "/admin/ui/dead-letters",
        "subscriptions": "/admin/ui/subscriptions",
        "processors": "/admin/ui/processors",
        "a processor (schema, try it)": "/admin/ui/processors/template_render",
        "drain": "/admin/ui/drain",
    }


async def measure(backend: str, client: TestClient[Any, Any], repeats: int) -> list[Row]:
    job_id = await real_jobs(client)
    await sign_in(client)
    rows = []
    for name, path in (await pages(client, job_id)).items():
        size = 0

        async def fetch(path: str = path) -> object:
            nonlocal size
            async with client.get(path, allow_redirects=False) as answer:
                assert answer.status == 200, (path, answer.status)
                body = await answer.read()
                size = len(body)
                return body

        rows.append(Row(backend, name, await timed(fetch, repeats), 0))
        rows[-1].size = size
    for asset in ASSETS:
        body = await (await client.get(asset)).read()
        rows.append(Row(backend, asset.rsplit("/", 1)[1], [0.0], len(body)))
    return rows


def overview_weight(rows: Sequence[Row], backend: str) -> int:
    """The overview's HTML and the assets it loads, in bytes."""
    shown = {"overview", *(asset.rsplit("/", 1)[1] for asset in ASSETS)}
    return sum(row.size for row in rows if row.backend == backend and row.page in shown)


def table(rows: Sequence[Row]) -> str:
    lines = ["| backend | page | median ms | p95 ms | bytes |", "|---|---|---:|---:|---:|"]
    for row in rows:
        if row.page.endswith((".css", ".js")):
            lines.append(f"| {row.backend} | {row.page} | | | {row.size:,} |")
            continue
        lines.append(
            f"| {row.backend} | {row.page} | {statistics.median(row.ms):.1f} | "
            f"{p95(row.ms):.1f} | {row.size:,} |"
        )
    for backend in dict.fromkeys(row.backend for row in rows):
        lines.append(
            f"| {backend} | **overview + assets** | | | **{overview_weight(rows, backend):,}** |"
        )
    return "\n".join(lines)


async def run(backends: Sequence[str], count: int, repeats: int) -> list[Row]:
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-console-") as tmp:
        for backend in backends:
            # Callbacks to a closed port give up after two quick attempts: dead letters to show.
            async with filled(
                backend,
                count,
                Path(tmp),
                callback_max_attempts=2,
                callback_retry_max_s=0.1,
                breaker_failures=1000,  # no breaker in the way: they give up at once
            ) as (client, _, seconds):
                print(f"{backend}: {count} jobs written in {seconds:.1f} s", flush=True)
                # The 100,000 records the filling made live on in this process, which a bridge
                # would not hold: out of the collector's walks, so its pauses are the pages'.
                gc.collect()
                gc.freeze()
                rows += await measure(backend, client, repeats)
                gc.unfreeze()
    return rows


def main(argv: Sequence[str] | None = None) -> Any:
    return cli(run, table, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    main()
