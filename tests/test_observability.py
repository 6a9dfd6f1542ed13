"""Trace ids, JSON logs, metrics."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import orjson
import pytest
from aiohttp.test_utils import TestClient

from bridge import logs
from bridge.ids import new_id


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """Capture what the JSON handler writes, as the daemon configures it."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter("blue"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield stream
    root.removeHandler(handler)
    root.setLevel(old_level)


def parsed(stream: io.StringIO) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


async def test_a_valid_trace_id_is_kept_and_a_bad_one_replaced(client: TestClient) -> None:
    kept = await client.get("/health", headers={"X-Trace-ID": "abc-123_DEF.456"})
    assert kept.headers["X-Trace-ID"] == "abc-123_DEF.456"
    for bad in ("short", "has spaces in it", "x" * 200, "new\\nline-injection"):
        replaced = await client.get("/health", headers={"X-Trace-ID": bad})
        assert replaced.headers["X-Trace-ID"] != bad
        assert len(replaced.headers["X-Trace-ID"]) == 32
    error = await client.get("/nope")
    assert len(error.headers["X-Trace-ID"]) == 32


async def test_every_log_line_of_a_request_carries_its_ids(
    make_client: object, auth: dict[str, str], log_lines: io.StringIO
) -> None:
    client = await make_client(access_log=True)  # type: ignore[operator]
    body = {"processing_type": "log_item", "items": [{"json": {}}], "workflow_id": "wf-log"}
    response = await client.post(
        "/api/v1/workflow/execute", json=body, headers={**auth, "X-Trace-ID": "trace-log-test-1"}
    )
    job_id = (await response.json())["job_id"]
    lines = [line for line in parsed(log_lines) if line.get("trace_id") == "trace-log-test-1"]
    messages = {line["msg"] for line in lines}
    assert "processing item 0" in messages  # from the processor, in a worker thread
    assert "POST /api/v1/workflow/execute 200" in messages  # the access log
    for line in lines:
        assert line["job_id"] == job_id
        assert line["workflow_id"] == "wf-log"
        assert line["color"] == "blue"
        assert {"ts", "level", "msg"} <= set(line)


async def test_a_crash_is_logged_with_its_trace_and_hidden_from_the_client(
    client: TestClient, auth: dict[str, str], log_lines: io.StringIO
) -> None:
    response = await client.post(
        "/api/v1/workflow/execute",
        json={"processing_type": "crash", "items": [{"json": {}}]},
        headers={**auth, "X-Trace-ID": "trace-crash-0001"},
    )
    assert "Traceback" not in await response.text()
    logged = [line for line in parsed(log_lines) if line.get("trace_id") == "trace-crash-0001"]
    assert any("Traceback" in str(line.get("exc", "")) for line in logged)


def test_console_format_is_one_readable_line() -> None:
    record = logging.makeLogRecord(
        {
            "msg": "hello %s",
            "args": ("world",),
            "levelname": "INFO",
            "name": "bridge",
            "trace_id": "t-1",
        }
    )
    text = logs.ConsoleFormatter("green").format(record)
    assert "INFO" in text and "[green] bridge: hello world" in text and "trace_id=t-1" in text


async def test_metrics_count_requests_by_route_and_processor(
    client: TestClient, auth: dict[str, str]
) -> None:
    await client.post(
        "/api/v1/workflow/execute",
        json={"processing_type": "fail_odd", "items": [{"json": {"n": 1}}, {"json": {"n": 2}}]},
        headers=auth,
    )
    await client.get(f"/api/v1/workflow/status/{new_id()}", headers=auth)
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.content_type == "text/plain"
    text = await response.text()
    for expected in (
        'bridge_http_requests_total{method="POST",route="/api/v1/workflow/execute",status="200"} 1.0',
        'bridge_http_requests_total{method="GET",route="/api/v1/workflow/status/{job_id}",status="404"} 1.0',
        'bridge_http_request_duration_seconds_bucket{le="0.005",method="POST",route="/api/v1/workflow/execute"}',
        'bridge_processor_duration_seconds_count{outcome="ok",processor="fail_odd"} 1.0',
        'bridge_processor_items_total{outcome="error",processor="fail_odd"} 1.0',
        'bridge_processor_items_total{outcome="ok",processor="fail_odd"} 1.0',
        'bridge_jobs_total{mode="sync",processor="fail_odd",status="completed"} 1.0',
        "bridge_http_requests_in_flight 1.0",
        'bridge_build_info{color="",version="0.1.0"} 1.0',
    ):
        assert expected in text, expected


async def test_unmatched_paths_share_one_label(client: TestClient) -> None:
    for path in ("/a", "/b", "/c"):
        await client.get(path)
    text = await (await client.get("/metrics")).text()
    assert 'route="unmatched",status="404"} 3.0' in text


async def test_ready_and_health(client: TestClient) -> None:
    from bridge.keys import LIFECYCLE

    health = await (await client.get("/health")).json()
    assert health["status"] == "ok"
    ready = await client.get("/ready")
    assert ready.status == 200
    assert (await ready.json()) == {"status": "ready", "checks": {"accepting": "ok", "store": "ok"}}
    client.app[LIFECYCLE].drain("test")
    draining = await client.get("/ready")
    assert draining.status == 503
    assert (await draining.json())["checks"]["accepting"] == "draining"


async def test_an_event_stream_carries_its_trace_id(
    client: TestClient, auth: dict[str, str]
) -> None:
    """A stream's head is sent before its handler returns: the trace id is in it all the same."""
    async with client.get(
        "/api/v1/events", headers={**auth, "X-Trace-ID": "trace-of-a-stream"}
    ) as stream:
        assert stream.status == 200
        assert stream.headers["X-Trace-ID"] == "trace-of-a-stream"
