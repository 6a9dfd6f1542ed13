"""The route table: every endpoint with its scope and models. The router, the auth guard and the
OpenAPI spec are all built from this one table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from pydantic import BaseModel

from bridge.api import admin, admin_jobs, callbacks, events, execute, health, processors, status
from bridge.api.access import refuse_limited
from bridge.api.models import (
    LAST_EVENT_ID,
    WEBHOOK_ID,
    Accepted,
    AdminJobPage,
    AdminJobsQuery,
    AdminStatus,
    CallbackAck,
    DeadLettersPage,
    DeadLettersQuery,
    Deleted,
    DrainAnswer,
    EventsQuery,
    ExecuteRequest,
    ExecuteResponse,
    Health,
    HybridRequest,
    HybridResponse,
    IncomingCallback,
    JobPage,
    JobStatusResponse,
    ProcessorList,
    Ready,
    SubscriptionList,
    WorkflowJobsQuery,
)
from bridge.auth import authorize
from bridge.jobs import JobRecord
from bridge.keys import AUTH, PRINCIPAL
from bridge.settings import Scope
from bridge.subscriptions import Subscription, SubscriptionRequest


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    scope: Scope | None = None  # None: public
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    media_type: str = "application/json"
    also: tuple[int, ...] = ()  # error statuses besides those every route of its kind may give
    also_ok: tuple[int, ...] = ()  # statuses answered with `response` besides 200
    accepted: type[BaseModel] | None = None  # the 202 answer, for routes that queue work
    signed: bool = False  # a Standard Webhooks signature may stand in for the credential
    created: bool = False  # answers 201 with `response`
    cross_workflow: bool = False  # acts across workflows: refused to workflow-limited tokens
    headers: tuple[dict[str, Any], ...] = ()  # request headers it reads (OpenAPI parameters)
    description: str = ""  # more than the summary; the spec adds what credential it needs


ROUTES: tuple[Route, ...] = (
    Route(
        "POST",
        "/api/v1/workflow/execute",
        execute.execute,
        "Run a processor on n8n items",
        "jobs",
        "execute",
        body=ExecuteRequest,
        response=ExecuteResponse,
        also=(409, 429, 502, 503),
        accepted=Accepted,
        description="mode sync: 200 with the output items, each paired with its input. mode "
        "async: 202 with the job's id; the job runs in a queue and its outcome goes to "
        "callback_url.",
    ),
    Route(
        "POST",
        "/api/v1/hybrid-processing",
        execute.hybrid,
        "Run a processor on plain records (`data` instead of `items`)",
        "jobs",
        "execute",
        body=HybridRequest,
        response=HybridResponse,
        also=(409, 429, 502, 503),
        accepted=Accepted,
        description="The execute request with `data` (records, each one item's json) instead of "
        "`items`; the answer has `data` instead of `items`.",
    ),
    Route(
        "GET",
        "/api/v1/workflow/status/{job_id}",
        status.job_status,
        "One job's status and outcome",
        "jobs",
        "status",
        response=JobStatusResponse,
        also=(404,),
        description="The job record; a finished background job's output items too. A token "
        "limited to workflows gets 404 for another workflow's job.",
    ),
    Route(
        "DELETE",
        "/api/v1/workflow/{job_id}",
        status.cancel_job,
        "Cancel a queued or running background job",
        "jobs",
        "execute",
        response=JobRecord,
        also=(404, 409),
        description="Answers the record, cancelled; 409 once the job has finished; 202 while "
        "the instance running it (Redis backend) has not stopped it yet.",
        also_ok=(202,),  # the instance running it (Redis backend) has not stopped it yet
    ),
    Route(
        "GET",
        "/api/v1/status/{workflow_id}",
        status.workflow_jobs,
        "The jobs of a workflow, newest first",
        "jobs",
        "status",
        query=WorkflowJobsQuery,
        response=JobPage,
        description="Paginated: pass next_cursor back as cursor; null is the last page.",
    ),
    Route(
        "POST",
        "/api/v1/callbacks/{workflow_id}",
        callbacks.receive,
        "n8n reports the outcome of a workflow the bridge started",
        "jobs",
        "execute",
        body=IncomingCallback,
        response=CallbackAck,
        signed=True,
        headers=(WEBHOOK_ID,),
        description="Recorded with the job and published as an event; a repeated webhook-id "
        "changes nothing.",
    ),
    Route(
        "GET",
        "/api/v1/events",
        events.stream,
        "Server-Sent Events; Last-Event-ID resumes",
        "events",
        "status",
        query=EventsQuery,
        also=(429,),
        media_type="text/event-stream",
        headers=(LAST_EVENT_ID,),
        description="Each event as it happens, after those since Last-Event-ID. A stream that "
        "falls behind is closed (resume with Last-Event-ID); past BRIDGE_SSE_MAX_STREAMS open "
        "streams, 429.",
    ),
    Route(
        "POST",
        "/api/v1/subscriptions",
        events.subscribe,
        "Subscribe a URL to events (webhooks, signed like callbacks)",
        "events",
        "admin",
        body=SubscriptionRequest,
        response=Subscription,
        created=True,
        description="Every event the subscription wants is POSTed to its URL, signed (Standard "
        "Webhooks), retried, dead-lettered like a callback.",
    ),
    Route(
        "GET",
        "/api/v1/subscriptions",
        events.list_subscriptions,
        "Every webhook subscription",
        "events",
        "admin",
        response=SubscriptionList,
        description="Their URLs shown redacted.",
    ),
    Route(
        "GET",
        "/api/v1/subscriptions/{subscription_id}",
        events.get_subscription,
        "One webhook subscription",
        "events",
        "admin",
        response=Subscription,
        also=(404,),
        description="Its URL shown redacted.",
    ),
    Route(
        "DELETE",
        "/api/v1/subscriptions/{subscription_id}",
        events.unsubscribe,
        "Remove a webhook subscription",
        "events",
        "admin",
        response=Deleted,
        also=(404,),
        description="No more events are sent to its URL.",
    ),
    Route(
        "GET",
        "/admin/status",
        admin.status,
        "This instance's state",
        "admin",
        "admin",
        response=AdminStatus,
        cross_workflow=True,
        description="Colour, version, draining, backend, queues, deliveries, dead letters, "
        "circuit breakers.",
    ),
    Route(
        "GET",
        "/admin/dead-letters",
        admin.dead_letters,
        "Dead letters, newest first",
        "admin",
        "admin",
        query=DeadLettersQuery,
        response=DeadLettersPage,
        cross_workflow=True,
        description="Callbacks, event webhooks and jobs that gave up, their URLs redacted; "
        "newest first by created_at (made, or last replayed), then id. Paginated: pass "
        "next_cursor back as cursor; null is the last page.",
    ),
    Route(
        "POST",
        "/admin/dead-letters/{letter_id}/replay",
        admin.replay,
        "Send a dead webhook again, or run a dead job again",
        "admin",
        "admin",
        also=(404, 409, 429, 503),
        cross_workflow=True,
        description="A webhook is sent again (the same webhook-id, its attempts from zero); a "
        "dead job runs again as a new job, as POST /admin/jobs/{job_id}/retry runs it.",
    ),
    Route(
        "GET",
        "/admin/jobs",
        admin_jobs.list_jobs,
        "Jobs of every workflow, newest first, filtered",
        "admin",
        "admin",
        query=AdminJobsQuery,
        response=AdminJobPage,
        description="Filters: status (one or more), processing_type, queue, workflow_id, "
        "execution_id, created since/until. Paginated: pass next_cursor back as cursor; null "
        "is the last page, and a shorter page than limit may still have a next one. A token "
        "limited to workflows sees only theirs, and gets 403 naming another in workflow_id.",
    ),
    Route(
        "POST",
        "/admin/jobs/{job_id}/retry",
        admin.retry_job,
        "Run a failed or cancelled background job again, as a new job",
        "admin",
        "admin",
        accepted=Accepted,
        also=(404, 409, 429, 503),
        cross_workflow=True,
        description="The new job answers 202 as an async execute does.",
    ),
    Route(
        "POST",
        "/admin/drain",
        admin.drain,
        "Out of rotation: /ready turns 503, no more jobs from shared queues (blue-green)",
        "admin",
        "admin",
        response=DrainAnswer,
        cross_workflow=True,
        description="Running jobs finish; sync requests are still served.",
    ),
    Route(
        "DELETE",
        "/admin/drain",
        admin.undrain,
        "Serve again after a drain; /ready turns 200 (the blue-green rollback)",
        "admin",
        "admin",
        also=(409,),
        cross_workflow=True,
        description="409 once the bridge is shutting down.",
    ),
    Route(
        "GET",
        "/api/v1/processors",
        processors.list_processors,
        "Processors with their descriptions and parameter schemas",
        "processors",
        "status",
        response=ProcessorList,
        description="What processing_type takes, and the JSON Schema of each one's parameters.",
    ),
    Route(
        "GET",
        "/health",
        health.health,
        "Liveness",
        "operations",
        response=Health,
        description="200 while the process serves: version, colour, uptime.",
    ),
    Route(
        "GET",
        "/ready",
        health.ready,
        "Readiness: 503 while draining or a backend is down",
        "operations",
        response=Ready,
        also_ok=(503,),
        description="For a load balancer: each check is ok, or says why not.",
    ),
    Route(
        "GET",
        "/metrics",
        health.metrics,
        "Prometheus metrics",
        "operations",
        media_type="text/plain",
        description="The Prometheus text format; docs/metrics.md lists every metric.",
    ),
    Route(
        "GET",
        "/api/v1/openapi.json",
        health.openapi,
        "This OpenAPI 3.1 document",
        "operations",
        description="Generated from the route table; processing_type lists this bridge's "
        "processors.",
    ),
)


def guarded(route: Route) -> Handler:
    """The route's handler behind authentication and its scope check."""
    if route.scope is None or route.signed:  # a signed route's handler checks for itself
        return route.handler
    scope = route.scope
    inner = route.handler

    cross_workflow = route.cross_workflow

    async def handler(request: web.Request) -> web.StreamResponse:
        principal = request.app[AUTH].authenticate(request.headers)
        authorize(principal, scope)
        if cross_workflow:
            refuse_limited(principal, route.path)
        request[PRINCIPAL] = principal
        return await inner(request)

    return handler


