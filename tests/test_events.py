"""The event bus through the API: SSE with resume, webhook subscriptions, incoming callbacks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient
from standardwebhooks.webhooks import Webhook

from bridge.auth import mint_token
from bridge.errors import MAX_ERROR_CHARS
from bridge.events import Event, EventBus
from bridge.keys import EVENTS, SUBSCRIPTIONS
from bridge.metrics import Metrics
from bridge.settings import Settings
from tests.conftest import API_KEY, ClientFactory, token
from tests.webhook_target import Target, json_of

EXECUTE = "/api/v1/workflow/execute"
SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def admin(settings: Settings) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(settings, 'admin')}"}


async def run_job(client: TestClient, auth: dict[str, str], workflow_id: str) -> str:
    body = {
        "processing_type": "echo",
        "mode": "async",
        "items": [{"json": {}}],
        "workflow_id": workflow_id,
    }
    answer = await (await client.post(EXECUTE, json=body, headers=auth)).json()
    return str(answer["job_id"])


async def read_until(
    response: Any, done: Callable[[list[dict[str, Any]]], bool], timeout: float = 10
) -> list[dict[str, Any]]:
    """Parse SSE events from a streaming response until `done(events)`; each line must come
    within `timeout` seconds."""
    events: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    while not done(events):
        line = (await asyncio.wait_for(response.content.readline(), timeout)).decode()
        line = line.rstrip("\n")
        if not line:
            if "data" in current:
                events.append(current)
            current = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            current[name] = orjson.loads(value) if name == "data" else value
    return events


async def read_events(response: Any, count: int) -> list[dict[str, Any]]:
    """Parse `count` SSE events from a streaming response."""
    return await read_until(response, lambda events: len(events) >= count)


async def test_sse_streams_filtered_events_and_resumes(
    client: TestClient, auth: dict[str, str]
) -> None:
    url = "/api/v1/events?workflow_id=wf-sse&type=workflow.queued,workflow.completed"
    async with client.get(url, headers=auth) as stream:
        assert stream.headers["Content-Type"] == "text/event-stream"
        await run_job(client, auth, "wf-other")
        job_id = await run_job(client, auth, "wf-sse")
        events = await read_events(stream, 2)
    assert [e["event"] for e in events] == ["workflow.queued", "workflow.completed"]
    assert all(e["data"]["job_id"] == job_id for e in events)
    assert int(events[0]["id"]) < int(events[1]["id"])
    # Reconnect with the first event's id: the second comes again from the log.
    headers = {**auth, "Last-Event-ID": events[0]["id"]}
    async with client.get(url, headers=headers) as again:
        [replayed] = await read_events(again, 1)
    assert replayed["id"] == events[1]["id"] and replayed["data"]["job_id"] == job_id


async def test_sse_refuses_unknown_types_and_bad_ids(
    client: TestClient, auth: dict[str, str]
) -> None:
    bad_type = await client.get("/api/v1/events?type=workflow.exploded", headers=auth)
    assert bad_type.status == 422
    assert "unknown event type 'workflow.exploded'" in (await bad_type.json())["error"]["message"]
    bad_id = await client.get("/api/v1/events", headers={**auth, "Last-Event-ID": "abc"})
    assert bad_id.status == 422


async def test_a_slow_listener_never_blocks_the_publisher(settings: Settings) -> None:
    bus, metrics = _bus()
    slow = bus.listen(lambda event: True)
    for _ in range(1500):  # more than the listener's buffer; nobody reads it
        bus.publish("workflow.queued", workflow_id="wf")
    assert slow.ended.is_set() and slow not in bus.listeners  # let go at its 1001st event
    assert metrics.events_dropped._value.get() == 1001


async def test_subscriptions_get_signed_event_webhooks(
    make_client: ClientFactory, settings: Settings, auth: dict[str, str], target: Target
) -> None:
    client = await make_client(callback_secret=SECRET)
    created = await client.post(
        "/api/v1/subscriptions",
        json={
            "url": target.url("/trigger"),
            "events": ["workflow.completed"],
            "workflow_id": "wf-s",
        },
        headers=admin(settings),
    )
    assert created.status == 201
    subscription = await created.json()
    assert created.headers["Location"] == f"/api/v1/subscriptions/{subscription['id']}"
    fetched = await client.get(created.headers["Location"], headers=admin(settings))
    assert (await fetched.json())["url"] == target.url("/trigger")
    await run_job(client, auth, "wf-not-this-one")
    job_id = await run_job(client, auth, "wf-s")
    [call] = await target.wait_for(1)
    Webhook(SECRET).verify(call.body, call.headers)
    event = json_of(call)
    assert event["type"] == "workflow.completed" and event["job_id"] == job_id
    gone = await client.delete(created.headers["Location"], headers=admin(settings))
    assert gone.status == 200
    assert (await client.get(created.headers["Location"], headers=admin(settings))).status == 404
    await run_job(client, auth, "wf-s")
    await asyncio.sleep(0.2)
    assert len(target.received) == 1


async def test_subscriptions_need_admin_and_an_http_url(
    client: TestClient, settings: Settings, auth: dict[str, str]
) -> None:
    body = {"url": "http://127.0.0.1:9/x", "events": ["workflow.failed"]}
    assert (await client.post("/api/v1/subscriptions", json=body, headers=auth)).status == 403
    bad = {"url": "gopher://x", "events": ["workflow.failed"]}
    refused = await client.post("/api/v1/subscriptions", json=bad, headers=admin(settings))
    assert refused.status == 422
    assert (await refused.json())["error"]["details"][0]["pointer"] == "/url"


def signed(body: bytes, webhook_id: str, secret: str = SECRET) -> dict[str, str]:
    from datetime import UTC, datetime

    now = int(time.time())
    signature = Webhook(secret).sign(webhook_id, datetime.fromtimestamp(now, UTC), body.decode())
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(now),
        "webhook-signature": signature,
        "Content-Type": "application/json",
    }


async def test_incoming_callbacks_are_verified_and_applied_once(
    make_client: ClientFactory, auth: dict[str, str]
) -> None:
    client = await make_client(callback_secret=SECRET)
    job_id = await run_job(client, auth, "wf-in")
    body = orjson.dumps({"status": "success", "job_id": job_id, "execution_id": "991"})
    url = "/api/v1/callbacks/wf-in"
    async with client.get(
        "/api/v1/events?workflow_id=wf-in&type=workflow.completed&last_event_id=0", headers=auth
    ) as stream:
        first = await client.post(url, data=body, headers=signed(body, "msg_1"))
        assert await first.json() == {"accepted": True, "duplicate": False}
        repeat = await client.post(url, data=body, headers=signed(body, "msg_1"))
        assert await repeat.json() == {"accepted": True, "duplicate": True}
        events = await read_events(stream, 2)  # the job's own completion, then n8n's report
    assert events[1]["data"]["data"]["source"] == "n8n"
    assert events[1]["data"]["execution_id"] == "991"
    status = await (await client.get(f"/api/v1/workflow/status/{job_id}", headers=auth)).json()
    assert status["reported"]["status"] == "success"


async def test_a_signed_report_replayed_to_another_workflows_path_is_a_duplicate(
    make_client: ClientFactory, auth: dict[str, str]
) -> None:
    """The signature covers the webhook-id and the body, not the path: one signed report is
    applied once, whichever workflow's path it is sent to again."""
    client = await make_client(callback_secret=SECRET)
    body = orjson.dumps({"status": "failed", "execution_id": "77", "error": {"message": "x"}})
    first = await client.post("/api/v1/callbacks/wf-legit", data=body, headers=signed(body, "m1"))
    assert await first.json() == {"accepted": True, "duplicate": False}
    for victim in ("wf-victim-1", "wf-victim-2"):
        again = await client.post(
            f"/api/v1/callbacks/{victim}", data=body, headers=signed(body, "m1")
        )
        assert await again.json() == {"accepted": True, "duplicate": True}, victim


