"""`validation`'s CPU is bounded by the run's deadline: a backtracking pattern, wherever jsonschema
matches it, stops at the deadline without stalling the daemon (Python's `re` would hold the GIL for
the whole match), and one slow item is cut short too."""

from __future__ import annotations

import asyncio
import io
import time
import tracemalloc
from typing import Any

import orjson
import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from tests.conftest import pool_calls_end

EXECUTE = "/api/v1/workflow/execute"
BACKTRACKS = "^(a|aa)+$"  # exponential in `re` and in `regex` alike
SLOW = "a" * 40 + "b"  # `re`: about 20 s holding the GIL here; `regex`: longer, but cut off


async def polling_health(
    client: TestClient, answer: asyncio.Task[ClientResponse]
) -> tuple[ClientResponse, float]:
    """The answer, and the slowest `/health` answer while it was awaited."""
    slowest = 0.0
    while not answer.done():
        asked = time.monotonic()
        assert (await client.get("/health")).status == 200
        slowest = max(slowest, time.monotonic() - asked)
        await asyncio.sleep(0.05)
    return await answer, slowest


async def post_measured(
    client: TestClient, auth: dict[str, str], body: dict[str, Any]
) -> tuple[int, bytes, float, int]:
    """Status, answer, seconds and the peak of memory traced while the request was answered
    (the app runs in this process)."""
    headers = {**auth, "Content-Type": "application/json"}
    tracemalloc.start()
    try:
        started = time.monotonic()
        response = await client.post(EXECUTE, data=io.BytesIO(orjson.dumps(body)), headers=headers)
        answer = await response.read()
        return (
            response.status,
            answer,
            time.monotonic() - started,
            tracemalloc.get_traced_memory()[1],
        )
    finally:
        tracemalloc.stop()


def request(schema: Any, items: list[Any], timeout_s: float) -> dict[str, Any]:
    return {
        "processing_type": "validation",
        "items": items,
        "parameters": {"schema": schema},
        "timeout_s": timeout_s,
    }


@pytest.mark.parametrize(
    ("schema", "record"),
    [
        pytest.param(
            {"properties": {"code": {"pattern": BACKTRACKS}}}, {"code": SLOW}, id="pattern"
        ),
        pytest.param({"patternProperties": {BACKTRACKS: True}}, {SLOW: 1}, id="patternProperties"),
        pytest.param(
            # additionalProperties sorts first: its own matching runs before patternProperties'
            {"patternProperties": {BACKTRACKS: True}, "additionalProperties": False},
            {SLOW: 1},
            id="additionalProperties",
        ),
        pytest.param({"propertyNames": {"pattern": BACKTRACKS}}, {SLOW: 1}, id="propertyNames"),
    ],
)
async def test_a_backtracking_pattern_stops_at_the_deadline_and_the_daemon_keeps_serving(
    client: TestClient, auth: dict[str, str], schema: Any, record: Any
) -> None:
    started = time.monotonic()
    answer = asyncio.create_task(
        client.post(EXECUTE, json=request(schema, [{"json": record}], 1), headers=auth)
    )
    response, slowest_health = await polling_health(client, answer)
    assert response.status == 504, await response.text()
    assert (await response.json())["error"]["code"] == "timeout"
    assert time.monotonic() - started < 6, "the answer came long after the 1 s deadline"
    assert slowest_health < 1.5, f"/health stalled {slowest_health:.1f} s during the match"
    # Seconds, not the hours this match takes without a timeout (generous: a loaded CI machine)
    assert await pool_calls_end(client, bound_s=8), "the match went on past the deadline"


async def test_one_slow_item_is_cut_short_at_the_deadline(
    client: TestClient, auth: dict[str, str]
) -> None:
    """No pattern: a single item whose validation is long in plain Python (millions of keyword
    checks) stops at the deadline instead of holding its thread to the end."""
    # every number fails 99 branches before the last one matches: slow, and no error kept
    branches = [{"type": "string", "minLength": i} for i in range(99)] + [{"type": "integer"}]
    schema = {"items": {"anyOf": branches}}
    items = [{"json": {"numbers": list(range(100_000))}}]
    body = request({"properties": {"numbers": schema}}, items, 0.5)
    response = await client.post(EXECUTE, json=body, headers=auth)
    assert response.status == 504
    assert await pool_calls_end(client, bound_s=3), "the item was validated past the deadline"


