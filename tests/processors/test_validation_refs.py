"""`validation`'s JSON Schemas reach nothing outside themselves: a reference that does not resolve
inside the schema is refused at parameter validation (422 with the keyword's pointer), before any
item is checked — a real loopback canary server shows that no request was made."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tests.conftest import pool_calls_end

EXECUTE = "/api/v1/workflow/execute"
REMOTE_SCHEMA = {"type": "integer"}


@dataclass
class Canary:
    """A real HTTP server that serves a schema, a redirect to it, and a tarpit; it records every
    request it gets, so a test can show that none came."""

    server: TestServer | None = None
    requests: list[str] = field(default_factory=list)

    def url(self, path: str) -> str:
        assert self.server is not None
        return str(self.server.make_url(path))

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request.path)
        if request.path == "/redirect":
            raise web.HTTPFound(self.url("/schema.json"))
        if request.path == "/tarpit":
            await asyncio.sleep(3600)  # holds whoever asks until the server closes
        return web.json_response(REMOTE_SCHEMA)


@pytest.fixture
async def canary() -> AsyncIterator[Canary]:
    canary = Canary()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", canary.handle)
    canary.server = TestServer(app, host="127.0.0.1")
    await canary.server.start_server()
    yield canary
    await canary.server.close()


async def validate(
    client: TestClient, auth: dict[str, str], schema: Any, items: list[Any] | None = None
) -> Any:
    body = {
        "processing_type": "validation",
        "items": items if items is not None else [{"json": {"a": "x"}}],
        "parameters": {"schema": schema},
        "timeout_s": 5,
    }
    return await client.post(EXECUTE, json=body, headers=auth)


async def refused(response: Any, pointer: str, words: str) -> None:
    assert response.status == 422, await response.text()
    error = (await response.json())["error"]
    assert error["code"] == "validation"
    problem = error["details"][0]
    assert problem["pointer"] == pointer, problem
    assert words in problem["message"], problem


@pytest.mark.parametrize(
    ("make_schema", "pointer"),
    [
        pytest.param(
            lambda c: {"properties": {"a": {"$ref": c.url("/schema.json")}}},
            "/parameters/schema/properties/a/$ref",
            id="direct",
        ),
        pytest.param(
            lambda c: {"properties": {"a": {"$ref": c.url("/redirect")}}},
            "/parameters/schema/properties/a/$ref",
            id="through-a-302",
        ),
        pytest.param(
            lambda c: {"$id": c.url("/base/"), "properties": {"a": {"$ref": "schema.json"}}},
            "/parameters/schema/properties/a/$ref",
            id="relative-under-a-remote-id",
        ),
        pytest.param(
            lambda c: {"properties": {"a": {"$dynamicRef": c.url("/schema.json") + "#meta"}}},
            "/parameters/schema/properties/a/$dynamicRef",
            id="dynamic-ref",
        ),
        pytest.param(
            lambda c: {"allOf": [{"$ref": c.url("/tarpit")}]},
            "/parameters/schema/allOf/0/$ref",
            id="tarpit",
        ),
        pytest.param(
            lambda c: {"$defs": {"x": {"$id": c.url("/x/"), "$ref": "../schema.json"}}},
            "/parameters/schema/$defs/x/$ref",
            id="relative-under-an-embedded-remote-id",
        ),
    ],
)
async def test_a_remote_reference_is_refused_and_never_fetched(
    client: TestClient, auth: dict[str, str], canary: Canary, make_schema: Any, pointer: str
) -> None:
    schema = make_schema(canary)
    started = time.monotonic()
    response = await validate(client, auth, schema)
    await refused(response, pointer, "outside the schema")
    assert time.monotonic() - started < 3, "a tarpit must not hold the request"
    await asyncio.sleep(0.2)  # a request on its way would have arrived by now
    assert canary.requests == []
    assert await pool_calls_end(client)


async def test_schema_naming_another_dialect_is_refused(
    client: TestClient, auth: dict[str, str], canary: Canary
) -> None:
    response = await validate(client, auth, {"$schema": canary.url("/schema.json")})
    await refused(response, "/parameters/schema/$schema", "Draft 2020-12")
    draft7 = "http://json-schema.org/draft-07/schema#"
    response = await validate(client, auth, {"$schema": draft7})
    await refused(response, "/parameters/schema/$schema", "Draft 2020-12")
    nested = {"properties": {"a": {"$schema": "https://json-schema.org/draft/2020-12/schema"}}}
    response = await validate(client, auth, nested)
    await refused(response, "/parameters/schema/properties/a/$schema", "only at the root")
    assert canary.requests == []


async def test_a_reference_to_a_metaschema_is_refused(
    client: TestClient, auth: dict[str, str]
) -> None:
    """Metaschemas are in jsonschema's own registry (nothing is fetched), but they would validate
    with jsonschema's own validator class, outside the bridge's bounds."""
    schema = {"properties": {"a": {"$ref": "https://json-schema.org/draft/2020-12/schema"}}}
    response = await validate(client, auth, schema)
    await refused(response, "/parameters/schema/properties/a/$ref", "outside the schema")


@pytest.mark.parametrize(
    ("schema", "pointer"),
    [
        (
            {"properties": {"a": {"$ref": "#/$defs/missing"}}},
            "/parameters/schema/properties/a/$ref",
        ),
        (
            {"properties": {"a": {"$ref": "#no-such-anchor"}}},
            "/parameters/schema/properties/a/$ref",
        ),
        ({"not": {"$dynamicRef": "#/nowhere"}}, "/parameters/schema/not/$dynamicRef"),
    ],
)
async def test_an_unresolvable_local_reference_is_a_clear_422(
    client: TestClient, auth: dict[str, str], schema: Any, pointer: str
) -> None:
    await refused(await validate(client, auth, schema), pointer, "cannot be resolved")


async def test_local_references_keep_working(client: TestClient, auth: dict[str, str]) -> None:
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://example.com/person.json",
        "$defs": {
            "age": {"$anchor": "age", "type": "integer", "minimum": 0},
            "name": {"$id": "name.json", "type": "string", "minLength": 1},
        },
        "properties": {
            "age": {"$ref": "#age"},
            "name": {"$ref": "name.json"},
            "also": {"$ref": "#/$defs/age"},
            "self": {"$ref": "#"},
            "$ref": {"const": {"$ref": "http://127.0.0.1:9/not-a-reference"}},
        },
    }
    items = [
        {"json": {"age": 3, "name": "Ada", "self": {"also": 1}}},
        {"json": {"age": -1, "name": "", "self": {"also": "x"}}},
    ]
    response = await validate(client, auth, schema, items)
    assert response.status == 200, await response.text()
    out = [i["json"]["validation"] for i in (await response.json())["items"]]
    assert out[0] == {"valid": True, "errors": []}
    assert {e["pointer"] for e in out[1]["errors"]} == {"/age", "/name", "/self/also"}


async def test_dynamic_references_resolve_inside_the_schema(
    client: TestClient, auth: dict[str, str]
) -> None:
    schema = {
        "$dynamicAnchor": "node",
        "type": "object",
        "properties": {"next": {"$dynamicRef": "#node"}, "n": {"type": "integer"}},
    }
    items = [{"json": {"n": 1, "next": {"n": 2}}}, {"json": {"next": {"n": "x"}}}]
    response = await validate(client, auth, schema, items)
    assert response.status == 200, await response.text()
    out = [i["json"]["validation"] for i in (await response.json())["items"]]
    assert out[0]["valid"] is True
    assert out[1]["errors"][0]["pointer"] == "/next/n"
