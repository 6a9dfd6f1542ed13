"""GET /admin/jobs: every job across workflows, newest first, filtered and paginated — what the
console's jobs page shows too (`find_jobs`). A workflow-limited credential sees only its
workflows' jobs; naming another workflow in the filter is refused (403)."""

from __future__ import annotations

from aiohttp import web

from bridge.api.access import limit_of, require_within
from bridge.api.body import json_response, parse_query
from bridge.api.models import AdminJobsQuery
from bridge.errors import ValidationFailed
from bridge.jobs import JobRecord
from bridge.keys import STORE
from bridge.workflow_limit import WorkflowLimit


async def find_jobs(
    app: web.Application, query: AdminJobsQuery, limit: WorkflowLimit | None
) -> tuple[list[JobRecord], str | None]:
    """The page of jobs `query` asks for, of the workflows `limit` reaches (None: all), and the
    next page's cursor (None: the last). 403 for a workflow filter outside `limit`; 422 for a
    cursor the store did not hand out."""
    if query.workflow_id is not None:
        require_within(limit, query.workflow_id, "/query/workflow_id")
    try:
        return await app[STORE].list_jobs(
            query.filters(limit), limit=query.limit, cursor=query.cursor
        )
    except ValueError as exc:
        raise ValidationFailed(
            f"/query/cursor: {exc}", details=[{"pointer": "/query/cursor", "message": str(exc)}]
        ) from None


async def list_jobs(request: web.Request) -> web.Response:
    query = parse_query(request, AdminJobsQuery)
    jobs, next_cursor = await find_jobs(request.app, query, limit_of(request))
    return json_response({"jobs": [job.shown() for job in jobs], "next_cursor": next_cursor})