# Path parameters with a shape: the router matches only that shape (anything else is a 404), and
# the spec says it. Job and subscription ids are new_id()s; without the pattern,
# DELETE /api/v1/workflow/{job_id} would also match /api/v1/workflow/execute. Dead letters are
# named after their job or event. Workflow ids are the client's: 1 to 256 characters, no control
# character (as in a request body).
_NEW_ID = "[0-9a-f]{32}"
PATH_PATTERNS = {
    "job_id": _NEW_ID,
    "subscription_id": _NEW_ID,
    "letter_id": f"(?:cb|job)_{_NEW_ID}|evt_[0-9]{{1,19}}_{_NEW_ID}",
    "workflow_id": "[^/\\x00-\\x1f\\x7f-\\x9f]{1,256}",
}


def methods(route: Route) -> tuple[str, ...]:
    """The methods a route answers: a GET also answers HEAD (monitors and load balancers probe
    with it), by the same handler behind the same guard; aiohttp sends no body."""
    return (route.method, "HEAD") if route.method == "GET" else (route.method,)


def add_routes(app: web.Application) -> None:
    for route in ROUTES:
        path = route.path
        for name, pattern in PATH_PATTERNS.items():
            path = path.replace(f"{{{name}}}", f"{{{name}:{pattern}}}")
        handler = guarded(route)
        for method in methods(route):
            app.router.add_route(method, path, handler)
