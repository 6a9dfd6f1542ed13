"""POST /api/v1/workflow/execute and POST /api/v1/hybrid-processing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from bridge.api.access import require_workflow, visible
from bridge.api.body import M, decode_json, json_response, read_json, validate
from bridge.api.models import ExecuteRequest, HybridRequest
from bridge.api.timing import Timings
from bridge.errors import Conflict, Unavailable, ValidationFailed
from bridge.execution import Submission, SyncResult
from bridge.items import Item, ItemError, encode_outputs, from_n8n, to_n8n
from bridge.jobs import Callback, JobRecord
from bridge.keys import (
    BACKEND,
    EXECUTION,
    LIFECYCLE,
    OUTBOUND,
    SERVICES,
    SETTINGS,
    TRACE_ID,
    WORKERS,
)
from bridge.outbound import refuse_url

Shape = Callable[[Item, int], Any]


async def execute(request: web.Request) -> web.Response:
    timings = Timings()
    body = checked(request, ExecuteRequest, await read_json(request), "items")
    timings.mark("decode")
    submission = items_submission(request, body)
    timings.mark("convert")
    if body.mode == "async":
        return await _accept(request, body, submission, "items")
    return await _answer(request, submission, "items", to_n8n, timings)


async def hybrid(request: web.Request) -> web.Response:
    timings = Timings()
    body = checked(request, HybridRequest, await read_json(request), "data")
    timings.mark("decode")
    submission = _submission(request, body, lambda: _records(body.data))
    timings.mark("convert")
    if body.mode == "async":
        return await _accept(request, body, submission, "data")
    return await _answer(request, submission, "data", lambda item, paired: item.json, timings)


def checked(request: web.Request, model: type[M], data: Any, field: str) -> M:
    """A parsed body as `model`, its items and binaries counted before any is validated:
    validating builds a record per item and per binary, which for a body of empty ones costs
    many times the body."""
    items = data.get(field) if isinstance(data, dict) else None
    if isinstance(items, list):
        binaries = sum(
            len(blobs)
            for item in items
            if type(item) is dict and type(blobs := item.get("binary")) is dict
        )
        request.app[EXECUTION].check_item_count(len(items), binaries)
    return validate(model, data)


async def run_items(request: web.Request, data: Any) -> tuple[SyncResult, bytes, list[ItemError]]:
    """A sync execute request's parsed body, checked and run as POST /api/v1/workflow/execute
    checks and runs it (the same limits on items, size and time), for the console's try-it
    form: the run, its output items as n8n JSON, and its per-item errors."""
    body = checked(request, ExecuteRequest, data, "items")
    return await _run(request, items_submission(request, body), to_n8n, Timings())


def items_submission(request: web.Request, body: ExecuteRequest) -> Submission:
    limit = request.app[SETTINGS].max_binary_bytes
    return _submission(request, body, lambda: from_n8n(body.items, limit))


def _records(data: list[dict[str, Any]]) -> list[Item]:
    return [Item(json=record, index=index) for index, record in enumerate(data)]


def decode_job_request(
    job: JobRecord, raw: bytes, max_binary_bytes: int
) -> tuple[list[Item], dict[str, Any]]:
    """A stored background job's request, decoded again for its run: items and parameters."""
    if job.api == "data":
        data = decode_json(HybridRequest, raw)
        return _records(data.data), data.parameters
    body = decode_json(ExecuteRequest, raw)
    return from_n8n(body.items, max_binary_bytes), body.parameters


def _submission(
    request: web.Request,
    body: ExecuteRequest | HybridRequest,
    decode: Callable[[], list[Item]],
) -> Submission:
    """Every check, cheapest first, before anything runs or is recorded."""
    require_workflow(request, body.workflow_id, "/workflow_id")
    if body.mode == "sync":
        given = {"callback_url": body.callback_url is not None}  # null: no URL
        given["callback_method"] = "callback_method" in body.model_fields_set
        for field in ("callback_url", "callback_method"):
            if given[field]:
                raise ValidationFailed(
                    f"{field} is for mode 'async'; a sync request gets its result in the answer",
                    details=[{"pointer": f"/{field}", "message": "only with mode 'async'"}],
                )
    if body.callback_url is not None:
        refuse_url(request.app[OUTBOUND], str(body.callback_url), "/callback_url")
    execution = request.app[EXECUTION]
    spec = execution.spec(body.processing_type)
    # The app's services let parameters be judged as they will be used (n8n_trigger's webhook).
    params = spec.parse_params(body.parameters, context=request.app[SERVICES])
    return Submission(
        spec=spec,
        items=decode(),
        params=params,
        workflow_id=body.workflow_id,
        execution_id=body.execution_id,
        node=body.node,
        priority=body.priority,
        timeout_s=body.timeout_s,
        idempotency_key=body.idempotency_key,
    )


async def _accept(
    request: web.Request,
    body: ExecuteRequest | HybridRequest,
    submission: Submission,
    api: str,
) -> web.Response:
    """202: the job is on disk and in its queue; the same idempotency key gives the same job.
    A draining bridge on shared (Redis) queues still accepts: another instance runs the job, so
    a request that reached the old colour in the moment of a switch does not fail. On its own
    queues it refuses: the job would wait for an instance that is going away."""
    if request.app[LIFECYCLE].draining and not request.app[BACKEND].shared:
        raise Unavailable(
            "this bridge is draining and takes no new background jobs",
            description="send it to another instance; the load balancer does so by itself",
            headers={"Retry-After": "5"},
        )
    callback = (
        Callback(url=str(body.callback_url), method=body.callback_method)
        if body.callback_url is not None
        else None
    )
    accepted = await request.app[WORKERS].submit(
        submission, await request.read(), api, callback, request[TRACE_ID]
    )
    if not visible(request, accepted.job.workflow_id):
        # The key is another workflow's job: its id is not this token's to learn.
        raise Conflict(
            "idempotency_key: an earlier job of another workflow has this key",
            details=[{"pointer": "/idempotency_key", "message": "taken"}],
        )
    return accepted_response(accepted.job, accepted.created)


def accepted_response(job: JobRecord, created: bool) -> web.Response:
    """202 for a background job: where its status is, in the body and in Location."""
    status_url = f"/api/v1/workflow/status/{job.job_id}"
    return json_response(
        {
            "job_id": job.job_id,
            "status": job.status,
            "status_url": status_url,
            "queue": job.queue,
            "created": created,
        },
        status=202,
        headers={"Location": status_url},
    )


async def _answer(
    request: web.Request,
    submission: Submission,
    field: str,
    shape: Shape,
    timings: Timings,
) -> web.Response:
    result, encoded, errors = await _run(request, submission, shape, timings)
    response = json_response(
        {
            "job_id": result.job.job_id,
            "status": result.job.status,
            field: orjson.Fragment(encoded),
            "errors": [error.to_dict() for error in errors],
            "duration_ms": result.job.duration_ms,
            "trace_id": request[TRACE_ID],
        }
    )
    timings.mark("encode")
    response.headers["Server-Timing"] = timings.header()
    return response


async def _run(
    request: web.Request, submission: Submission, shape: Shape, timings: Timings
) -> tuple[SyncResult, bytes, list[ItemError]]:
    result = await request.app[EXECUTION].run_sync(submission, request[TRACE_ID])
    timings.mark("run")
    encoded, errors = encode_outputs(result.outputs, result.errors, shape)
    return result, encoded, errors
