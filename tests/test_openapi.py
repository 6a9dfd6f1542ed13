"""The served OpenAPI 3.1 document: valid, in step with the router, and true of real answers."""

from __future__ import annotations

from typing import Any

import jsonschema
from aiohttp.test_utils import TestClient
from openapi_spec_validator import validate

EXECUTE = "/api/v1/workflow/execute"


async def spec_of(client: TestClient) -> dict[str, Any]:
    response = await client.get("/api/v1/openapi.json")
    assert response.status == 200
    return await response.json()  # type: ignore[no-any-return]


async def test_the_document_is_valid_openapi_3_1(client: TestClient) -> None:
    spec = await spec_of(client)
    assert spec["openapi"] == "3.1.0"
    validate(spec)


async def test_every_route_is_documented_and_nothing_else(client: TestClient) -> None:
    spec = await spec_of(client)
    documented = {(method.upper(), path) for path, ops in spec["paths"].items() for method in ops}
    served = {
        (route.method, route.resource.canonical)
        for route in client.app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    assert documented == served


async def test_protected_routes_declare_security(client: TestClient) -> None:
    spec = await spec_of(client)
    execute = spec["paths"][EXECUTE]["post"]
    assert execute["security"] == [{"bearerAuth": []}, {"apiKey": []}]
    assert {"200", "400", "401", "403", "413", "415", "422", "202", "429"} <= set(
        execute["responses"]
    )
    assert spec["paths"]["/health"]["get"]["security"] == []


PYDANTIC_ONLY = {"gt", "ge", "lt", "le", "min_length", "max_length", "multiple_of"}


def stray_constraints(node: Any, where: str = "") -> list[str]:
    """Keys that are pydantic's constraint names rather than JSON Schema's: pydantic writes them
    when a constraint sits on an `X | None` field, and no client or fuzzer understands them."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in PYDANTIC_ONLY and not where.endswith("/properties"):
                found.append(f"{where}/{key}")
            found += stray_constraints(value, f"{where}/{key}")
    elif isinstance(node, list):
        for n, value in enumerate(node):
            found += stray_constraints(value, f"{where}/{n}")
    return found


async def test_every_constraint_is_written_in_json_schema_terms(client: TestClient) -> None:
    spec = await (await client.get("/api/v1/openapi.json")).json()
    assert stray_constraints(spec) == []
    timeout = spec["components"]["schemas"]["ExecuteRequest"]["properties"]["timeout_s"]
    assert {"type": "number", "exclusiveMinimum": 0, "maximum": 86400} in timeout["anyOf"]


def check(spec: dict[str, Any], path: str, method: str, status: int, body: Any) -> None:
    content = spec["paths"][path][method]["responses"][str(status)]["content"]
    schema = {"components": spec["components"], **content["application/json"]["schema"]}
    jsonschema.Draft202012Validator(schema).validate(body)


async def test_real_answers_match_the_document(client: TestClient, auth: dict[str, str]) -> None:
    spec = await spec_of(client)
    item = {"json": {"a": 1}, "binary": {"f": {"data": "aGk=", "mimeType": "text/plain"}}}
    executed = await client.post(
        EXECUTE,
        json={"processing_type": "echo", "items": [item], "workflow_id": "wf-doc"},
        headers=auth,
    )
    answer = await executed.json()
    check(spec, EXECUTE, "post", 200, answer)
    job = await client.get(f"/api/v1/workflow/status/{answer['job_id']}", headers=auth)
    check(spec, "/api/v1/workflow/status/{job_id}", "get", 200, await job.json())
    page = await client.get("/api/v1/status/wf-doc", headers=auth)
    check(spec, "/api/v1/status/{workflow_id}", "get", 200, await page.json())
    listed = await client.get("/api/v1/processors", headers=auth)
    check(spec, "/api/v1/processors", "get", 200, await listed.json())
    check(spec, "/health", "get", 200, await (await client.get("/health")).json())
    check(spec, "/ready", "get", 200, await (await client.get("/ready")).json())
    hybrid = await client.post(
        "/api/v1/hybrid-processing",
        json={"processing_type": "echo", "data": [{"x": 1}]},
        headers=auth,
    )
    check(spec, "/api/v1/hybrid-processing", "post", 200, await hybrid.json())
    bad = await client.post(EXECUTE, json={"items": []}, headers=auth)
    check(spec, EXECUTE, "post", 422, await bad.json())
    unauthenticated = await client.post(EXECUTE, json={})
    check(spec, EXECUTE, "post", 401, await unauthenticated.json())


async def test_processing_type_lists_this_daemons_processors(client: TestClient) -> None:
    schemas = (await spec_of(client))["components"]["schemas"]
    for body in ("ExecuteRequest", "HybridRequest"):
        names = schemas[body]["properties"]["processing_type"]["enum"]
        assert {"echo", "template_render", "repeat", "square"} <= set(names)
