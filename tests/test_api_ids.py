"""Every id, cursor and limit a request carries is bounded — in the OpenAPI document and by the
handler, before the answer starts: out of bounds is a 4xx in the shared error body, never a 500
or a stream broken after its 200."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient

from bridge.settings import Settings
from tests.conftest import token
from tests.test_api_errors import error_of

TOO_BIG = "9223372036946784256"  # the fuzzer's find: past SQLite's (and Redis's) 64-bit integers


def _cursor(value: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(value)).decode().rstrip("=")


@pytest.fixture
def admin(settings: Settings) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(settings, 'admin')}"}


@pytest.mark.parametrize(
    ("path", "headers", "pointer"),
    [
        (f"/api/v1/events?last_event_id={TOO_BIG}", {}, "/query/last_event_id"),
        ("/api/v1/events?last_event_id=-1", {}, "/query/last_event_id"),
        ("/api/v1/events", {"Last-Event-ID": TOO_BIG}, "/headers/Last-Event-ID"),
        ("/api/v1/events", {"Last-Event-ID": "9" * 400}, "/headers/Last-Event-ID"),
        ("/api/v1/events", {"Last-Event-ID": "²"}, "/headers/Last-Event-ID"),  # isdigit() says yes
        ("/api/v1/events", {"Last-Event-ID": "٣"}, "/headers/Last-Event-ID"),  # and int() too
        ("/api/v1/events", {"Last-Event-ID": "-1"}, "/headers/Last-Event-ID"),
        ("/api/v1/events?workflow_id=a%00b", {}, "/query/workflow_id"),
        ("/api/v1/events?workflow_id=" + "w" * 257, {}, "/query/workflow_id"),
    ],
)
async def test_event_ids_out_of_bounds_are_422_before_the_stream_starts(
    client: TestClient, admin: dict[str, str], path: str, headers: dict[str, str], pointer: str
) -> None:
    response = await client.get(path, headers={**admin, **headers})
    assert response.status == 422  # before reading: a 200 would be an endless stream
    error = await error_of(response, 422, "validation")
    assert pointer in [d["pointer"] for d in error["details"]]


async def test_the_largest_event_id_is_answered(client: TestClient, admin: dict[str, str]) -> None:
    for ask in ({"last_event_id": str(2**63 - 1)}, {}):
        headers = {} if ask else {"Last-Event-ID": str(2**63 - 1)}
        async with client.get(
            "/api/v1/events", params=ask, headers={**admin, **headers}
        ) as response:
            assert response.status == 200
            assert await response.content.readline() == b"retry: 2000\n"


@pytest.mark.parametrize(
    ("path", "pointer"),
    [
        ("/admin/dead-letters?before=nan", "/query/before"),
        ("/admin/dead-letters?before=inf", "/query/before"),
        ("/admin/dead-letters?before=-inf", "/query/before"),
        ("/admin/dead-letters?before=1e400", "/query/before"),
        ("/admin/dead-letters?limit=9223372036946784256", "/query/limit"),
        ("/api/v1/status/wf-1?limit=9223372036946784256", "/query/limit"),
        ("/api/v1/status/wf-1?cursor=" + "A" * 600, "/query/cursor"),
        (f"/api/v1/status/wf-1?cursor={_cursor([1e400, 'x'])}", "/query/cursor"),
        (f"/api/v1/status/wf-1?cursor={_cursor(['nan', 'x'])}", "/query/cursor"),
        (f"/api/v1/status/wf-1?cursor={_cursor([1.0, 'x' * 100])}", "/query/cursor"),
        (f"/api/v1/status/wf-1?cursor={_cursor([1.0, {'a': 1}])}", "/query/cursor"),
        ("/api/v1/status/wf-1?execution_id=a%0Ab", "/query/execution_id"),
    ],
)
async def test_cursors_and_limits_out_of_bounds_are_422(
    client: TestClient, admin: dict[str, str], path: str, pointer: str
) -> None:
    response = await client.get(path, headers=admin)
    error = await error_of(response, 422, "validation")
    assert pointer in [d["pointer"] for d in error["details"]]


# What int() and float() take besides ASCII digits: a sign, spaces, `_`, other scripts' digits,
# more digits than any id has (zero padding); and a float's spellings.
NOT_DIGITS = [
    "+5",
    "5 ",
    " 5",
    "5%20",
    "%2B5",
    "5_0",
    "\u0665",
    "\uff15",
    "0" * 40 + "5",
    "5.0",
    "0x5",
]
NOT_DECIMAL = [*NOT_DIGITS[:-2], "5.", ".5", "5e3", "nan", "Infinity", "-0"]
NUMERIC_QUERIES = [
    ("/api/v1/events?last_event_id=", "/query/last_event_id", NOT_DIGITS),
    ("/api/v1/status/wf-1?limit=", "/query/limit", NOT_DIGITS),
    ("/admin/dead-letters?limit=", "/query/limit", NOT_DIGITS),
    ("/admin/dead-letters?before=", "/query/before", NOT_DECIMAL),
]


@pytest.mark.parametrize(
    ("path", "pointer"),
    [(path + value, pointer) for path, pointer, values in NUMERIC_QUERIES for value in values],
)
async def test_numbers_in_a_query_are_ascii_digits_only(
    client: TestClient, admin: dict[str, str], path: str, pointer: str
) -> None:
    """As strict as the Last-Event-ID header, for every number a query takes."""
    async with client.get(path, headers=admin) as response:
        assert response.status == 422  # before reading: a 200 would be an endless stream
        error = await error_of(response, 422, "validation")
    assert pointer in [d["pointer"] for d in error["details"]]


# (A header's value has no spaces around it: HTTP strips them.)
@pytest.mark.parametrize("value", [v for v in NOT_DIGITS if "%" not in v and v == v.strip()])
async def test_the_last_event_id_header_refuses_what_its_query_refuses(
    client: TestClient, admin: dict[str, str], value: str
) -> None:
    async with client.get("/api/v1/events", headers={**admin, "Last-Event-ID": value}) as response:
        assert response.status == 422
        error = await error_of(response, 422, "validation")
    assert "/headers/Last-Event-ID" in [d["pointer"] for d in error["details"]]


async def test_numbers_in_their_plain_spelling_are_taken(
    client: TestClient, admin: dict[str, str]
) -> None:
    for path in (
        "/api/v1/status/wf-1?limit=500",
        "/admin/dead-letters?limit=1&before=1764412345.1234567",
        "/admin/dead-letters?before=0",
    ):
        assert (await client.get(path, headers=admin)).status == 200, path


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/workflow/status/" + "a" * 33),
        ("GET", "/api/v1/workflow/status/" + "A" * 32),
        ("DELETE", "/api/v1/workflow/" + "0" * 31),
        ("GET", "/api/v1/status/" + "w" * 257),
        ("GET", "/api/v1/status/a%01b"),
        ("POST", "/api/v1/callbacks/" + "w" * 257),
        ("GET", "/api/v1/subscriptions/" + "s" * 300),
        ("DELETE", "/api/v1/subscriptions/not-an-id"),
        ("POST", "/admin/dead-letters/" + "d" * 300 + "/replay"),
        ("POST", "/admin/dead-letters/cb_xyz/replay"),
        ("POST", "/admin/jobs/" + "f" * 64 + "/retry"),
    ],
)
async def test_path_ids_of_the_wrong_shape_are_404(
    client: TestClient, admin: dict[str, str], method: str, path: str
) -> None:
    response = await client.request(method, path, headers=admin)
    error = await error_of(response, 404, "not_found")
    assert "no such endpoint" in error["message"]


@pytest.mark.parametrize(
    "field",
    ["workflow_id", "execution_id", "node", "idempotency_key"],
)
async def test_ids_in_a_body_have_no_control_characters(
    client: TestClient, auth: dict[str, str], field: str
) -> None:
    body = {"processing_type": "echo", "items": [{"json": {}}], field: "a\nb"}
    response = await client.post("/api/v1/workflow/execute", json=body, headers=auth)
    error = await error_of(response, 422, "validation")
    assert [d["pointer"] for d in error["details"]] == [f"/{field}"]


async def test_every_parameter_is_bounded_in_the_document(client: TestClient) -> None:
    """Each path, query and header parameter: a string with a length bound (maxLength or a
    pattern of bounded length), a number with a minimum and a maximum, or an enum."""
    document = await (await client.get("/api/v1/openapi.json")).json()
    seen = set()
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for parameter in operation["parameters"]:
                where = f"{method.upper()} {path} {parameter['in']} {parameter['name']}"
                seen.add((parameter["in"], parameter["name"]))
                for schema in _alternatives(parameter["schema"]):
                    assert _bounded(schema), f"{where}: unbounded {schema}"
    assert ("header", "Last-Event-ID") in seen


def _alternatives(schema: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in schema.get("anyOf", [schema]) if s.get("type") != "null"]


def _bounded(schema: dict[str, Any]) -> bool:
    if "enum" in schema or "const" in schema:
        return True
    if schema.get("type") == "string":
        return "maxLength" in schema or (
            "pattern" in schema and schema["pattern"].endswith("$") and "+" not in schema["pattern"]
        )
    if schema.get("type") in ("integer", "number"):
        low = "minimum" in schema or "exclusiveMinimum" in schema
        high = "maximum" in schema or "exclusiveMaximum" in schema
        return low and high
    return False
