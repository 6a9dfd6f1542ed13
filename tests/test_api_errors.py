"""Bad input gets a clear error in the shared body, and changes nothing."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient
from pydantic import BaseModel

from bridge import subscriptions
from bridge.api import models
from bridge.app import create_app
from bridge.logs import ConsoleFormatter, JsonFormatter
from bridge.settings import Settings
from tests.conftest import ClientFactory, token

EXECUTE = "/api/v1/workflow/execute"
ERROR_KEYS = {"code", "message", "description", "http_code", "retryable", "trace_id", "details"}


async def error_of(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    body = await response.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert set(error) == ERROR_KEYS
    assert error["code"] == code
    assert error["http_code"] == status
    assert error["trace_id"] == response.headers["X-Trace-ID"]
    return error


async def jobs_of(client: TestClient, auth: dict[str, str]) -> list[Any]:
    page = await client.get("/api/v1/status/wf-bad", headers=auth)
    return list((await page.json())["jobs"])


async def test_malformed_json_is_400(client: TestClient, auth: dict[str, str]) -> None:
    response = await client.post(
        EXECUTE,
        data=b'{"processing_type": "echo", "items": [',
        headers={**auth, "Content-Type": "application/json"},
    )
    error = await error_of(response, 400, "validation")
    assert error["message"].startswith("the body is not valid JSON")


async def test_invalid_utf8_is_400(client: TestClient, auth: dict[str, str]) -> None:
    response = await client.post(
        EXECUTE,
        data=b'{"processing_type": "\xff\xfe"}',
        headers={**auth, "Content-Type": "application/json"},
    )
    await error_of(response, 400, "validation")


async def test_empty_body_is_400(client: TestClient, auth: dict[str, str]) -> None:
    response = await client.post(
        EXECUTE, data=b"", headers={**auth, "Content-Type": "application/json"}
    )
    await error_of(response, 400, "validation")


async def test_json_that_is_not_an_object_is_422(client: TestClient, auth: dict[str, str]) -> None:
    response = await client.post(EXECUTE, json=[1, 2], headers=auth)
    await error_of(response, 422, "validation")


async def test_wrong_content_type_is_415(client: TestClient, auth: dict[str, str]) -> None:
    response = await client.post(
        EXECUTE, data=b"processing_type=echo", headers={**auth, "Content-Type": "text/plain"}
    )
    error = await error_of(response, 415, "unsupported_media_type")
    assert "application/json" in error["message"]


async def test_non_utf8_charset_is_415(client: TestClient, auth: dict[str, str]) -> None:
    response = await client.post(
        EXECUTE, data=b"{}", headers={**auth, "Content-Type": "application/json; charset=latin-1"}
    )
    await error_of(response, 415, "unsupported_media_type")


async def test_body_over_the_limit_is_413(make_client: ClientFactory, settings: Settings) -> None:
    client = await make_client(max_body_bytes=2048)
    headers = {"Authorization": f"Bearer {token(settings)}"}
    items = [{"json": {"pad": "x" * 1000}} for _ in range(5)]
    response = await client.post(
        EXECUTE, json={"processing_type": "echo", "items": items}, headers=headers
    )
    error = await error_of(response, 413, "payload_too_large")
    assert "BRIDGE_MAX_BODY_BYTES (2048 bytes)" in error["message"]


async def test_a_huge_body_is_refused_before_it_is_read(
    client: TestClient, settings: Settings
) -> None:
    """Announce 1 GiB, send a few bytes: the answer comes at once, the rest is never awaited."""
    assert client.server.host is not None and client.server.port is not None
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        writer.write(
            f"POST {EXECUTE} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {token(settings)}\r\nContent-Length: {1 << 30}\r\n\r\n"
            '{"items": ['.encode()
        )
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 10)
        assert status_line.startswith(b"HTTP/1.1 413"), status_line
    finally:
        writer.close()


async def test_a_chunked_body_is_cut_off_at_the_limit(
    make_client: ClientFactory, settings: Settings
) -> None:
    client = await make_client(max_body_bytes=4096)

    async def chunks() -> Any:
        for _ in range(100):
            yield b" " * 1024

    response = await client.post(
        EXECUTE,
        data=chunks(),
        headers={"Authorization": f"Bearer {token(settings)}", "Content-Type": "application/json"},
    )
    await error_of(response, 413, "payload_too_large")


async def test_too_many_items_is_413(make_client: ClientFactory, settings: Settings) -> None:
    client = await make_client(max_items=3)
    headers = {"Authorization": f"Bearer {token(settings)}"}
    body = {"processing_type": "echo", "items": [{"json": {}}] * 4}
    error = await error_of(
        await client.post(EXECUTE, json=body, headers=headers), 413, "payload_too_large"
    )
    assert "BRIDGE_MAX_ITEMS (3)" in error["message"]


async def test_unknown_processing_type_names_the_valid_ones(
    client: TestClient, auth: dict[str, str]
) -> None:
    body = {"processing_type": "nope", "items": [], "workflow_id": "wf-bad"}
    error = await error_of(await client.post(EXECUTE, json=body, headers=auth), 422, "validation")
    assert "'nope'" in error["message"]
    assert "echo" in error["message"] and "repeat" in error["message"]
    assert await jobs_of(client, auth) == []


async def test_schema_violations_have_a_json_pointer_each(
    client: TestClient, auth: dict[str, str]
) -> None:
    body = {
        "processing_type": "echo",
        "items": [{"json": {}}, {"json": "not an object"}],
        "priority": 42,
        "mode": "later",
        "surprise": 1,
        "workflow_id": "wf-bad",
    }
    error = await error_of(await client.post(EXECUTE, json=body, headers=auth), 422, "validation")
    messages = {problem["pointer"]: problem["message"] for problem in error["details"]}
    assert {"/items/1/json", "/priority", "/mode", "/surprise"} <= messages.keys()
    assert messages["/items/1/json"] == "Input should be a JSON object"
    assert await jobs_of(client, auth) == []


async def test_hybrid_records_must_be_objects(client: TestClient, auth: dict[str, str]) -> None:
    body = {"processing_type": "echo", "data": [{"n": 1}, [1], "text"], "workflow_id": "wf-bad"}
    response = await client.post("/api/v1/hybrid-processing", json=body, headers=auth)
    error = await error_of(response, 422, "validation")
    assert error["details"] == [
        {"pointer": "/data/1", "message": "Input should be a JSON object"},
        {"pointer": "/data/2", "message": "Input should be a JSON object"},
    ]
    assert await jobs_of(client, auth) == []


async def test_missing_field_is_named(client: TestClient, auth: dict[str, str]) -> None:
    error = await error_of(
        await client.post(EXECUTE, json={"items": []}, headers=auth), 422, "validation"
    )
    assert error["details"] == [{"pointer": "/processing_type", "message": "Field required"}]


async def test_bad_parameters_point_into_parameters(
    client: TestClient, auth: dict[str, str]
) -> None:
    body = {"processing_type": "repeat", "items": [], "parameters": {"times": "many"}}
    error = await error_of(await client.post(EXECUTE, json=body, headers=auth), 422, "validation")
    assert error["details"][0]["pointer"] == "/parameters/times"
    echo = {"processing_type": "echo", "items": [], "parameters": {"unexpected": 1}}
    error = await error_of(await client.post(EXECUTE, json=echo, headers=auth), 422, "validation")
    assert error["details"][0]["pointer"] == "/parameters/unexpected"


async def test_binary_that_is_not_base64_is_422_with_its_pointer(
    client: TestClient, auth: dict[str, str]
) -> None:
    items = [
        {
            "json": {},
            "binary": {"my/file": {"data": "%%% not base64 %%%", "mimeType": "text/plain"}},
        }
    ]
    body = {"processing_type": "echo", "items": items}
    error = await error_of(await client.post(EXECUTE, json=body, headers=auth), 422, "validation")
    assert error["details"] == [
        {"pointer": "/items/0/binary/my~1file/data", "message": "binary data is not valid base64"}
    ]


async def test_binary_over_its_limit_is_422(make_client: ClientFactory, settings: Settings) -> None:
    client = await make_client(max_binary_bytes=10)
    items = [{"json": {}, "binary": {"f": {"data": base64.b64encode(b"x" * 11).decode()}}}]
    response = await client.post(
        EXECUTE,
        json={"processing_type": "echo", "items": items},
        headers={"Authorization": f"Bearer {token(settings)}"},
    )
    error = await error_of(response, 422, "validation")
    assert "BRIDGE_MAX_BINARY_BYTES" in error["details"][0]["message"]


async def test_unknown_job_is_404(client: TestClient, auth: dict[str, str]) -> None:
    response = await client.get("/api/v1/workflow/status/no-such-job", headers=auth)
    await error_of(response, 404, "not_found")


async def test_unknown_route_and_wrong_method_use_the_error_body(client: TestClient) -> None:
    await error_of(await client.get("/nope"), 404, "not_found")
    response = await client.delete("/health")
    error = await error_of(response, 405, "validation")
    assert "GET" in response.headers["Allow"]
    assert "DELETE" in error["message"]


async def test_bad_pagination_query_is_422(client: TestClient, auth: dict[str, str]) -> None:
    response = await client.get("/api/v1/status/wf?limit=0", headers=auth)
    error = await error_of(response, 422, "validation")
    assert error["details"][0]["pointer"] == "/query/limit"
    response = await client.get("/api/v1/status/wf?cursor=garbage", headers=auth)
    error = await error_of(response, 422, "validation")
    assert error["details"][0]["pointer"] == "/query/cursor"


async def test_a_pattern_is_said_in_words(client: TestClient, auth: dict[str, str]) -> None:
    """A field's pattern is said as what the field takes: a client is not shown a regex."""
    body = {"processing_type": "echo", "items": [{"json": {}}], "workflow_id": "wf\x00bad"}
    error = await error_of(await client.post(EXECUTE, json=body, headers=auth), 422, "validation")
    assert error["message"] == "/workflow_id: must contain no control characters"
    response = await client.get("/api/v1/status/wf?cursor=not%20a%20cursor", headers=auth)
    error = await error_of(response, 422, "validation")
    assert error["details"][0]["pointer"] == "/query/cursor"
    assert "pattern" not in error["message"] and "next_cursor" in error["message"]
    assert await jobs_of(client, auth) == []


