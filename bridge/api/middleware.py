"""The two middlewares: `observe` (trace id, metrics, access log) and `errors` (every failure
becomes the shared error body; no stack trace, HTML page or exception text ever reaches a client,
and a logged traceback never shows the request's header values); and `trace_header`, which
writes the trace id into every answer's head."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping

from aiohttp import web
from aiohttp.http_exceptions import (
    BadHttpMethod,
    BadStatusLine,
    ContentEncodingError,
    ContentLengthError,
    HttpProcessingError,
    InvalidHeader,
    InvalidURLError,
    LineTooLong,
    TransferEncodingError,
)
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
from bridge.logs import REDACT, job_id_var, trace_id_var, workflow_id_var

access_log = logging.getLogger("bridge.access")
log = logging.getLogger(__name__)

TRACE_HEADER = "X-Trace-ID"
_VALID_TRACE = re.compile(r"[A-Za-z0-9._:-]{8,128}").fullmatch
QUIET_PATHS = frozenset({"/health", "/ready", "/metrics"})
# Headers whose values carry no credential: everything else may (Authorization, X-API-Key,
# Cookie, a signature, a header a client made up).
_PLAIN_HEADERS = frozenset(
    {
        "accept",
        "accept-encoding",
        "connection",
        "content-length",
        "content-type",
        "host",
        "transfer-encoding",
        "user-agent",
        TRACE_HEADER.lower(),
    }
)
_MIN_SECRET_CHARS = 8  # shorter values (a "1", a "gzip") would mask half a traceback
_PARTS = re.compile(r"[\s,;=]+")


def header_secrets(headers: Mapping[str, str]) -> tuple[str, ...]:
    """What a log line about this request must not show: each header value that may carry a
    credential, whole and in parts (the token of "Bearer <token>", a cookie's value), longest
    first."""
    found: set[str] = set()
    for name, value in headers.items():
        if name.lower() in _PLAIN_HEADERS:
            continue
        found.update(p for p in (value, *_PARTS.split(value)) if len(p) >= _MIN_SECRET_CHARS)
    return tuple(sorted(found, key=len, reverse=True))


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


async def trace_header(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: every answer carries its X-Trace-ID, a stream too, whose head is
    sent before its handler returns."""
    if TRACE_ID in request:
        response.headers[TRACE_HEADER] = request[TRACE_ID]


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
    except (HttpProcessingError, web.RequestPayloadError) as exc:
        # The body broke while read (a bad chunk, a gzip stream that is not): aiohttp wraps
        # the parser's error, whose text may quote the body; the class says enough.
        return error_response(request, malformed(exc.__cause__ or exc))
    except Exception as exc:
        if isinstance(exc, ConnectionError) and _client_gone(request):
            # The client hung up while its request was read: nothing broken, no one to answer.
            return error_response(
                request, ValidationFailed("the client closed the connection", http_code=400)
            )
        log.exception(
            "unhandled error in %s %s",
            request.method,
            request.path,
            extra={REDACT: header_secrets(request.headers)},
        )
        return error_response(
            request,
            Internal(
                "internal error",
                description=f"the bridge's logs tell more under trace id {request[TRACE_ID]}",
            ),
        )


# What the answer and the log say of a parser error: a fixed phrase per class, never the parser's
# message, which quotes the bytes it choked on (a header value, a token).
_REASONS: tuple[tuple[type[HttpProcessingError], str], ...] = (
    (LineTooLong, "the request line or a header is too long"),
    (InvalidHeader, "a header is malformed"),
    (BadHttpMethod, "the method is malformed"),
    (BadStatusLine, "the request line is malformed"),
    (InvalidURLError, "the URL is malformed"),
    (TransferEncodingError, "the chunked encoding is malformed"),
    (ContentLengthError, "the body does not match its Content-Length"),
    (ContentEncodingError, "the body's Content-Encoding is malformed"),
)


def malformed(exc: BaseException) -> ValidationFailed:
    reason = next(
        (text for cls, text in _REASONS if isinstance(exc, cls)), "it is not valid HTTP/1.1"
    )
    return ValidationFailed(
        f"malformed request: {reason}",
        http_code=400,
        description="the connection is closed; see RFC 9112 for the message syntax",
    )


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


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
    response = json_response(
        exc.to_body(request[TRACE_ID]), status=exc.http_code, headers=exc.headers
    )
    response.set_status(exc.http_code, reason_phrase(exc.message))
    return response


_NOT_IN_REASON = re.compile(r"[^\x20-\x7e]+")
_REASON_CHARS = 200


def reason_phrase(message: str) -> str:
    """The message as the status line's reason phrase — n8n's credential *Test* shows only that
    of a failed request — in the characters a status line may hold, on one short line."""
    shown = _NOT_IN_REASON.sub("?", message).strip()
    if len(shown) > _REASON_CHARS:
        shown = shown[: _REASON_CHARS - 3] + "..."
    return shown or "error"