async def test_a_pattern_that_would_compile_too_large_is_refused(
    client: TestClient, auth: dict[str, str]
) -> None:
    """`regex` unrolls counted repeats: this one would take gigabytes to compile."""
    schema = {"properties": {"code": {"pattern": "(?:(?:a{100}){100}){100}"}}}
    body = request(schema, [{"json": {"code": "a"}}], 5)
    response = await client.post(EXECUTE, json=body, headers=auth)
    assert response.status == 422
    problem = (await response.json())["error"]["details"][0]
    assert problem["pointer"] == "/parameters/schema/properties/code/pattern"
    assert "too large" in problem["message"]


async def test_unevaluated_properties_with_pattern_properties_is_refused(
    client: TestClient, auth: dict[str, str]
) -> None:
    """jsonschema matches patternProperties for unevaluatedProperties with `re`, out of reach."""
    schema = {
        "allOf": [{"patternProperties": {BACKTRACKS: True}}],
        "unevaluatedProperties": False,
    }
    body = request(schema, [{"json": {SLOW: 1}}], 5)
    response = await client.post(EXECUTE, json=body, headers=auth)
    assert response.status == 422
    problem = (await response.json())["error"]["details"][0]
    assert problem["pointer"] == "/parameters/schema/unevaluatedProperties"


async def test_ordinary_patterns_still_match(client: TestClient, auth: dict[str, str]) -> None:
    schema = {
        "properties": {"zip": {"pattern": r"^\d{5}$"}},
        "patternProperties": {"^x-": {"type": "string"}},
        "additionalProperties": {"type": "integer"},
    }
    items = [
        {"json": {"zip": "12345", "x-a": "s", "n": 1}},
        {"json": {"zip": "1234", "x-a": 1, "n": "s"}},
    ]
    response = await client.post(EXECUTE, json=request(schema, items, 5), headers=auth)
    assert response.status == 200
    out = [i["json"]["validation"] for i in (await response.json())["items"]]
    assert out[0] == {"valid": True, "errors": []}
    assert {e["pointer"] for e in out[1]["errors"]} == {"/zip", "/x-a", "/n"}
    assert any(e["message"] == r"'1234' does not match '^\\d{5}$'" for e in out[1]["errors"])


async def test_patterns_are_in_python_re_syntax(client: TestClient, auth: dict[str, str]) -> None:
    schema = {"properties": {"name": {"pattern": r"^\p{L}+$"}}}
    response = await client.post(EXECUTE, json=request(schema, [], 5), headers=auth)
    assert response.status == 422
    problem = (await response.json())["error"]["details"][0]
    assert problem["pointer"] == "/parameters/schema"
    assert "is not a 'regex'" in problem["message"]


@pytest.mark.parametrize(
    "values",
    [
        pytest.param([*range(200_000), "x"], id="mixed types: no sorting, every pair compared"),
        pytest.param([{"n": [n]} for n in range(100_000)], id="objects"),
    ],
)
async def test_unique_items_over_a_huge_array_ends_within_the_deadline(
    client: TestClient, auth: dict[str, str], values: list[Any]
) -> None:
    """jsonschema's `uniqueItems` compares every pair when it cannot sort: quadratic inside one
    keyword, so a per-keyword deadline check would come hours late. The bridge's is linear (an
    answer at once) and checks the deadline as it goes."""
    schema = {"properties": {"a": {"uniqueItems": True}}}
    started = time.monotonic()
    body = io.BytesIO(orjson.dumps(request(schema, [{"json": {"a": values}}], 1)))
    headers = {**auth, "Content-Type": "application/json"}
    response = await client.post(EXECUTE, data=body, headers=headers)
    assert response.status in (200, 504), (await response.text())[:300]
    assert time.monotonic() - started < 6
    assert await pool_calls_end(client, bound_s=3), "the comparison went on past the deadline"


async def test_unique_items_keeps_json_equality(client: TestClient, auth: dict[str, str]) -> None:
    schema = {"properties": {"a": {"uniqueItems": True}}}
    cases = [
        ([1, 1.0], False),  # the same number
        ([1, True], True),  # a boolean is not a number
        ([0, False], True),
        ([{"a": 1, "b": [1, 2]}, {"b": [1, 2], "a": 1}], False),  # key order does not matter
        ([[1, 2], [2, 1]], True),  # item order does
        ([None, "null", 0, "", [], {}], True),
        ([{"a": [1.0]}, {"a": [1]}], False),
    ]
    items = [{"json": {"a": values}} for values, _ in cases]
    response = await client.post(EXECUTE, json=request(schema, items, 5), headers=auth)
    assert response.status == 200
    out = [i["json"]["validation"]["valid"] for i in (await response.json())["items"]]
    assert out == [unique for _, unique in cases]


