"""validation through the API: JSON Schema, e-mail checks, mark or fail."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import pool_calls_end

EXECUTE = "/api/v1/workflow/execute"
SCHEMA = {
    "type": "object",
    "properties": {"email": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
    "required": ["email"],
}


async def validate(
    client: TestClient, auth: dict[str, str], items: list[dict[str, Any]], **params: Any
) -> Any:
    body = {"processing_type": "validation", "items": items, "parameters": params}
    return await client.post(EXECUTE, json=body, headers=auth)


async def test_valid_and_invalid_items_come_back_marked(
    client: TestClient, auth: dict[str, str]
) -> None:
    items = [
        {"json": {"email": "Ada@Example.COM", "age": 36}},
        {"json": {"email": "not-an-address", "age": -1}},
        {"json": {"age": 3}},
    ]
    response = await validate(client, auth, items, schema=SCHEMA, email_fields=["email"])
    assert response.status == 200
    out = [i["json"] for i in (await response.json())["items"]]
    assert out[0]["validation"] == {"valid": True, "errors": []}
    assert out[0]["email"] == "Ada@example.com"  # normalised: the domain in lower case
    assert out[1]["validation"]["valid"] is False
    assert {e["pointer"] for e in out[1]["validation"]["errors"]} == {"/age", "/email"}
    assert out[2]["validation"]["errors"] == [
        {"pointer": "", "message": "'email' is a required property"},
        {"pointer": "/email", "message": "no e-mail address"},
    ]


async def test_email_fields_may_be_json_pointers(client: TestClient, auth: dict[str, str]) -> None:
    items = [{"json": {"contact": {"mail": "grace@example.org"}}}]
    response = await validate(client, auth, items, email_fields=["/contact/mail"])
    out = (await response.json())["items"][0]["json"]
    assert out["validation"]["valid"] is True


async def test_normalisation_can_be_switched_off(client: TestClient, auth: dict[str, str]) -> None:
    items = [{"json": {"email": "Ada@Example.COM"}}]
    response = await validate(client, auth, items, email_fields=["email"], normalize_emails=False)
    assert (await response.json())["items"][0]["json"]["email"] == "Ada@Example.COM"


async def test_fail_mode_fails_the_request_with_pointers(
    client: TestClient, auth: dict[str, str]
) -> None:
    items = [{"json": {"email": "a@example.com"}}, {"json": {"email": 5}}]
    response = await validate(client, auth, items, schema=SCHEMA, on_invalid="fail")
    assert response.status == 422
    error = (await response.json())["error"]
    assert error["message"].startswith("1 of 2 items are invalid: /items/1/email:")
    assert error["details"] == [
        {"pointer": "/items/1/email", "message": "5 is not of type 'string'"}
    ]


async def test_item_error_mode_fails_only_the_invalid_items(
    client: TestClient, auth: dict[str, str]
) -> None:
    """One bad address does not spoil its batch: it alone becomes a per-item error (each problem
    with its pointer), and the valid items come back as with "mark"."""
    items = [
        {"json": {"email": "a@example.com"}},
        {"json": {"email": 5}},
        {"json": {"email": "b@example.com"}},
        {"json": {}},
    ]
    response = await validate(client, auth, items, schema=SCHEMA, on_invalid="item_error")
    assert response.status == 200
    answer = await response.json()
    assert [i["pairedItem"]["item"] for i in answer["items"]] == [0, 2]
    assert answer["items"][0]["json"]["validation"] == {"valid": True, "errors": []}
    assert answer["errors"] == [
        {"index": 1, "code": "validation", "message": "/email: 5 is not of type 'string'"},
        {"index": 3, "code": "validation", "message": "'email' is a required property"},
    ]


async def test_an_invalid_schema_is_refused(client: TestClient, auth: dict[str, str]) -> None:
    response = await validate(client, auth, [], schema={"type": "no-such-type"})
    assert response.status == 422
    error = (await response.json())["error"]
    assert error["details"][0]["pointer"] == "/parameters/schema"
    assert "not a valid JSON Schema" in error["details"][0]["message"]


async def test_a_slow_batch_stops_at_its_time_limit_and_frees_its_thread(
    client: TestClient, auth: dict[str, str]
) -> None:
    """Many items, each slow (a backtracking pattern, a fraction of a second an item): after the
    504 the thread stops instead of going through all of them."""
    items = [{"json": {"code": "a" * 30 + "b"}} for _ in range(60)]
    schema = {"properties": {"code": {"pattern": "^(a|aa)+$"}}}
    body = {
        "processing_type": "validation",
        "items": items,
        "parameters": {"schema": schema},
        "timeout_s": 0.2,
    }
    response = await client.post(EXECUTE, json=body, headers=auth)
    assert response.status == 504
    assert await pool_calls_end(client), "the validation thread is still running past its deadline"


def nested(depth: int, leaf: Any, key: str = "not") -> Any:
    for _ in range(depth):
        leaf = {key: leaf}
    return leaf


@pytest.mark.parametrize(
    ("schema", "reason"),
    [
        pytest.param(nested(400, {"type": "string"}), "nested too deeply", id="deep-schema"),
        # Python's pattern parser recurses once per group: a pattern it cannot parse
        pytest.param({"pattern": "(" * 1000 + ")" * 1000}, "is not a 'regex'", id="deep-pattern"),
    ],
)
async def test_a_schema_nested_too_deeply_is_refused(
    client: TestClient, auth: dict[str, str], schema: Any, reason: str
) -> None:
    response = await validate(client, auth, [], schema=schema)
    assert response.status == 422, await response.text()
    problem = (await response.json())["error"]["details"][0]
    assert problem["pointer"] == "/parameters/schema"
    assert reason in problem["message"]


async def test_an_item_nested_too_deeply_for_its_schema_is_marked(
    client: TestClient, auth: dict[str, str]
) -> None:
    """A recursive schema follows the item down: past Python's recursion limit the item is
    invalid, the others are checked as usual."""
    schema = {"$defs": {"n": {"properties": {"a": {"$ref": "#/$defs/n"}}}}, "$ref": "#/$defs/n"}
    items = [{"json": nested(200, 1, key="a")}, {"json": {"a": {"a": 1}}}]
    response = await validate(client, auth, items, schema=schema)
    assert response.status == 200, await response.text()
    out = [i["json"]["validation"] for i in (await response.json())["items"]]
    assert out[0] == {
        "valid": False,
        "errors": [{"pointer": "", "message": "nested too deeply to validate"}],
    }
    assert out[1] == {"valid": True, "errors": []}


async def test_a_schema_too_large_to_check_on_the_event_loop_is_refused(
    client: TestClient, auth: dict[str, str]
) -> None:
    """Parameters are checked on the event loop: a schema of 20,000 subschemas would hold it for
    seconds per request."""
    schema = {"properties": {f"p{i}": {"type": "string"} for i in range(20_000)}}
    response = await validate(client, auth, [], schema=schema)
    assert response.status == 422, await response.text()
    problem = (await response.json())["error"]["details"][0]
    assert problem["pointer"] == "/parameters/schema"
    assert "too large" in problem["message"]
