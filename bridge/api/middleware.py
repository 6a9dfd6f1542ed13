"""The two middlewares: `observe` (trace id, metrics, access log) and `errors` (every failure
becomes the shared error body; no stack trace or HTML page ever reaches a client)."""

from __future__ import annotations

import logging
import re
import time

from aiohttp import web
from aiohttp.typedefs import Handler

from bridge.api.body import json_response
from bridge.errors import (
    BridgeError,
    Internal,
    NotFound,
    PayloadTooLarge,
    Unavailable,
    ValidationFailed,
)
from bridge.ids import new_id
from bridge.keys import METRICS, SETTINGS, TRACE_ID
from bridge.logs import job_id_var, trace_id_var, workflow_id_var

access_log = logging.getLogger("bridge.access")
log = logging.getLogger(__name__)

TRACE_HEADER = "X-Trace-ID"
_VALID_TRACE = re.compile(r"[A-Za-z0-9._:-]{8,128}").fullmatch
QUIET_PATHS = frozenset({"/health", "/ready", "/metrics"})


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    offered = request.headers.get(TRACE_HEADER)
    trace_id = offered if offered and _VALID_TRACE(offered) else new_id()
    request[TRACE_ID] = trace_id
    trace_id_var.set(trace_id)
    job_id_var.set(None)
    workflow_id_var.set(None)
    metrics = request.app[METRICS]
    metrics.in_flight.inc()
    started = time.perf_counter()
    try:
        response = await handler(request)
    finally:
        metrics.in_flight.dec()
    elapsed = time.perf_counter() - started
    response.headers[TRACE_HEADER] = trace_id
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    metrics.observe_request(route, request.method, response.status, elapsed)
    if request.app[SETTINGS].access_log:
        access_log.log(
            logging.DEBUG if request.path in QUIET_PATHS else logging.INFO,
            "%s %s %d",
            request.method,
            request.path,
            response.status,
            extra={"status": response.status, "duration_ms": round(elapsed * 1000, 3)},
        )
    return response


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except BridgeError as exc:
        return error_response(request, exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(request, _from_http(request, exc))
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(
            request,
            Internal(
                "internal error",
                description=f"the bridge's logs tell more under trace id {request[TRACE_ID]}",
            ),
        )


def _from_http(request: web.Request, exc: web.HTTPException) -> BridgeError:
    """aiohttp's own answers (no route, wrong method, body too large) in our shape."""
    if exc.status == 404:
        return NotFound(
            f"no such endpoint: {request.method} {request.path}",
            description="see /api/v1/openapi.json; job ids are 32 lowercase hex digits",
        )
    if exc.status == 405:
        allowed = exc.headers.get("Allow", "")
        return ValidationFailed(
            f"method {request.method} is not allowed on {request.path} (allowed: {allowed})",
            http_code=405,
            headers={"Allow": allowed},
        )
    if exc.status == 413:
        return PayloadTooLarge(exc.text or "request body too large")
    if exc.status >= 500:
        return Unavailable(exc.reason, http_code=exc.status)
    return ValidationFailed(exc.reason, http_code=exc.status)


def error_response(request: web.Request, exc: BridgeError) -> web.Response:
    level = logging.ERROR if exc.http_code >= 500 and exc.code == "internal" else logging.INFO
    log.log(
        level,
        "%s %s → %d %s: %s",
        request.method,
        request.path,
        exc.http_code,
        exc.code,
        exc.message,
    )
    return json_response(exc.to_body(request[TRACE_ID]), status=exc.http_code, headers=exc.headers)