def test_every_pattern_a_request_model_checks_has_its_words() -> None:
    """What `body.validation_error` says for each pattern of a model the API reads."""
    for model in request_models():
        for pattern in patterns(model.__pydantic_core_schema__):
            assert pattern in models.PATTERN_WORDS, f"{model.__name__}: no words for {pattern!r}"


def request_models() -> list[type[BaseModel]]:
    modules = (models, subscriptions)
    found = {
        value
        for module in modules
        for value in vars(module).values()
        if isinstance(value, type) and issubclass(value, BaseModel) and value is not BaseModel
    }
    return sorted(found, key=lambda model: model.__name__)


def patterns(schema: Any) -> set[str]:
    """Every string pattern in a pydantic core schema."""
    if isinstance(schema, dict):
        found = (
            {schema["pattern"]} if schema.get("type") == "str" and "pattern" in schema else set()
        )
        return found.union(*(patterns(value) for value in schema.values()))
    if isinstance(schema, list | tuple):
        return set().union(*(patterns(value) for value in schema))
    return set()


async def test_true_and_false_are_not_numbers(client: TestClient, auth: dict[str, str]) -> None:
    for body in (
        {"processing_type": "echo", "items": [], "priority": False},
        {"processing_type": "echo", "items": [], "timeout_s": True},
        {"processing_type": "echo", "items": [{"json": {}, "pairedItem": {"item": True}}]},
    ):
        error = await error_of(
            await client.post(EXECUTE, json=body, headers=auth), 422, "validation"
        )
        assert "not true or false" in error["message"]


async def test_an_unhandled_error_is_logged_without_header_values(
    make_settings: Any, aiohttp_client: Any, caplog: Any
) -> None:
    leaked = "tok-LEAKED-0123456789abcdef"

    async def boom(request: web.Request) -> web.Response:
        raise RuntimeError(f"could not use {request.headers['Authorization']}")

    app = create_app(make_settings())
    app.router.add_get("/boom", boom)
    client = await aiohttp_client(app)
    response = await client.get("/boom", headers={"Authorization": f"Bearer {leaked}"})
    error = await error_of(response, 500, "internal")
    assert leaked not in str(error) and "could not use" not in str(error)
    records = [r for r in caplog.records if r.exc_info]
    assert records
    for formatter in (JsonFormatter(None), ConsoleFormatter(None)):
        for record in records:
            text = formatter.format(record)
            assert "RuntimeError" in text and "Traceback" in text
            assert leaked not in text