async def test_a_report_that_comes_while_its_job_runs_outlives_the_jobs_end(
    make_client: ClientFactory, auth: dict[str, str]
) -> None:
    """The job's worker saves its record when the job ends; the report n8n sent meanwhile is
    kept all the same (it was lost, once in a while, in CI)."""
    client = await make_client(callback_secret=SECRET)
    body = {
        "processing_type": "sleep",
        "mode": "async",
        "items": [{"json": {}}],
        "workflow_id": "wf-in",
        "parameters": {"seconds": 0.5},
    }
    job_id = (await (await client.post(EXECUTE, json=body, headers=auth)).json())["job_id"]
    status_url = f"/api/v1/workflow/status/{job_id}"
    for _ in range(200):
        status = await (await client.get(status_url, headers=auth)).json()
        if status["status"] == "running":
            break
        await asyncio.sleep(0.01)
    report = orjson.dumps({"status": "success", "job_id": job_id, "execution_id": "992"})
    answer = await client.post(
        "/api/v1/callbacks/wf-in", data=report, headers=signed(report, "msg_run")
    )
    assert answer.status == 200
    for _ in range(300):
        status = await (await client.get(status_url, headers=auth)).json()
        if status["status"] == "completed":
            break
        await asyncio.sleep(0.01)
    assert status["status"] == "completed"
    assert status["reported"] == {
        "status": "success",
        "job_id": job_id,
        "execution_id": "992",
        "error": None,
        "data": None,
    }
    page = await (await client.get("/api/v1/status/wf-in", headers=auth)).json()
    assert page["jobs"][0]["reported"] == status["reported"]


