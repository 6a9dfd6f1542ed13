"""The OpenAPI 3.1 document, generated from the route table and its pydantic models."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from bridge import __version__
from bridge.api.models import ErrorBody, ExecuteRequest, HybridRequest
from bridge.api.routes import PATH_PATTERNS, ROUTES, Route, methods

REF = "#/components/schemas/{model}"
_PATH_PARAM = re.compile(r"{(\w+)}")

ERROR_TEXT = {
    202: "Cancel recorded; the instance running the job has not stopped it yet (the job as it "
    "is, `queued` or `running`; Location: its status)",
    400: "Malformed request: not valid HTTP/1.1 (answered before any route), or a body that is "
    "not JSON",
    401: "Authentication missing or invalid (see WWW-Authenticate)",
    403: "The credential lacks the scope, or is limited to other workflows",
    404: "Not found",
    408: "The body did not arrive within BRIDGE_BODY_TIMEOUT_S of the request's head",
    413: "Body larger than BRIDGE_MAX_BODY_BYTES, or too many items",
    415: "Content-Type is not application/json",
    422: "The request breaks the schema (a JSON pointer per problem)",
    500: "Internal or processor error",
    409: "Conflicts with the job's state (e.g. it has finished)",
    429: "Too many at once (a full queue; as many event streams as BRIDGE_SSE_MAX_STREAMS): "
    "try again after Retry-After seconds",
    502: "A service the processor needs failed or is not configured (e.g. SMTP)",
    503: "Unavailable (draining or a backend is down)",
    504: "The processor did not finish in time",
}
# Answers that may say when to try again.
RETRY_AFTER = {
    "Retry-After": {
        "description": "seconds to wait before trying again",
        "schema": {"type": "integer", "minimum": 0},
    }
}
# The document is served by the API it describes: its URLs are relative to where it was read.
SERVERS = [{"url": "/", "description": "the bridge that serves this document"}]
TAGS = [
    {"name": "admin", "description": "Operations on this instance (scope admin)"},
    {"name": "events", "description": "Job events: a Server-Sent Events stream, webhooks"},
    {"name": "jobs", "description": "Run processors on n8n items, now or as background jobs"},
    {"name": "operations", "description": "Health, readiness, metrics, this document"},
    {"name": "processors", "description": "What this bridge can run"},
]
# The methods of a path in the order readers (and linters) expect.
METHOD_ORDER = ("get", "head", "post", "put", "patch", "delete")


def _error_statuses(route: Route) -> list[int]:
    statuses = [400, 500]  # 400: the edge's answer to what is not HTTP/1.1, on every path
    if route.scope:
        statuses += [401, 403]
    if route.body:
        statuses += [408, 413, 415, 422, 504]
    if route.query:
        statuses.append(422)
    if _PATH_PARAM.search(route.path):
        statuses.append(404)
    statuses += route.also
    return sorted(set(statuses))


PATH_TEXT = {
    "job_id": "a job's id: 32 lowercase hex digits",
    "workflow_id": "the workflow's id, as the execute request gave it",
    "subscription_id": "a subscription's id: 32 lowercase hex digits",
    "letter_id": "a dead letter's id: cb_ or job_ and a job id, or "
    "evt_<event id>_<subscription id>",
}


def _path_schema(name: str) -> dict[str, Any]:
    pattern = PATH_PATTERNS.get(name)
    return (
        {"type": "string"} if pattern is None else {"type": "string", "pattern": f"^(?:{pattern})$"}
    )


def build_spec(processors: Sequence[str]) -> dict[str, Any]:
    """The document for a daemon offering `processors`: they are the values `processing_type`
    takes, so a client (and a fuzzer) knows them from the spec alone."""
    models: set[type[BaseModel]] = {ErrorBody}
    for route in ROUTES:
        models.update(m for m in (route.body, route.response, route.accepted) if m is not None)
    keyed: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        (m, "validation" if any(m is r.body for r in ROUTES) else "serialization")
        for m in sorted(models, key=lambda m: m.__name__)
    ]
    refs, schemas = models_json_schema(keyed, ref_template=REF)
    definitions = schemas.get("$defs", {})
    for body in (ExecuteRequest, HybridRequest):
        definitions[body.__name__]["properties"]["processing_type"]["enum"] = list(processors)
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        operation = _operation(route, refs, keyed)
        paths.setdefault(route.path, {})[route.method.lower()] = operation
        if "HEAD" in methods(route):
            paths[route.path]["head"] = _head(operation)
    paths = {
        path: dict(sorted(operations.items(), key=lambda item: METHOD_ORDER.index(item[0])))
        for path, operations in paths.items()
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "n8n-bridge",
            "version": __version__,
            "description": "Run real Python from n8n workflows. Every error answers with the "
            "ErrorBody schema and every response carries X-Trace-ID. Every GET also answers "
            "HEAD.",
            "license": {"name": "MIT", "identifier": "MIT"},
        },
        "servers": SERVERS,
        "tags": TAGS,
        "paths": paths,
        "components": {
            "schemas": definitions,
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
    }


def _schema(model: type[BaseModel], refs: dict[Any, Any], keyed: list[Any]) -> dict[str, Any]:
    for candidate, mode in keyed:
        if candidate is model:
            return dict(refs[(model, mode)])
    raise KeyError(model)


def _head(get: dict[str, Any]) -> dict[str, Any]:
    """The HEAD twin of a GET: the same checks and answers, without their bodies."""
    return {
        **get,
        "summary": f"{get['summary']} (head only)",
        "operationId": f"head_{get['operationId']}",
        "description": f"{get['description']} The GET's status and headers, without its body.",
        "responses": {
            status: {k: v for k, v in answer.items() if k != "content"}
            for status, answer in get["responses"].items()
        },
    }


def _operation(route: Route, refs: dict[Any, Any], keyed: list[Any]) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": route.summary,
        "description": route.description,
        "operationId": route.handler.__name__,
        "tags": [route.tag],
        "parameters": [
            {
                "name": name,
                "in": "path",
                "required": True,
                "description": PATH_TEXT[name],
                "schema": _path_schema(name),
            }
            for name in _PATH_PARAM.findall(route.path)
        ],
    }
    if route.query is not None:
        properties = route.query.model_json_schema()["properties"]
        for name, field in route.query.model_fields.items():
            operation["parameters"].append(
                {
                    "name": name,
                    "in": "query",
                    "required": field.is_required(),
                    "description": field.description,
                    "schema": properties[name],
                }
            )
    operation["parameters"] += route.headers
    if route.scope is not None:
        operation["security"] = [{"bearerAuth": []}, {"apiKey": []}]
        operation["description"] += f" Needs the `{route.scope}` scope (or `admin`)."
        if route.cross_workflow:
            operation["description"] += (
                " Acts across workflows: refused to a token limited to workflows (its "
                "`workflows` claim)."
            )
        if route.signed:
            operation["security"].append({})
            operation["description"] += (
                " Or, instead of a credential, Standard Webhooks headers (webhook-id, "
                "webhook-timestamp, webhook-signature) signed with BRIDGE_CALLBACK_SECRET."
            )
    else:
        operation["security"] = []
        operation["description"] += " No credential."
    operation["description"] = operation["description"].strip()
    if route.body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _schema(route.body, refs, keyed)}},
        }
    ok: dict[str, Any] = {"description": "OK"}
    if route.response is not None:
        ok["content"] = {route.media_type: {"schema": _schema(route.response, refs, keyed)}}
    elif route.media_type.startswith("text/"):
        ok["content"] = {route.media_type: {"schema": {"type": "string"}}}
    else:
        ok["content"] = {route.media_type: {"schema": {}}}
    responses: dict[str, Any] = (
        {"201": {**ok, "description": "Created"}} if route.created else {"200": ok}
    )
    if route.accepted is not None:
        responses["202"] = {
            "description": "Accepted as a background job (mode async); Location: its status",
            "content": {"application/json": {"schema": _schema(route.accepted, refs, keyed)}},
        }
    error = {"application/json": {"schema": _schema(ErrorBody, refs, keyed)}}
    for status in route.also_ok:
        responses[str(status)] = {"description": ERROR_TEXT[status], "content": ok["content"]}
    for status in _error_statuses(route):
        answer = {"description": ERROR_TEXT[status], "content": error}
        if status in (429, 503):
            answer["headers"] = RETRY_AFTER
        responses.setdefault(str(status), answer)
    operation["responses"] = responses
    return operation
