"""`validation`: JSON Schema checks of each item, and e-mail address checks and normalisation.

Valid and invalid items both come back, each marked under `result_field` with its problems as JSON
pointers into the item; or, with `on_invalid: "item_error"`, each invalid item becomes a per-item
error (the valid ones come back marked); or, with `on_invalid: "fail"`, any invalid item fails the
request (422).
"""

from __future__ import annotations

from typing import Any, Literal

import orjson
from email_validator import EmailNotValidError, validate_email
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from bridge.errors import Timeout, ValidationFailed, json_pointer
from bridge.items import Item
from bridge.processors import json_schemas
from bridge.processors.email_dns import DeadlineResolver
from bridge.processors.registry import Context, processor


class ValidationParams(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    json_schema: dict[str, Any] | None = Field(
        None,
        alias="schema",
        description=(
            "a JSON Schema (Draft 2020-12) each item's json must match; its references must "
            "resolve inside it (nothing is fetched)"
        ),
    )
    email_fields: list[str] = Field(
        default_factory=list,
        description="fields that must hold an e-mail address: names, or JSON pointers (/a/b)",
    )
    normalize_emails: bool = Field(True, description="write back the normalised address")
    check_deliverability: bool = Field(
        False, description="also ask DNS whether the domain takes mail (slow; network)"
    )
    on_invalid: Literal["mark", "item_error", "fail"] = Field(
        "mark",
        description=(
            "mark: invalid items come back marked; item_error: each invalid item becomes a "
            "per-item error (code validation), the valid ones come back; fail: the request fails"
        ),
    )
    result_field: str = Field("validation", min_length=1)

    @field_validator("json_schema")
    @classmethod
    def _valid_schema(cls, schema: dict[str, Any] | None) -> dict[str, Any] | None:
        if schema is not None:
            try:
                json_schemas.check(schema)
            except json_schemas.SchemaRefused as exc:
                # A ValidationError keeps the path: the 422 points at the keyword itself.
                error = PydanticCustomError("json_schema", "{reason}", {"reason": exc.message})
                raise ValidationError.from_exception_data(
                    "schema", [{"type": error, "loc": exc.path, "input": schema}]
                ) from None
        return schema


def _schema_problems(
    validator: Any, record: Any, budget: json_schemas.ErrorBudget
) -> list[dict[str, str]]:
    try:
        errors, stopped = json_schemas.item_errors(validator, record, budget)
    except RecursionError:  # a recursive schema followed the item down past Python's limit
        return [{"pointer": "", "message": "nested too deeply to validate"}]
    problems = [
        {"pointer": json_pointer(error.absolute_path), "message": error.message} for error in errors
    ]
    if stopped is not None:
        problems.append({"pointer": "", "message": stopped})
    return problems


def _parts(field: str) -> list[str]:
    if not field.startswith("/"):
        return [field]
    return [p.replace("~1", "/").replace("~0", "~") for p in field[1:].split("/")]


def _check_email(
    record: dict[str, Any], field: str, params: ValidationParams, resolver: DeadlineResolver | None
) -> str | None:
    """Checks (and normalises in place) one address; returns the problem, if any."""
    *parents, last = _parts(field)
    holder: Any = record
    for part in parents:
        holder = holder.get(part) if isinstance(holder, dict) else None
    value = holder.get(last) if isinstance(holder, dict) else None
    if not isinstance(value, str) or not value:
        return "no e-mail address"
    try:
        valid = validate_email(
            value, check_deliverability=resolver is not None, dns_resolver=resolver
        )
    except EmailNotValidError as exc:
        return str(exc)
    if params.normalize_emails:
        holder[last] = valid.normalized
    return None


def _item_error(problems: list[dict[str, str]]) -> ValidationFailed | None:
    """An invalid item's per-item error: its problems, each after its pointer."""
    if not problems:
        return None
    text = "; ".join(
        f"{p['pointer']}: {p['message']}" if p["pointer"] else p["message"] for p in problems
    )
    return ValidationFailed(text, details=problems)


@processor("validation", params=ValidationParams, batch=True)
def validation(items: list[Item], params: ValidationParams, ctx: Context) -> list[Any]:
    """Checks items against a JSON Schema and checks e-mail addresses; marks the invalid ones."""
    schema = params.json_schema
    validator = json_schemas.validator(schema) if schema is not None else None
    with json_schemas.deadline(ctx.deadline):
        return _validate(items, params, ctx, validator)


def _validate(
    items: list[Item], params: ValidationParams, ctx: Context, validator: Any
) -> list[Any]:
    resolver = DeadlineResolver(ctx.settings, ctx.deadline) if params.check_deliverability else None
    results: list[dict[str, Any]] = []
    invalid: list[dict[str, str]] = []
    budget = json_schemas.ErrorBudget()
    for item in items:
        if ctx.past_deadline():  # the caller has had its timeout: free the thread
            raise Timeout(f"validation stopped at item {item.index}: out of time")
        record = orjson.loads(orjson.dumps(item.json))  # a copy we may normalise
        problems = _schema_problems(validator, record, budget) if validator else []
        for field in params.email_fields:
            problem = _check_email(record, field, params, resolver)
            if problem is not None:
                pointer = field if field.startswith("/") else json_pointer([field])
                problems.append({"pointer": pointer, "message": problem})
        record[params.result_field] = {"valid": not problems, "errors": problems}
        invalid += [
            {"pointer": f"/items/{item.index}{p['pointer']}", "message": p["message"]}
            for p in problems
        ]
        results.append(record)
    if params.on_invalid == "item_error":
        return [_item_error(r[params.result_field]["errors"]) or r for r in results]
    if invalid and params.on_invalid == "fail":
        count = sum(1 for r in results if not r[params.result_field]["valid"])
        raise ValidationFailed(
            f"{count} of {len(items)} items are invalid: {invalid[0]['pointer']}: "
            f"{invalid[0]['message']}",
            details=invalid,
        )
    return results