@pytest.mark.parametrize(
    "headers",
    [
        {"webhook-id": "m", "webhook-timestamp": "1", "webhook-signature": "v1,AAAA"},
        {"webhook-id": "m", "webhook-timestamp": str(int(time.time())), "webhook-signature": "v1"},
        {},
    ],
    ids=["stale-and-wrong", "malformed", "no-credential"],
)
async def test_incoming_callbacks_without_a_valid_signature_are_refused(
    make_client: ClientFactory, headers: dict[str, str]
) -> None:
    client = await make_client(callback_secret=SECRET)
    response = await client.post(
        "/api/v1/callbacks/wf",
        data=b'{"status": "success"}',
        headers={**headers, "Content-Type": "application/json"},
    )
    assert response.status == 401
    assert (await response.json())["error"]["code"] == "auth"


async def _reported_events(client: TestClient, after: int, marker: str) -> list[dict[str, Any]]:
    """The reports' `workflow.*` events published after `after`, up to the one whose execution_id is
    `marker` (published last: every event before it is in the log by then)."""
    bus = client.app[EVENTS]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        events = [
            e.model_dump(mode="json")
            for e in await bus.since(after, types=("workflow.failed", "workflow.completed"))
            if e.data.get("source") == "n8n"  # not the jobs' own
        ]
        if any(e["execution_id"] == marker for e in events):
            return events
        await asyncio.sleep(0.05)
    raise AssertionError(f"the report {marker!r} was not published")


