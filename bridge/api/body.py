"""Reading requests into models: content type, size limit, JSON and schema errors as 4xx."""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from bridge.errors import PayloadTooLarge, UnsupportedMediaType, ValidationFailed, json_pointer
from bridge.items import dumps
from bridge.keys import SETTINGS

M = TypeVar("M", bound=BaseModel)


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=dumps(body), status=status, content_type="application/json", headers=headers
    )


async def read_model(request: web.Request, model: type[M]) -> M:
    """The body as `model`: 415 unless JSON, 413 past BRIDGE_MAX_BODY_BYTES (refused from the
    Content-Length header before reading), 400 malformed, 422 with a JSON pointer per problem."""
    if request.content_type != "application/json" and not request.content_type.endswith("+json"):
        raise UnsupportedMediaType(
            f"expected Content-Type application/json, got {request.content_type!r}"
        )
    if request.charset not in (None, "utf-8"):
        raise UnsupportedMediaType(f"JSON must be UTF-8, not {request.charset!r}")
    limit = request.app[SETTINGS].max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(request.content_length, limit)
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:  # a chunked body went past the limit while reading
        raise _too_large(None, limit) from None
    if not raw:
        raise ValidationFailed("the request body is empty; send a JSON object", http_code=400)
    return decode_json(model, raw)


def decode_json(model: type[M], raw: bytes) -> M:
    """JSON as n8n (JavaScript) reads it: orjson turns an integer beyond 64 bits into a float, as
    JSON.parse does, where pydantic's own parser would keep a Python int that no JSON encoder
    here can write back. 400 when it is not JSON, 422 when it does not fit the model."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValidationFailed(f"the body is not valid JSON: {exc}", http_code=400) from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc) from None


def parse_query(request: web.Request, model: type[M]) -> M:
    try:
        return model.model_validate(dict(request.query))
    except ValidationError as exc:
        raise validation_error(exc, within=("query",)) from None


def _too_large(size: int | None, limit: int) -> PayloadTooLarge:
    got = f"{size} bytes" if size is not None else "the body"
    return PayloadTooLarge(
        f"{got} is more than BRIDGE_MAX_BODY_BYTES ({limit} bytes)",
        description="send the items in smaller batches",
    )


def _message(problem: ErrorDetails) -> str:
    if problem["type"] == "is_instance_of":  # JsonObject: pydantic would name a Python class
        return "Input should be a JSON object"
    return problem["msg"]


def validation_error(exc: ValidationError, within: tuple[str, ...] = ()) -> ValidationFailed:
    problems = exc.errors(include_url=False, include_context=False, include_input=False)
    details = [
        {"pointer": json_pointer([*within, *p["loc"]]), "message": _message(p)} for p in problems
    ]
    first = details[0]
    return ValidationFailed(
        f"{first['pointer'] or '/'}: {first['message']}"
        + (f" (+{len(details) - 1} more)" if len(details) > 1 else ""),
        details=details,
    )
