"""The served OpenAPI 3.1 document: valid, in step with the router, and true of real answers."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from aiohttp.test_utils import TestClient
from openapi_spec_validator import validate
from pydantic import ValidationError

from bridge.api.models import EventsQuery
from bridge.app import create_app
from bridge.events import EVENT_TYPES
from bridge.keys import OPENAPI
from bridge.settings import Settings
from tests.conftest import token
from tests.daemon import ROOT

EXECUTE = "/api/v1/workflow/execute"
LINT = ROOT / "tools" / "openapi-lint"

CONSOLE = "/admin/ui"


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
        if route.resource is not None
        # The console's HTML pages are not the API (docs/operations.md describes them).
        and not route.resource.canonical.startswith(CONSOLE)
    }
    assert documented == served
    for path, operations in spec["paths"].items():
        if "get" in operations:  # HEAD: the GET's answers, without their bodies
            head = operations["head"]
            assert head["responses"].keys() == operations["get"]["responses"].keys(), path
            assert head["security"] == operations["get"]["security"], path
            assert all("content" not in answer for answer in head["responses"].values()), path


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, methods in spec["paths"].items()
        for method, operation in methods.items()
    ]


async def test_servers_license_tags_and_a_description_on_every_operation(
    client: TestClient,
) -> None:
    spec = await spec_of(client)
    assert spec["servers"] == [{"url": "/", "description": spec["servers"][0]["description"]}]
    assert spec["info"]["license"] == {"name": "MIT", "identifier": "MIT"}
    declared = {tag["name"]: tag.get("description") for tag in spec["tags"]}
    assert all(declared.values())
    used = set()
    for method, path, operation in operations(spec):
        assert operation["description"] and operation["summary"], (method, path)
        used.update(operation["tags"])
    assert used == set(declared)


async def test_every_operation_lists_the_4xx_it_may_answer(client: TestClient) -> None:
    """400 for a request that is not valid HTTP/1.1 (the edge answers it before any route),
    401 and 403 behind a credential, 429 where a limit refuses, 503 where draining does."""
    spec = await spec_of(client)
    for method, path, operation in operations(spec):
        statuses = set(operation["responses"])
        assert "400" in statuses, (method, path)
        if operation["security"]:
            assert {"401", "403"} <= statuses, (method, path)
    events = spec["paths"]["/api/v1/events"]["get"]["responses"]
    assert {"422", "429"} <= set(events)
    assert "503" in spec["paths"]["/ready"]["get"]["responses"]
    assert "Retry-After" in events["429"]["headers"]


async def test_the_schema_says_what_the_api_refuses(client: TestClient) -> None:
    """What a fuzzer found the document could not say: URLs are absolute URIs, an event type
    is one of the known ones, and callback_url goes only with mode async."""
    schemas = (await spec_of(client))["components"]["schemas"]
    assert schemas["SubscriptionRequest"]["properties"]["url"]["format"] == "uri"
    assert schemas["Subscription"]["properties"]["url"]["format"] == "uri"
    assert schemas["SubscriptionRequest"]["properties"]["events"]["items"]["enum"] == list(
        EVENT_TYPES
    )
    for body in ("ExecuteRequest", "HybridRequest"):
        url = schemas[body]["properties"]["callback_url"]["anyOf"][0]
        assert url["format"] == "uri", body


async def test_the_event_type_filter_is_documented_as_the_code_reads_it(
    client: TestClient,
) -> None:
    spec = await spec_of(client)
    parameter = next(
        p for p in spec["paths"]["/api/v1/events"]["get"]["parameters"] if p["name"] == "type"
    )
    schema = parameter["schema"]["anyOf"][0]
    first, second = EVENT_TYPES[0], EVENT_TYPES[-1]
    samples = [
        *EVENT_TYPES,
        f"{first},{second}",
        "",
        f"{first},",
        f",{first},,{second}",
        "nope",
        f"{first},nope",
        f"{first}x",
        f"x{first}",
        f"{first} ",
        ",".join([first] * 40),  # longer than 512 characters
    ]
    for sample in samples:
        try:
            EventsQuery.model_validate({"type": sample})
            accepted = True
        except ValidationError:
            accepted = False
        documented = jsonschema.Draft202012Validator(schema).is_valid(sample)
        assert documented == accepted, sample


async def test_a_callback_goes_only_with_mode_async(
    client: TestClient, auth: dict[str, str]
) -> None:
    """callback_url, and callback_method (docs/api.md: "async only"), with mode async alone: the
    schema and the API say the same."""
    spec = await spec_of(client)
    url = "https://n8n.example.com/webhook-waiting/1"
    for mode, callback, valid in [
        ("async", {"callback_url": url}, True),
        ("async", {"callback_url": url, "callback_method": "GET"}, True),
        (None, {"callback_url": url}, False),  # sync by default
        ("sync", {"callback_url": url}, False),
        ("sync", {"callback_method": "GET"}, False),
        (None, {"callback_method": "POST"}, False),
        ("sync", {}, True),
        (None, {}, True),
        ("sync", {"callback_url": None}, True),  # no callback: null is no URL
    ]:
        body: dict[str, Any] = {"processing_type": "echo", "items": [{"json": {}}], **callback}
        if mode is not None:
            body["mode"] = mode
        schema = {"components": spec["components"], "$ref": "#/components/schemas/ExecuteRequest"}
        assert jsonschema.Draft202012Validator(schema).is_valid(body) == valid, body
        answer = await client.post(EXECUTE, json=body, headers=auth)  # and the API says the same
        assert (answer.status == 422) != valid, (body, answer.status)


# Query values a client may send: numbers in every spelling (exponents, padding, signs, the
# fuzzer's subnormal floats), empty strings, text of every length and kind.
QUERY_SAMPLES = [
    *("", "0", "1", "5", "05", "0005", "500", "501", "-1", "+5", " 5", "5 ", "5_0", "5.0"),
    *("5.", ".5", "0.5", "00.5", "1e2", "1E2", "5e-324", "2.2250738585e-313", "1e400"),
    *("1764412345.1234567", "99999999999.5", "100000000000", "253402300800", "0x5"),
    *("9223372036854775807", "9223372036854775808", "0" * 19 + "5", "nan", "inf", "-0"),
    *("Infinity", "\u0665", "abc", "A-_z", "a b", "a\nb", "a\x7fb", "é", "x" * 300, "x" * 600),
    *("workflow.failed", "workflow.failed,", ",", "workflow.failed,nope", "wf-1"),
]
# A JSON number's text, and an integer's as clients write one (no `-0`): how a client writes a
# number-typed parameter.
JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?").fullmatch
JSON_INTEGER = re.compile(r"0|-?[1-9][0-9]*").fullmatch


def query_value_conforms(schema: dict[str, Any], raw: str) -> bool:
    """Whether a query value conforms to its parameter's schema, read as OpenAPI clients and
    fuzzers write values: a string as it is, an integer or a number as its JSON text (so `1.0`
    and `1e2` are no integer's spelling, while `5e-324` is a number's)."""
    for option in schema.get("anyOf", [schema]):
        kind = option.get("type")
        value: Any = raw
        if kind in ("integer", "number"):
            spelled = JSON_INTEGER if kind == "integer" else JSON_NUMBER
            if not spelled(raw):
                continue
            value = json.loads(raw)
        elif kind != "string":
            continue  # null: a query cannot send one (leave the parameter out)
        if jsonschema.Draft202012Validator(option).is_valid(value):
            return True
    return False


@pytest.mark.parametrize("backend", ["embedded"])
async def test_every_query_and_header_parameter_takes_what_its_schema_takes_and_no_more(
    client: TestClient, settings: Settings, auth: dict[str, str]
) -> None:
    """Each query (and header) parameter of the document, alone, with each sample: a value its
    schema takes is answered 200, any other 422 pointing at it (schemathesis found `before` typed `number`
    but `5e-324` refused, and `cursor=` matching its pattern but refused). The one rule a schema
    cannot say: a cursor must be one the API handed out."""
    for _ in range(2):
        await client.post(
            EXECUTE,
            json={"processing_type": "echo", "items": [], "workflow_id": "wf-1"},
            headers=auth,
        )
    first = await (await client.get("/api/v1/status/wf-1?limit=1", headers=auth)).json()
    cursor = first["next_cursor"]
    admin = {"Authorization": f"Bearer {token(settings, 'admin')}"}
    spec = await spec_of(client)
    wrong, checked = [], 0
    for method, path, operation in operations(spec):
        for parameter in operation["parameters"]:
            where = parameter["in"]
            if method != "get" or where == "path":  # (HEAD: the GET's, without a body)
                continue
            name = parameter["name"]
            samples = [*QUERY_SAMPLES, *([cursor] if name == "cursor" else [])]
            if where == "header":  # what a header can carry: HTTP strips spaces around it
                samples = [raw for raw in samples if re.fullmatch(r"[\x21-\x7e]+", raw)]
            for raw in samples:
                expected = 200 if query_value_conforms(parameter["schema"], raw) else 422
                if name == "cursor" and raw not in ("", cursor):
                    expected = 422  # never handed out (an empty one is the schema's to refuse)
                url = path.replace("{workflow_id}", "wf-1")
                params = {name: raw} if where == "query" else {}
                headers = {**admin, **({name: raw} if where == "header" else {})}
                async with client.get(url, params=params, headers=headers) as response:
                    got: Any = response.status
                    if got == 422:
                        details = (await response.json())["error"]["details"]
                        got = (422, [detail["pointer"] for detail in details])
                pointer = f"/{'query' if where == 'query' else 'headers'}/{name}"
                if got != (expected if expected == 200 else (422, [pointer])):
                    wrong.append((method, path, name, raw[:20], got))
                checked += 1
    assert wrong == [], "\n".join(map(str, wrong))
    assert checked > 300


def redocly() -> Path:
    binary = LINT / "node_modules" / ".bin" / "redocly"
    if not binary.exists():
        raise RuntimeError(f"{binary} is missing: scripts/test.sh installs it (npm ci in {LINT})")
    return binary


def lint(spec: dict[str, Any], folder: Path) -> subprocess.CompletedProcess[str]:
    document = folder / "openapi.json"
    document.write_text(json.dumps(spec))
    return subprocess.run(
        [str(redocly()), "lint", "--config", str(LINT / "redocly.yaml"), str(document)],
        cwd=folder,
        env={**os.environ, "REDOCLY_TELEMETRY": "off", "REDOCLY_SUPPRESS_UPDATE_NOTICE": "true"},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("backend", ["embedded"])
def test_redocly_lint_finds_nothing(settings: Settings, tmp_path: Path) -> None:
    """Every rule of Redocly CLI, as errors, but those tools/openapi-lint/redocly.yaml turns
    off with a reason: no error, no warning, in the document a daemon with these settings
    serves. Negative control: without its license, the same document fails."""
    spec = create_app(settings)[OPENAPI]
    linted = lint(spec, tmp_path)
    assert linted.returncode == 0, linted.stdout + linted.stderr
    assert "Woohoo! Your API description is valid." in linted.stdout + linted.stderr
    info = {key: value for key, value in spec["info"].items() if key != "license"}
    unlicensed = lint({**spec, "info": info}, tmp_path)
    assert unlicensed.returncode != 0
    assert "info-license" in unlicensed.stdout + unlicensed.stderr


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