def _body(schema: Any, record: Any, timeout_s: float = 20) -> io.BytesIO:
    return io.BytesIO(orjson.dumps(request(schema, [{"json": record}], timeout_s)))


async def test_branches_that_multiply_errors_stop_at_a_bound(
    client: TestClient, auth: dict[str, str]
) -> None:
    """anyOf keeps every branch's errors: two branches per level, 20 levels, 2**20 errors held
    at once (gigabytes, long before the deadline) — unless errors per item are bounded."""
    defs = {
        f"l{i}": {"anyOf": [{"$ref": f"#/$defs/l{i + 1}"}, {"$ref": f"#/$defs/l{i + 1}"}]}
        for i in range(20)
    }
    schema = {"$defs": {**defs, "l20": {"const": "nope"}}, "$ref": "#/$defs/l0"}
    body = request(schema, [{"json": {"a": 1}}], 20)
    status, answer, took, peak = await post_measured(client, auth, body)
    assert status == 200, answer[:300]
    marked = orjson.loads(answer)["items"][0]["json"]["validation"]
    assert not marked["valid"]
    assert "more than 1,000 errors in this item" in marked["errors"][-1]["message"]
    assert took < 10, f"{took:.1f} s"
    assert peak < 200 * 2**20, f"{peak / 2**20:.0f} MiB"


async def test_error_messages_do_not_repeat_a_large_value(
    client: TestClient, auth: dict[str, str]
) -> None:
    """jsonschema puts the whole value in most messages: 100 failing checks of a 5 MB string
    made a 500 MB answer."""
    schema = {"properties": {"a": {"allOf": [{"format": "date"}] * 100}}}
    body = request(schema, [{"json": {"a": "2" * 5_000_000}}], 20)
    status, text, _, peak = await post_measured(client, auth, body)
    assert status == 200
    assert len(text) < 6_000_000 + 100 * 1_000, len(text)  # the value once, then short messages
    assert peak < 200 * 2**20, f"{peak / 2**20:.0f} MiB"


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("[" + "a-b" * 300_000 + "]", id="long: parsed in Python, holding the loop"),
        pytest.param("a{4294967295}", id="a repeat too large: OverflowError"),
        pytest.param("(" * 1000 + ")" * 1000, id="nested groups: RecursionError"),
    ],
)
async def test_an_items_value_checked_as_a_regex_is_bounded_and_only_marks_its_item(
    client: TestClient, auth: dict[str, str], value: str
) -> None:
    schema = {"properties": {"p": {"format": "regex"}}}
    headers = {**auth, "Content-Type": "application/json"}
    answer = asyncio.create_task(
        client.post(EXECUTE, data=_body(schema, {"p": value}, 5), headers=headers)
    )
    response, slowest_health = await polling_health(client, answer)
    assert response.status == 200, (await response.text())[:300]
    marked = (await response.json())["items"][0]["json"]["validation"]
    assert marked["valid"] is False
    assert "is not a 'regex'" in marked["errors"][0]["message"]
    assert slowest_health < 1.0, f"/health took {slowest_health:.1f} s"


async def test_errors_are_bounded_per_item_and_per_request(
    client: TestClient, auth: dict[str, str]
) -> None:
    """Errors of one item were bounded, but not of a request: 100 items of 10,000 wrong
    elements kept a million errors (840 MB from a 2 MB body)."""
    schema = {"properties": {"a": {"items": {"type": "string"}}}}
    items = [{"json": {"a": [0] * 10_000}} for _ in range(120)]
    status, answer, _, peak = await post_measured(client, auth, request(schema, items, 60))
    assert status == 200
    marks = [item["json"]["validation"] for item in orjson.loads(answer)["items"]]
    assert all(not mark["valid"] for mark in marks)
    first = marks[0]["errors"]
    assert len(first) == 1_001 and "more than 1,000 errors" in first[-1]["message"]
    kept = sum(len(mark["errors"]) for mark in marks)
    assert kept <= 100_000 + len(marks), kept
    assert "more than 100,000 errors" in marks[-1]["errors"][-1]["message"]
    assert peak < 250 * 2**20, f"{peak / 2**20:.0f} MiB"
