"""Job status endpoints: sync jobs are recorded and can be looked up."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.test_utils import TestClient

from bridge.ids import new_id
from bridge.settings import Settings
from tests.conftest import token


async def test_a_sync_job_is_recorded_with_its_outcome(
    client: TestClient, auth: dict[str, str]
) -> None:
    body = {
        "processing_type": "fail_odd",
        "items": [{"json": {"n": 1}}, {"json": {"n": 2}}],
        "workflow_id": "wf-1",
        "execution_id": "ex-9",
        "node": "Python Bridge",
    }
    traced = {**auth, "X-Trace-ID": "trace-from-n8n-0001"}
    answer = await (await client.post("/api/v1/workflow/execute", json=body, headers=traced)).json()
    response = await client.get(f"/api/v1/workflow/status/{answer['job_id']}", headers=auth)
    assert response.status == 200
    job = await response.json()
    assert job["status"] == "completed"
    assert (job["workflow_id"], job["execution_id"], job["node"]) == (
        "wf-1",
        "ex-9",
        "Python Bridge",
    )
    assert (job["item_count"], job["output_count"], job["error_count"]) == (2, 1, 1)
    assert job["errors"] == [
        {"index": 0, "code": "processor_error", "message": "ValueError: odd number 1"}
    ]
    assert job["trace_id"] == "trace-from-n8n-0001"
    assert job["mode"] == "sync" and job["attempts"] == 1


async def test_jobs_of_a_workflow_newest_first_with_pages(
    client: TestClient, auth: dict[str, str]
) -> None:
    ids = []
    for n in range(5):
        body = {"processing_type": "echo", "items": [{"json": {"n": n}}], "workflow_id": "wf-2"}
        ids.append(
            (await (await client.post("/api/v1/workflow/execute", json=body, headers=auth)).json())[
                "job_id"
            ]
        )
    first = await (await client.get("/api/v1/status/wf-2?limit=3", headers=auth)).json()
    assert first["workflow_id"] == "wf-2"
    assert [j["job_id"] for j in first["jobs"]] == ids[::-1][:3]
    second = await (
        await client.get(f"/api/v1/status/wf-2?limit=3&cursor={first['next_cursor']}", headers=auth)
    ).json()
    assert [j["job_id"] for j in second["jobs"]] == ids[::-1][3:]
    assert second["next_cursor"] is None


async def test_a_slow_sync_job_shows_as_running_while_it_runs(
    client: TestClient, auth: dict[str, str]
) -> None:
    body = {
        "processing_type": "sleep",
        "items": [{"json": {}}],
        "parameters": {"seconds": 30},
        "workflow_id": "wf-slow",
    }
    slow = asyncio.create_task(client.post("/api/v1/workflow/execute", json=body, headers=auth))
    try:
        jobs: list[dict[str, Any]] = []
        while not jobs:  # the running record appears after RUNNING_RECORD_AFTER_S
            assert not slow.done()
            await asyncio.sleep(0.1)
            jobs = (await (await client.get("/api/v1/status/wf-slow", headers=auth)).json())["jobs"]
        assert jobs[0]["status"] == "running"
        assert jobs[0]["finished_at"] is None
    finally:
        slow.cancel()


async def test_status_needs_the_status_scope(client: TestClient, settings: Settings) -> None:
    path = f"/api/v1/workflow/status/{new_id()}"
    assert (await client.get(path)).status == 401
    execute_only = {"Authorization": f"Bearer {token(settings, 'execute')}"}
    response = await client.get(path, headers=execute_only)
    assert response.status == 403


async def test_a_late_running_record_never_overwrites_the_finished_one(
    client: TestClient, auth: dict[str, str], monkeypatch: Any
) -> None:
    import bridge.execution

    monkeypatch.setattr(bridge.execution, "RUNNING_RECORD_AFTER_S", 0)  # the timer races the end
    body = {"processing_type": "sleep", "items": [{"json": {}}], "parameters": {"seconds": 0}}
    for _ in range(20):
        answer = await (
            await client.post("/api/v1/workflow/execute", json=body, headers=auth)
        ).json()
        await asyncio.sleep(0.01)  # let any late save run
        job = await client.get(f"/api/v1/workflow/status/{answer['job_id']}", headers=auth)
        assert (await job.json()).get("status") == "completed", await job.text()
