"""POST /api/v1/workflow/execute and POST /api/v1/hybrid-processing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from bridge.api.body import json_response, read_model
from bridge.api.models import ExecuteRequest, HybridRequest
from bridge.api.timing import Timings
from bridge.errors import NotImplementedYet
from bridge.execution import Submission, SyncResult
from bridge.items import Item, ItemError, dumps, from_n8n, split_serialisable, to_n8n
from bridge.keys import EXECUTION, SETTINGS, TRACE_ID

Shape = Callable[[Item, int], Any]


async def execute(request: web.Request) -> web.Response:
    timings = Timings()
    body = await read_model(request, ExecuteRequest)
    timings.mark("decode")
    limit = request.app[SETTINGS].max_binary_bytes
    submission = _submission(request, body, len(body.items), lambda: from_n8n(body.items, limit))
    timings.mark("convert")
    return await _answer(request, body, submission, "items", to_n8n, timings)


async def hybrid(request: web.Request) -> web.Response:
    timings = Timings()
    body = await read_model(request, HybridRequest)
    timings.mark("decode")
    submission = _submission(
        request,
        body,
        len(body.data),
        lambda: [Item(json=record, index=index) for index, record in enumerate(body.data)],
    )
    timings.mark("convert")
    return await _answer(request, body, submission, "data", lambda item, paired: item.json, timings)


def _submission(
    request: web.Request,
    body: ExecuteRequest | HybridRequest,
    count: int,
    decode: Callable[[], list[Item]],
) -> Submission:
    """Every check, cheapest first, before anything runs or is recorded."""
    execution = request.app[EXECUTION]
    execution.check_item_count(count)
    spec = execution.spec(body.processing_type)
    params = spec.parse_params(body.parameters)
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


async def _answer(
    request: web.Request,
    body: ExecuteRequest | HybridRequest,
    submission: Submission,
    field: str,
    shape: Shape,
    timings: Timings,
) -> web.Response:
    if body.mode == "async":
        raise NotImplementedYet(
            "mode 'async' is not available in this version of the bridge; use mode 'sync'"
        )
    result = await request.app[EXECUTION].run_sync(submission, request[TRACE_ID])
    timings.mark("run")
    encoded, errors = _encode_outputs(result, shape)
    response = json_response(
        {
            "job_id": result.job.job_id,
            "status": result.job.status,
            field: encoded,
            "errors": [error.to_dict() for error in errors],
            "duration_ms": result.job.duration_ms,
        }
    )
    timings.mark("encode")
    response.headers["Server-Timing"] = timings.header()
    return response


def _encode_outputs(result: SyncResult, shape: Shape) -> tuple[orjson.Fragment, list[ItemError]]:
    """The output items as JSON, encoded once; an output that cannot be encoded becomes its
    input's error instead of failing the whole answer."""
    pairs = [(paired, shape(item, paired)) for paired, item in result.outputs]
    try:
        return orjson.Fragment(dumps([wire for _, wire in pairs])), result.errors
    except TypeError:
        good, bad = split_serialisable(pairs)
        return orjson.Fragment(dumps(good)), sorted([*result.errors, *bad], key=lambda e: e.index)