@pytest.mark.parametrize("caller", ["signature", "JWT", "API key", "limited JWT"])
async def test_a_report_may_name_only_a_job_of_its_workflow(
    make_client: ClientFactory, settings: Settings, caller: str
) -> None:
    """A report under /callbacks/wf-a naming a job of wf-b, or no job the bridge knows, is
    refused (422 at /job_id, the same words for both) whoever sends it: nothing recorded on the
    job, no event published claiming it, its webhook-id not used up."""
    client = await make_client(callback_secret=SECRET)
    everyone = admin(settings)
    theirs = await run_job(client, everyone, "wf-b")
    mine = await run_job(client, everyone, "wf-a")
    after = client.app[EVENTS].last_id

    def headers(body: bytes, webhook_id: str) -> dict[str, str]:
        if caller == "signature":
            return signed(body, webhook_id)
        credential = {
            "JWT": {"Authorization": f"Bearer {token(settings, 'execute')}"},
            "API key": {"X-API-Key": API_KEY},
            "limited JWT": {
                "Authorization": f"Bearer {mint_token(settings, ['execute'], 300, workflows=['wf-a'])}"
            },
        }[caller]
        return {**credential, "webhook-id": webhook_id, "Content-Type": "application/json"}

    messages = set()
    for job_id in (theirs, "f" * 32):
        body = orjson.dumps({"status": "failed", "job_id": job_id, "error": "INJECTED"})
        refused = await client.post(
            "/api/v1/callbacks/wf-a", data=body, headers=headers(body, "m1")
        )
        assert refused.status == 422, await refused.text()
        error = (await refused.json())["error"]
        assert [d["pointer"] for d in error["details"]] == ["/job_id"]
        messages.add(error["message"].replace(job_id, "<id>"))
    assert len(messages) == 1  # another's job and an unknown one: not told apart
    # Its own job, with the same webhook-id: taken (the refused ones did not use it up).
    body = orjson.dumps({"status": "success", "job_id": mine, "execution_id": "last"})
    taken = await client.post("/api/v1/callbacks/wf-a", data=body, headers=headers(body, "m1"))
    assert await taken.json() == {"accepted": True, "duplicate": False}
    events = await _reported_events(client, after, "last")
    assert [(e["job_id"], e["workflow_id"]) for e in events] == [(mine, "wf-a")]
    status = await client.get(f"/api/v1/workflow/status/{theirs}", headers=everyone)
    assert (await status.json())["reported"] is None


async def test_a_report_without_a_job_is_taken(make_client: ClientFactory) -> None:
    client = await make_client(callback_secret=SECRET)
    body = orjson.dumps({"status": "failed", "execution_id": "no-job"})
    answer = await client.post("/api/v1/callbacks/wf-a", data=body, headers=signed(body, "m2"))
    assert await answer.json() == {"accepted": True, "duplicate": False}
    events = await _reported_events(client, 0, "no-job")
    assert [(e["job_id"], e["workflow_id"]) for e in events] == [(None, "wf-a")]


async def test_a_webhook_id_with_a_token_is_a_duplicate_only_within_its_workflow(
    make_client: ClientFactory, settings: Settings
) -> None:
    """Whoever may report (with a token) for one workflow cannot use up the webhook-id of
    another's report."""
    client = await make_client(callback_secret=SECRET)
    for workflow, expected in (("wf-a", False), ("wf-b", False), ("wf-a", True)):
        limited = mint_token(settings, ["execute"], 300, workflows=[workflow])
        answer = await client.post(
            f"/api/v1/callbacks/{workflow}",
            json={"status": "success", "execution_id": f"x-{workflow}"},
            headers={"Authorization": f"Bearer {limited}", "webhook-id": "msg-shared"},
        )
        assert await answer.json() == {"accepted": True, "duplicate": expected}, workflow


