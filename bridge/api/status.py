"""GET /api/v1/workflow/status/{job_id}, GET /api/v1/status/{workflow_id} and
DELETE /api/v1/workflow/{job_id} (cancel). A workflow-limited token sees only its workflows'
jobs: another's reads as unknown (404)."""

from __future__ import annotations

import orjson
from aiohttp import web

from bridge.api.access import require_workflow, visible
from bridge.api.body import json_response, parse_query
from bridge.api.models import WorkflowJobsQuery
from bridge.errors import NotFound, ValidationFailed
from bridge.jobs import JobRecord
from bridge.keys import STORE, WORKERS


async def visible_job(request: web.Request) -> JobRecord:
    """The job of the path, if this credential may see it; else 404, as for an unknown id
    (the console's job page too: its session's credential is the request's principal)."""
    job_id = request.match_info["job_id"]
    job = await request.app[STORE].get(job_id)
    if job is None or not visible(request, job.workflow_id):
        raise NotFound(
            f"no job {job_id!r}",
            description="finished jobs are kept for BRIDGE_SYNC_JOB_RETENTION_S (sync) or "
            "BRIDGE_JOB_RETENTION_S (background), then removed",
        )
    return job


async def job_status(request: web.Request) -> web.Response:
    job = await visible_job(request)
    job_id = job.job_id
    answer = job.shown()
    if job.mode == "async" and job.status.finished:
        result = await request.app[STORE].get_data(job_id, "result")
        if result is not None:
            answer["items"] = orjson.Fragment(_items_of(result))
    return json_response(answer)


def _items_of(result: bytes) -> bytes:
    """The `items` array of a stored result, as JSON."""
    return orjson.dumps(orjson.loads(result)["items"])


async def cancel(request: web.Request) -> JobRecord:
    """Cancel the job of the path (this API's and the console's way): the job cancelled, or
    as it is while the instance that runs it has not stopped it yet (the request is recorded);
    404 for a job this credential may not see, 409 for one that has ended."""
    return await request.app[WORKERS].cancel((await visible_job(request)).job_id)


async def cancel_job(request: web.Request) -> web.Response:
    """200 with the job cancelled; 202 with it as it is while the instance that runs it has
    not stopped it yet (its status shows when it has)."""
    job = await cancel(request)
    if job.status.finished:
        return json_response(job.shown())
    return json_response(
        job.shown(), status=202, headers={"Location": f"/api/v1/workflow/status/{job.job_id}"}
    )


async def workflow_jobs(request: web.Request) -> web.Response:
    workflow_id = request.match_info["workflow_id"]
    require_workflow(request, workflow_id, "/path/workflow_id")
    query = parse_query(request, WorkflowJobsQuery)
    try:
        jobs, next_cursor = await request.app[STORE].list_for_workflow(
            workflow_id, limit=query.limit, cursor=query.cursor, execution_id=query.execution_id
        )
    except ValueError as exc:
        raise ValidationFailed(
            f"/query/cursor: {exc}", details=[{"pointer": "/query/cursor", "message": str(exc)}]
        ) from None
    return json_response(
        {
            "workflow_id": workflow_id,
            "jobs": [job.shown() for job in jobs],
            "next_cursor": next_cursor,
        }
    )
