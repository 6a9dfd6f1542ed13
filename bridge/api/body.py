"""Reading requests into models: content type, size limit, JSON and schema errors as 4xx."""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from bridge.api.models import PATTERN_WORDS
from bridge.errors import PayloadTooLarge, UnsupportedMediaType, ValidationFailed, json_pointer
from bridge.items import dumps
from bridge.keys import SETTINGS

M = TypeVar("M", bound=BaseModel)
# Body bytes per structure unit allowed (see check_structure).
STRUCTURE_BYTES_PER_UNIT = 2
MAX_UNITS_PER_BYTE = 8  # a `{`
_NOT_STRUCTURE = bytes(sorted(set(range(256)) - set(b'{[",:')))
_STRUCTURE_SLICE = 256 * 1024


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=dumps(body), status=status, content_type="application/json", headers=headers
    )


async def read_model(request: web.Request, model: type[M]) -> M:
    """The body as `model` (see `read_json`); 422 with a JSON pointer per problem."""
    return validate(model, await read_json(request))


async def read_json(request: web.Request) -> Any:
    """The body, parsed: 415 unless JSON, 413 past BRIDGE_MAX_BODY_BYTES (refused from the
    Content-Length header before reading) or past its structure budget (before parsing), 400
    malformed."""
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
    check_structure(raw, limit)
    return parse_json(raw)


def check_structure(raw: bytes, limit: int) -> None:
    """413 when the body holds more JSON structure than a body of `limit` bytes may.

    Parsed, JSON takes more memory than its text, and the most for the least text: `{}` is 3
    bytes and a 64-byte dict — and an object is what every item, binary and pairedItem costs
    again on its way through; `[]` is a 56-byte list, `"ab"` a 51-byte string. So before
    parsing, a cheap count (C speed) of what the body will cost, in units of ~32 bytes of
    memory (`structure_units`), may not exceed half the body limit in bytes. Ordinary records
    come to under one unit per 2 bytes; bytes inside strings are counted too, so the count can
    only overestimate. A body too short to reach the budget even if every byte were a `{` is
    not counted.
    """
    budget = limit // STRUCTURE_BYTES_PER_UNIT
    if len(raw) * MAX_UNITS_PER_BYTE <= budget:
        return
    units = structure_units(raw)
    if units > budget:
        raise PayloadTooLarge(
            f"the body holds too many JSON values for BRIDGE_MAX_BODY_BYTES ({limit} bytes): "
            f"{units} structure units, at most {budget}",
            description="objects, arrays and strings cost memory beyond their text; send the "
            "items in smaller batches",
        )


def structure_units(raw: bytes) -> int:
    """What parsing `raw` costs, roughly, in units of ~32 bytes: 8 per object, 3 per array, 2
    per string (1 per `"`), 1 per value that follows a `,` or `:`.

    Counted a slice at a time: the slice's structure characters kept (one pass), then its `{`
    and `[` counted among those few — a third of the time of five counts over the whole body,
    and at most a slice's worth of memory."""
    units = 0
    for start in range(0, len(raw), _STRUCTURE_SLICE):
        marks = raw[start : start + _STRUCTURE_SLICE].translate(None, _NOT_STRUCTURE)
        units += len(marks) + 7 * marks.count(b"{") + 2 * marks.count(b"[")
    return units


def parse_json(raw: bytes, what: str = "the body") -> Any:
    """JSON as n8n (JavaScript) reads it: orjson turns an integer beyond 64 bits into a float, as
    JSON.parse does, where pydantic's own parser would keep a Python int that no JSON encoder
    here can write back. 400 when it is not JSON; `what` names the text in the message."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValidationFailed(f"{what} is not valid JSON: {exc}", http_code=400) from None


def validate(model: type[M], data: Any) -> M:
    """Parsed JSON as `model`; 422 with a JSON pointer per problem."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc) from None


def decode_json(model: type[M], raw: bytes) -> M:
    """A stored request (checked when it arrived) as `model`."""
    return validate(model, parse_json(raw))


def parse_query(request: web.Request, model: type[M]) -> M:
    """The query as `model`; 422 naming each parameter given twice (which one would count is
    not for the bridge to guess: several statuses are one parameter, `status=a,b`)."""
    repeated = sorted({key for key in request.query if len(request.query.getall(key)) > 1})
    if repeated:
        details = [
            {"pointer": f"/query/{key}", "message": "given more than once"} for key in repeated
        ]
        raise ValidationFailed(
            f"/query/{repeated[0]}: given more than once; give each parameter once",
            description="a list is one parameter, its values separated by commas",
            details=details,
        )
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
    if problem["type"] == "string_pattern_mismatch":  # pydantic would show the regex
        return PATTERN_WORDS.get(problem.get("ctx", {}).get("pattern", ""), problem["msg"])
    return problem["msg"]


def validation_error(exc: ValidationError, within: tuple[str, ...] = ()) -> ValidationFailed:
    # The context (a pattern) picks the words; neither it nor the input goes into the answer.
    problems = exc.errors(include_url=False, include_input=False)
    details = [
        {"pointer": json_pointer([*within, *p["loc"]]), "message": _message(p)} for p in problems
    ]
    first = details[0]
    return ValidationFailed(
        f"{first['pointer'] or '/'}: {first['message']}"
        + (f" (+{len(details) - 1} more)" if len(details) > 1 else ""),
        details=details,
    )