@pytest.mark.parametrize("field", ["data", "error"])
async def test_an_oversize_report_is_refused_and_changes_nothing(
    make_client: ClientFactory, settings: Settings, field: str
) -> None:
    """A report's `data` or `error` past BRIDGE_MAX_REPORT_BYTES (as JSON) is a 413 at its
    pointer: nothing recorded on the job, no event published, its webhook-id not used up."""
    client = await make_client(max_report_bytes=4096)
    everyone = admin(settings)
    job_id = await run_job(client, everyone, "wf-big")
    after = client.app[EVENTS].last_id
    headers = {**everyone, "webhook-id": "big-1", "Content-Type": "application/json"}
    body = {"status": "failed", "job_id": job_id, field: {"text": "x" * 4096}}
    refused = await client.post("/api/v1/callbacks/wf-big", json=body, headers=headers)
    assert refused.status == 413, await refused.text()
    error = (await refused.json())["error"]
    assert error["code"] == "payload_too_large"
    assert [d["pointer"] for d in error["details"]] == [f"/{field}"]
    assert "4096" in error["message"]
    # The most that fits is taken, with the same webhook-id.
    body[field] = {"text": "x" * (4096 - 20)}
    body["execution_id"] = "fits"
    taken = await client.post("/api/v1/callbacks/wf-big", json=body, headers=headers)
    assert await taken.json() == {"accepted": True, "duplicate": False}
    events = await _reported_events(client, after, "fits")
    assert [e["execution_id"] for e in events] == ["fits"]


@pytest.mark.parametrize("field", ["data", "error"])
async def test_a_report_nested_deeper_than_can_be_written_is_refused(
    make_client: ClientFactory, settings: Settings, field: str, caplog: pytest.LogCaptureFixture
) -> None:
    """JSON the parser takes may be nested deeper than the bridge can write (255 levels): such a
    report was a 500 with a traceback; it is a 422 at its pointer, and nothing is published."""
    client = await make_client()
    everyone = admin(settings)
    after = client.app[EVENTS].last_id
    headers = {**everyone, "Content-Type": "application/json"}
    raw = f'{{"status": "failed", "execution_id": "deep", "{field}": '
    raw += '{"a": ' * 300 + "1" + "}" * 300 + "}"
    refused = await client.post("/api/v1/callbacks/wf-deep", data=raw, headers=headers)
    assert refused.status == 422, await refused.text()
    error = (await refused.json())["error"]
    assert [d["pointer"] for d in error["details"]] == [f"/{field}"]
    assert "nested" in error["message"]
    assert client.app[EVENTS].last_id == after  # nothing published
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


@pytest.mark.parametrize("processor", ["quote_error", "quote_crash"])
async def test_a_long_error_text_is_cut_short_in_jobs_and_events(
    client: TestClient, settings: Settings, processor: str
) -> None:
    """A processor's error text may quote what a caller sent: a job's error, and each item's,
    keep at most MAX_ERROR_CHARS of it, with a marker saying how much was cut."""
    everyone = admin(settings)
    body = {
        "processing_type": processor,
        "mode": "async",
        "items": [{"json": {"message": "m" * 200_000}}],
        "workflow_id": "wf-long-error",
    }
    url = "/api/v1/events?workflow_id=wf-long-error&type=workflow.failed,workflow.completed"
    async with client.get(url, headers=everyone) as stream:
        answer = await client.post(EXECUTE, json=body, headers=everyone)
        assert answer.status == 202, await answer.text()
        [event] = await read_events(stream, 1)
    assert MAX_ERROR_CHARS == 2000  # as docs/api.md and docs/security.md say
    assert len(orjson.dumps(event["data"])) < MAX_ERROR_CHARS + 1000
    job_url = f"/api/v1/workflow/status/{event['data']['job_id']}"
    job = await (await client.get(job_url, headers=everyone)).json()
    messages = [job["error"]["message"]] if job["error"] else []
    messages += [e["message"] for e in job["errors"]]
    assert messages
    for message in messages:
        assert len(message) < MAX_ERROR_CHARS + 100
        assert message.endswith("characters cut]"), message[-80:]


