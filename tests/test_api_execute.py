"""POST /api/v1/workflow/execute and /api/v1/hybrid-processing, against a running app."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from aiohttp.test_utils import TestClient

from bridge.keys import REGISTRY, RUNNER, SETTINGS
from tests.plugins import sample

EXECUTE = "/api/v1/workflow/execute"


def body(processing_type: str, items: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"processing_type": processing_type, "items": items, **extra}


async def test_echo_returns_items_paired_with_their_inputs(
    client: TestClient, auth: dict[str, str]
) -> None:
    items = [{"json": {"n": 1, "f": 1.0, "none": None}}, {"json": {"nested": {"a": [1, 2.5]}}}]
    response = await client.post(EXECUTE, json=body("echo", items), headers=auth)
    assert response.status == 200
    answer = await response.json()
    assert answer["status"] == "completed"
    assert answer["errors"] == []
    assert answer["items"] == [
        {"json": {"n": 1, "f": 1.0, "none": None}, "pairedItem": {"item": 0}},
        {"json": {"nested": {"a": [1, 2.5]}}, "pairedItem": {"item": 1}},
    ]
    assert isinstance(answer["items"][0]["json"]["f"], float)
    assert isinstance(answer["items"][0]["json"]["n"], int)
    assert len(answer["job_id"]) == 32
    assert answer["duration_ms"] >= 0
    # what a node needs to name a failure in the bridge's logs, beside the answer's items
    assert answer["trace_id"] == response.headers["X-Trace-ID"]


async def test_integers_keep_64_bits_and_larger_ones_are_read_as_floats(
    client: TestClient, auth: dict[str, str]
) -> None:
    """What docs/api.md says of numbers: the parser keeps integers from -2**63 to 2**64-1."""
    text = b'{"a": -9223372036854775808, "b": 18446744073709551615, "c": 18446744073709551616}'
    raw = b'{"processing_type": "echo", "items": [{"json": ' + text + b"}]}"
    headers = {**auth, "Content-Type": "application/json"}
    response = await client.post(EXECUTE, data=raw, headers=headers)
    assert response.status == 200
    out = (await response.json())["items"][0]["json"]
    assert out["a"] == -(2**63) and out["b"] == 2**64 - 1
    assert isinstance(out["c"], float)


async def test_one_input_may_give_zero_one_or_many_outputs(
    client: TestClient, auth: dict[str, str]
) -> None:
    for times, expected in ((0, []), (1, [0]), (3, [0, 1, 2])):
        response = await client.post(
            EXECUTE,
            json=body("repeat", [{"json": {"k": "a"}}], parameters={"times": times}),
            headers=auth,
        )
        items = (await response.json())["items"]
        assert [item["json"]["copy"] for item in items] == expected
        assert all(item["pairedItem"] == {"item": 0} for item in items)


async def test_item_errors_are_reported_by_index_and_others_go_on(
    client: TestClient, auth: dict[str, str]
) -> None:
    items = [{"json": {"n": n}} for n in range(5)]
    response = await client.post(EXECUTE, json=body("fail_odd", items), headers=auth)
    assert response.status == 200
    answer = await response.json()
    assert [item["pairedItem"]["item"] for item in answer["items"]] == [0, 2, 4]
    assert answer["errors"] == [
        {"index": 1, "code": "processor_error", "message": "ValueError: odd number 1"},
        {"index": 3, "code": "processor_error", "message": "ValueError: odd number 3"},
    ]


async def test_batch_processor_sees_all_items_and_fails_single_ones(
    client: TestClient, auth: dict[str, str]
) -> None:
    items = [{"json": {}}, {"json": {"bad": True}}, {"json": {}}]
    answer = await (
        await client.post(EXECUTE, json=body("count_batch", items), headers=auth)
    ).json()
    assert [i["json"] for i in answer["items"]] == [{"i": 0, "of": 3}, {"i": 2, "of": 3}]
    assert answer["errors"] == [
        {"index": 1, "code": "processor_error", "message": "ValueError: bad item"}
    ]


async def test_batch_processor_with_wrong_count_fails_the_job(
    client: TestClient, auth: dict[str, str]
) -> None:
    response = await client.post(EXECUTE, json=body("wrong_batch", [{"json": {}}]), headers=auth)
    assert response.status == 500
    error = (await response.json())["error"]
    assert error["code"] == "processor_error"
    assert "one result per item" in error["message"]
    job = await client.get(f"/api/v1/workflow/status/{error['details']['job_id']}", headers=auth)
    assert (await job.json())["status"] == "failed"


async def test_a_crashing_batch_is_a_processor_error_without_stack_trace(
    client: TestClient, auth: dict[str, str]
) -> None:
    response = await client.post(EXECUTE, json=body("crash", [{"json": {}}]), headers=auth)
    assert response.status == 500
    error = (await response.json())["error"]
    assert error["code"] == "processor_error"
    assert error["message"] == "processor 'crash' failed: RuntimeError: the whole batch broke"
    assert "Traceback" not in await response.text()


async def test_unserialisable_output_fails_only_its_item(
    client: TestClient, auth: dict[str, str]
) -> None:
    items = [{"json": {}}, {"json": {"bad": True}}]
    answer = await (
        await client.post(EXECUTE, json=body("unserialisable", items), headers=auth)
    ).json()
    assert answer["items"] == [{"json": {"ok": True}, "pairedItem": {"item": 0}}]
    assert answer["errors"][0]["index"] == 1
    assert answer["errors"][0]["message"] == "output: Type is not JSON serializable: object"


async def test_binary_data_round_trips(client: TestClient, auth: dict[str, str]) -> None:
    data = base64.b64encode(b"hello file").decode()
    items = [
        {
            "json": {},
            "binary": {"file": {"data": data, "mimeType": "text/plain", "fileName": "a.txt"}},
        }
    ]
    answer = await (await client.post(EXECUTE, json=body("upper_file", items), headers=auth)).json()
    out = answer["items"][0]
    assert out["json"] == {"size": 10}
    assert base64.b64decode(out["binary"]["file"]["data"]) == b"HELLO FILE"
    assert out["binary"]["file"]["mimeType"] == "text/plain"
    assert out["binary"]["file"]["fileName"] == "a.txt"


async def test_cpu_bound_processor_runs_in_another_process(make_client: Any, settings: Any) -> None:
    import os

    from tests.conftest import token

    client = await make_client(cpu_executor="process", process_workers=2)
    headers = {"Authorization": f"Bearer {token(settings)}"}
    items = [{"json": {"x": x}} for x in range(200)]
    answer = await (await client.post(EXECUTE, json=body("square", items), headers=headers)).json()
    assert [i["json"]["square"] for i in answer["items"]] == [x * x for x in range(200)]
    assert [i["pairedItem"]["item"] for i in answer["items"]] == list(range(200))
    assert os.getpid() not in {i["json"]["pid"] for i in answer["items"]}


async def test_a_blocking_processor_does_not_stall_other_requests(
    client: TestClient, auth: dict[str, str]
) -> None:
    sample.GATE.clear()
    sample.ENTERED.clear()
    blocked = asyncio.create_task(
        client.post(EXECUTE, json=body("blocking", [{"json": {}}]), headers=auth)
    )
    try:
        assert await asyncio.to_thread(sample.ENTERED.wait, 30), "the processor never started"
        # The processor now holds a worker thread; the loop must still answer.
        for _ in range(3):
            health = await client.get("/health")
            assert health.status == 200
        echo = await client.post(EXECUTE, json=body("echo", [{"json": {"x": 1}}]), headers=auth)
        assert echo.status == 200
        assert not blocked.done()
    finally:
        sample.GATE.set()
    response = await blocked
    assert (await response.json())["items"][0]["json"] == {"released": True}


async def test_timeout_gives_504_and_a_failed_job(client: TestClient, auth: dict[str, str]) -> None:
    response = await client.post(
        EXECUTE,
        json=body("sleep", [{"json": {}}], parameters={"seconds": 5}, timeout_s=0.05),
        headers=auth,
    )
    assert response.status == 504
    error = (await response.json())["error"]
    assert error["code"] == "timeout"
    assert error["retryable"] is True
    job = await (
        await client.get(f"/api/v1/workflow/status/{error['details']['job_id']}", headers=auth)
    ).json()
    assert job["status"] == "failed"
    assert job["error"]["code"] == "timeout"


async def test_sync_loop_stops_taking_items_after_its_timeout(
    client: TestClient, auth: dict[str, str]
) -> None:
    items = [{"json": {}} for _ in range(50)]
    response = await client.post(
        EXECUTE,
        json=body("sleep_sync", items, parameters={"seconds": 0.02}, timeout_s=0.1),
        headers=auth,
    )
    assert response.status == 504


async def test_hybrid_processing_takes_and_gives_plain_records(
    client: TestClient, auth: dict[str, str]
) -> None:
    response = await client.post(
        "/api/v1/hybrid-processing",
        json={"processing_type": "fail_odd", "data": [{"n": 2}, {"n": 3}]},
        headers=auth,
    )
    assert response.status == 200
    answer = await response.json()
    assert answer["data"] == [{"n": 2}]
    assert answer["errors"][0]["index"] == 1


async def test_processors_are_listed_with_their_parameter_schemas(
    client: TestClient, auth: dict[str, str]
) -> None:
    answer = await (await client.get("/api/v1/processors", headers=auth)).json()
    by_name = {p["name"]: p for p in answer["processors"]}
    assert {"echo", "repeat", "square"} <= set(by_name)
    assert by_name["repeat"]["parameters"]["properties"]["times"]["type"] == "integer"
    assert by_name["repeat"]["description"].startswith("One input gives")
    assert by_name["square"]["options"]["cpu_bound"] is True
    assert by_name["echo"]["options"]["is_async"] is True


async def test_server_timing_names_each_phase(client: TestClient, auth: dict[str, str]) -> None:
    response = await client.post(EXECUTE, json=body("echo", [{"json": {}}]), headers=auth)
    phases = dict(part.split(";dur=") for part in response.headers["Server-Timing"].split(", "))
    assert list(phases) == ["decode", "convert", "run", "encode", "total"]
    assert all(float(value) >= 0 for value in phases.values())
    assert float(phases["total"]) >= float(phases["run"])


async def test_numbers_are_read_as_javascript_reads_them(
    client: TestClient, auth: dict[str, str]
) -> None:
    """An integer beyond 64 bits becomes a float, as in n8n, instead of breaking a processor
    (found by the API fuzzer: `validation` failed with 500 on one)."""
    raw = b'{"processing_type": "%s", "items": [{"json": {"n": -126125037547160304424583168}}]}'
    for processor in ("echo", "validation"):
        response = await client.post(
            EXECUTE,
            data=raw % processor.encode(),
            headers={**auth, "Content-Type": "application/json"},
        )
        assert response.status == 200, await response.text()
        answer = await response.json()
        assert answer["errors"] == [] and answer["items"][0]["json"]["n"] == -1.261250375471603e26


async def test_a_timeout_is_lowered_to_the_processors_limit(client: TestClient) -> None:
    """docs/api.md: a request's timeout_s above the processor's limit (or the default for its
    mode) is lowered to it."""
    runner, registry = client.app[RUNNER], client.app[REGISTRY]
    settings = client.app[SETTINGS]
    echo = registry.get("echo")
    assert runner.timeout_for(echo, 86_400, "sync") == settings.sync_timeout_s
    assert runner.timeout_for(echo, 86_400, "async") == settings.job_timeout_s
    assert runner.timeout_for(echo, 5, "sync") == 5


async def test_a_callback_is_posted_or_got_and_nothing_else(
    client: TestClient, auth: dict[str, str]
) -> None:
    """callback_method is POST or GET (n8n's Wait node resumes on those), in the document too."""
    for method in ("PUT", "PATCH", "DELETE", "post", "get"):
        extra = {"mode": "async", "callback_url": "http://127.0.0.1:9/x", "callback_method": method}
        response = await client.post(EXECUTE, json=body("echo", [{}], **extra), headers=auth)
        assert response.status == 422, method
        details = (await response.json())["error"]["details"]
        assert details[0]["pointer"] == "/callback_method"
    spec = await (await client.get("/api/v1/openapi.json")).json()
    request = spec["components"]["schemas"]["ExecuteRequest"]["properties"]["callback_method"]
    assert request["enum"] == ["POST", "GET"]
