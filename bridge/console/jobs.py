"""The console's jobs pages: every job, filtered, newest first, a page at a time (what
GET /admin/jobs answers: `find_jobs`); one job's page; its cancel (as DELETE
/api/v1/workflow/{job_id}) and retry (as POST /admin/jobs/{job_id}/retry).

A workflow-limited session sees only its workflows' jobs, and another workflow's job page is
404 as on the API; retrying acts across workflows and is refused to it (403, `routes.PAGES`)."""

from __future__ import annotations

import datetime
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from markupsafe import Markup
from pydantic import ValidationError

from bridge.api import status
from bridge.api.access import limit_of
from bridge.api.admin_jobs import find_jobs
from bridge.api.body import validation_error
from bridge.api.models import AdminJobsQuery
from bridge.console.preview import as_json, preview
from bridge.console.render import PARTIAL_HEADER, SESSION, page, redirect
from bridge.errors import Forbidden, ValidationFailed
from bridge.events import Event
from bridge.jobs import JobRecord, JobStatus
from bridge.keys import EVENT_LOG, REGISTRY, STORE, TRACE_ID, WORKERS

PAGE_SIZE = 50
TIMELINE = 200  # a job's newest events on its page
FILTERS = ("status", "processing_type", "queue", "workflow_id", "execution_id", "since", "until")
TIMES = ("since", "until")
MAX_TIME_CHARS = 40  # longer than any date and time an <input type="datetime-local"> sends
EVENT_DATA_CHARS = 300
JOBS = "/admin/ui/jobs"


def _form(request: web.Request) -> dict[str, str]:
    """The filters as the form sent them, and the cursor: the fields given (empty: any). The
    status select may send several: one or more, comma-separated, as GET /admin/jobs takes."""
    form = {name: value for name in (*FILTERS, "cursor") if (value := request.query.get(name))}
    if statuses := [value for value in request.query.getall("status", []) if value]:
        form["status"] = ",".join(statuses)
    return form


def _utc(value: str) -> float | None:
    """A datetime-local value (no zone: UTC) as Unix time; None if it is not one."""
    try:
        if len(value) > MAX_TIME_CHARS:
            return None
        moment = datetime.datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


TIME_WANTED = "expected a date and time such as 2025-05-01T13:30 (UTC)"


def _query(form: dict[str, str]) -> AdminJobsQuery:
    """The query the form asks for; ValidationFailed naming every field that is wrong."""
    values: dict[str, Any] = {name: value for name, value in form.items() if name not in TIMES}
    problems = []
    for name in TIMES:
        if name in form:
            values[name] = _utc(form[name])
            if values[name] is None:
                del values[name]
                problems.append({"pointer": f"/query/{name}", "message": TIME_WANTED})
    try:
        query = AdminJobsQuery.model_validate({**values, "limit": PAGE_SIZE})
    except ValidationError as exc:
        failed = validation_error(exc, within=("query",))
        problems += failed.details or []
    if problems:
        first = problems[0]
        raise ValidationFailed(f"{first['pointer']}: {first['message']}", details=problems)
    return query


async def job_list(request: web.Request) -> web.StreamResponse:
    form = _form(request)
    filters = {name: value for name, value in form.items() if name != "cursor"}
    jobs: list[JobRecord] = []
    next_cursor: str | None = None
    problem: ValidationFailed | Forbidden | None = None
    try:
        jobs, next_cursor = await find_jobs(request.app, _query(form), limit_of(request))
    except (ValidationFailed, Forbidden) as exc:  # shown beside the form, to be put right
        problem = exc
    # What the selects offer: the processors and queues there are, and the one asked for.
    processors = sorted({*request.app[REGISTRY].names(), form.get("processing_type", "")} - {""})
    queues = sorted({*request.app[WORKERS].queues, form.get("queue", "")} - {""})
    return page(
        request,
        "jobs.html",
        status=problem.http_code if problem else 200,
        title="Jobs",
        form=form,
        problem=problem,
        jobs=jobs,
        statuses=[status.value for status in JobStatus],
        processors=processors,
        queues=queues,
        # A page further on must not shift under its reader: only the first is live.
        live="cursor" not in form and problem is None,
        older=f"{JOBS}?{urlencode({**filters, 'cursor': next_cursor})}" if next_cursor else None,
        first=f"{JOBS}?{urlencode(filters)}" if "cursor" in form else None,
    )


def _event_row(event: Event) -> dict[str, Any]:
    return {
        "at": event.at,
        "type": event.type,
        "data": as_json(event.data, EVENT_DATA_CHARS, indent=False) if event.data else None,
    }


async def job_page(request: web.Request) -> web.StreamResponse:
    job = await status.visible_job(request)
    store = request.app[STORE]
    finished = job.status.finished
    events = await request.app[EVENT_LOG].of_job(job.job_id, TIMELINE)
    limited = limit_of(request) is not None
    partial = request.headers.get(PARTIAL_HEADER) == "1"
    shown = job.shown()
    return page(
        request,
        "job.html",
        title=f"Job {job.job_id}",
        job=job,
        callback_url=shown["callback"]["url"] if job.callback else None,
        wait_s=job.started_at - job.created_at if job.started_at else None,
        # Outside the live part (it never changes): not read again by each refresh.
        inputs=None
        if partial
        else preview(job, await store.get_data(job.job_id, "request"), "request"),
        outputs=preview(job, await store.get_data(job.job_id, "result"), "result"),
        reported=as_json(job.reported) if job.reported is not None else None,
        events=[_event_row(event) for event in events],
        timeline_bound=TIMELINE,
        # Live while something is still to happen: its run, or its callback's delivery.
        live=not finished or (job.callback is not None and job.callback.state == "pending"),
        can_cancel=job.mode == "async" and not finished,
        can_retry=job.mode == "async"
        and job.status in (JobStatus.FAILED, JobStatus.CANCELLED)
        and not limited,
    )


async def cancel(request: web.Request) -> web.StreamResponse:
    job = await status.cancel(request)
    request[SESSION].flashes.append(
        "Cancelled."
        if job.status is JobStatus.CANCELLED
        else f"Cancel requested: the job is still {job.status.value} until the instance "
        "running it stops it."
    )
    return redirect(f"{JOBS}/{job.job_id}")


async def retry(request: web.Request) -> web.StreamResponse:
    old = request.match_info["job_id"]
    job = await request.app[WORKERS].retry(old, request[TRACE_ID])
    link = Markup('<a href="{0}/{1}">{1}</a>')
    request[SESSION].flashes.append(
        Markup("Retried as job {0} (a copy of job {1}).").format(
            link.format(JOBS, job.job_id), link.format(JOBS, old)
        )
    )
    return redirect(f"{JOBS}/{job.job_id}")