def _bus() -> tuple[EventBus, Metrics]:
    """A bus on a log that commits each event at once."""

    class Log:
        last_id = 0
        deliver: Callable[[Event, bool], None]

        def append(self, type: Any, fields: dict[str, Any]) -> str:
            self.last_id += 1
            self.deliver(Event(id=self.last_id, type=type, **fields), True)
            return str(self.last_id)

        def withdraw(self, key: str) -> None:
            raise AssertionError("committed already")

        def start(self, deliver: Callable[[Event, bool], None], wanted: Any) -> None:
            self.deliver = deliver

        async def since(self, *args: Any, **kwargs: Any) -> list[Any]:
            return []

    log, metrics = Log(), Metrics(None)
    bus = EventBus(log, metrics)
    log.start(bus.deliver, bus.interested)
    return bus, metrics


async def test_a_listener_is_bounded_by_bytes_and_let_go_when_it_falls_behind() -> None:
    """Past its byte budget a listener ends, leaves the bus and its buffer is emptied — and
    every listener is handed the same encoded frame: a large event is not copied per reader."""
    bus, metrics = _bus()
    slow = bus.listen(lambda event: True, max_bytes=100_000)
    fast = bus.listen(lambda event: True, max_bytes=10_000_000)
    for _ in range(20):  # 20 x 10 KB: twice the slow listener's budget
        bus.publish("workflow.completed", workflow_id="wf", data={"data": "d" * 10_000})
    assert slow.ended.is_set() and not fast.ended.is_set()
    assert slow not in bus.listeners and slow.queue.empty() and slow.pending_bytes == 0
    assert metrics.events_dropped._value.get() >= 10
    # Every listener is handed the same encoded frame.
    other = bus.listen(lambda event: True)
    bus.publish("workflow.completed", workflow_id="wf", data={"data": "d" * 10_000})
    shared = other.queue.get_nowait()
    assert shared.frame.startswith(b"id: 21\nevent: workflow.completed\ndata: {")
    assert [fast.queue.get_nowait() for _ in range(21)][-1].frame is shared.frame


async def test_a_closed_sse_client_leaves_nothing_behind(
    client: TestClient, auth: dict[str, str]
) -> None:
    bus = client.app[EVENTS]
    for _ in range(3):
        async with client.get("/api/v1/events", headers=auth) as stream:
            await stream.content.readline()  # the stream has started: its listener is in
            assert len(bus.listeners) == 1
        assert await _streams_end(bus)  # closed: its listener and buffer are gone


async def _streams_end(bus: EventBus) -> bool:
    """Whether every stream's listener is gone within 10 s (a closed client's, within ~1 s)."""
    deadline = time.monotonic() + 10
    while bus.listeners and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return not bus.listeners


async def test_event_streams_are_bounded_in_number(
    make_client: ClientFactory, auth: dict[str, str]
) -> None:
    client = await make_client(sse_max_streams=2)
    async with (
        client.get("/api/v1/events", headers=auth) as first,
        client.get("/api/v1/events", headers=auth) as second,
    ):
        assert first.status == second.status == 200
        third = await client.get("/api/v1/events", headers=auth)
        assert third.status == 429, await third.text()
        error = (await third.json())["error"]
        assert error["code"] == "overloaded" and "BRIDGE_SSE_MAX_STREAMS" in error["message"]
        assert third.headers["Retry-After"]
    assert await _streams_end(client.app[EVENTS])
    async with client.get("/api/v1/events", headers=auth) as again:  # a slot freed: served
        assert again.status == 200


@pytest.mark.parametrize(
    "body",
    [
        {"events": ["workflow.queued"] * 11},
        {"events": ["workflow.queued"], "workflow_id": "wf\nfake"},
        {"events": ["workflow.queued"], "description": "line\r\nbreak"},
    ],
    ids=["repeated types", "control in workflow_id", "control in description"],
)
async def test_a_subscription_filter_is_bounded(
    client: TestClient, settings: Settings, body: dict[str, Any]
) -> None:
    body = {"url": "https://example.com/hook", **body}
    answer = await client.post("/api/v1/subscriptions", json=body, headers=admin(settings))
    assert answer.status == 422, await answer.text()
    assert not client.app[SUBSCRIPTIONS].all()
