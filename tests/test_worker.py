"""Background jobs through the API: accept, run, retry, cancel, call back, resume."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from standardwebhooks.webhooks import Webhook

from bridge.settings import Settings
from tests.conftest import ClientFactory, token
from tests.plugins import sample
from tests.smtp_server import free_port
from tests.webhook_target import Target, json_of

EXECUTE = "/api/v1/workflow/execute"
SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def job(processing_type: str, items: list[dict[str, Any]] | None = None, **extra: Any) -> dict:
    return {
        "processing_type": processing_type,
        "mode": "async",
        "items": items if items is not None else [{"json": {"n": 1}}],
        "workflow_id": "wf-1",
        "execution_id": "ex-1",
        **extra,
    }


async def finished(client: TestClient, auth: dict[str, str], job_id: str) -> dict[str, Any]:
    for _ in range(400):
        response = await client.get(f"/api/v1/workflow/status/{job_id}", headers=auth)
        answer = await response.json()
        if answer["status"] in ("completed", "failed", "cancelled"):
            return answer  # type: ignore[no-any-return]
        await asyncio.sleep(0.025)
    raise AssertionError(f"job {job_id} did not finish: {answer}")


async def after_callback(
    client: TestClient, auth: dict[str, str], job_id: str, state: str
) -> dict[str, Any]:
    """The job's record once its callback has reached `state` (or the last one seen)."""
    for _ in range(100):
        done = await finished(client, auth, job_id)
        if done["callback"]["state"] == state:
            break
        await asyncio.sleep(0.02)
    return done


async def test_an_async_job_is_accepted_then_runs(client: TestClient, auth: dict[str, str]) -> None:
    response = await client.post(EXECUTE, json=job("repeat", parameters={"times": 2}), headers=auth)
    assert response.status == 202
    accepted = await response.json()
    assert accepted["status"] == "queued" and accepted["created"] is True
    assert response.headers["Location"] == accepted["status_url"]
    assert accepted["status_url"] == f"/api/v1/workflow/status/{accepted['job_id']}"
    done = await finished(client, auth, accepted["job_id"])
    assert done["status"] == "completed" and done["mode"] == "async"
    assert done["queue"] == "default" and done["attempts"] == 1
    assert [i["json"]["copy"] for i in done["items"]] == [0, 1]
    assert all(i["pairedItem"] == {"item": 0} for i in done["items"])


async def test_the_same_idempotency_key_gives_the_same_job(
    client: TestClient, auth: dict[str, str]
) -> None:
    body = job("echo", idempotency_key="exec-7-node-a-batch-0")
    answers = await asyncio.gather(
        *(client.post(EXECUTE, json=body, headers=auth) for _ in range(5))
    )
    ids = {(await a.json())["job_id"] for a in answers}
    assert len(ids) == 1
    later = await (await client.post(EXECUTE, json=body, headers=auth)).json()
    assert later["job_id"] in ids and later["created"] is False
    listed = await (await client.get("/api/v1/status/wf-1", headers=auth)).json()
    assert [j["job_id"] for j in listed["jobs"]] == list(ids)


async def test_a_full_queue_answers_429_and_keeps_nothing(
    make_client: ClientFactory, auth: dict[str, str]
) -> None:
    client = await make_client(queues=[{"name": "default", "concurrency": 1, "max_depth": 2}])
    sample.GATE.clear()
    sample.ENTERED.clear()
    try:
        first = await client.post(EXECUTE, json=job("blocking"), headers=auth)
        assert first.status == 202
        await asyncio.to_thread(sample.ENTERED.wait, 10)  # running: the queue is empty again
        for _ in range(2):
            assert (await client.post(EXECUTE, json=job("echo"), headers=auth)).status == 202
        full = job("echo", workflow_id="wf-full", idempotency_key="full-1")
        refused = await client.post(EXECUTE, json=full, headers=auth)
        assert refused.status == 429
        assert int(refused.headers["Retry-After"]) >= 1
        error = (await refused.json())["error"]
        assert error["code"] == "overloaded" and error["retryable"] is True
        listed = await (await client.get("/api/v1/status/wf-full", headers=auth)).json()
        assert listed["jobs"] == []
    finally:
        sample.GATE.set()
    for _ in range(200):  # room again: a retry with the same key is accepted, not held up
        again = await client.post(EXECUTE, json=full, headers=auth)
        if again.status == 202:
            break
        await asyncio.sleep(0.02)
    assert again.status == 202 and (await again.json())["created"] is True


async def test_routes_send_jobs_to_their_queue_and_overflow(
    make_client: ClientFactory, auth: dict[str, str]
) -> None:
    client = await make_client(
        queues=[{"name": "bulk", "concurrency": 1, "max_depth": 1, "overflow_to": "default"}],
        routes=[{"queue": "bulk", "min_items": 3}],
    )
    sample.GATE.clear()
    sample.ENTERED.clear()
    try:
        big = [{"json": {"n": n}} for n in range(3)]
        first = await (await client.post(EXECUTE, json=job("blocking", big), headers=auth)).json()
        assert first["queue"] == "bulk"
        await asyncio.to_thread(sample.ENTERED.wait, 10)
        second = await (await client.post(EXECUTE, json=job("echo", big), headers=auth)).json()
        third = await (await client.post(EXECUTE, json=job("echo", big), headers=auth)).json()
        small = await (await client.post(EXECUTE, json=job("echo"), headers=auth)).json()
        assert (second["queue"], third["queue"], small["queue"]) == ("bulk", "default", "default")
    finally:
        sample.GATE.set()


async def test_retryable_failures_are_retried_with_backoff(
    make_client: ClientFactory, auth: dict[str, str]
) -> None:
    client = await make_client(retry_base_s=0.01, job_max_attempts=3)
    ok = await (
        await client.post(EXECUTE, json=job("flaky", parameters={"failures": 2}), headers=auth)
    ).json()
    done = await finished(client, auth, ok["job_id"])
    assert done["status"] == "completed" and done["attempts"] == 3
    hopeless = await (
        await client.post(EXECUTE, json=job("flaky", parameters={"failures": 5}), headers=auth)
    ).json()
    failed = await finished(client, auth, hopeless["job_id"])
    assert failed["status"] == "failed" and failed["attempts"] == 3
    assert failed["error"]["code"] == "integration"
    assert "run 3" in failed["error"]["message"]


async def test_cancel_queued_and_running_jobs(
    make_client: ClientFactory, auth: dict[str, str]
) -> None:
    client = await make_client(queues=[{"name": "default", "concurrency": 1}])
    running = await (
        await client.post(EXECUTE, json=job("sleep", parameters={"seconds": 30}), headers=auth)
    ).json()
    queued = await (await client.post(EXECUTE, json=job("echo"), headers=auth)).json()
    cancelled = await client.delete(f"/api/v1/workflow/{queued['job_id']}", headers=auth)
    assert cancelled.status == 200 and (await cancelled.json())["status"] == "cancelled"
    for _ in range(200):  # the sleeping job has started
        state = await (
            await client.get(f"/api/v1/workflow/status/{running['job_id']}", headers=auth)
        ).json()
        if state["status"] == "running":
            break
        await asyncio.sleep(0.02)
    stopped = await client.delete(f"/api/v1/workflow/{running['job_id']}", headers=auth)
    assert (await stopped.json())["status"] == "cancelled"
    again = await client.delete(f"/api/v1/workflow/{running['job_id']}", headers=auth)
    assert again.status == 409
    assert "already cancelled" in (await again.json())["error"]["message"]
    unknown = await client.delete("/api/v1/workflow/nope", headers=auth)
    assert unknown.status == 404


async def test_a_job_waiting_for_its_retry_is_cancelled_at_once(
    make_client: ClientFactory, auth: dict[str, str]
) -> None:
    client = await make_client(retry_base_s=300)
    body = job("flaky", parameters={"failures": 5})
    job_id = (await (await client.post(EXECUTE, json=body, headers=auth)).json())["job_id"]
    for _ in range(400):
        state = await (await client.get(f"/api/v1/workflow/status/{job_id}", headers=auth)).json()
        if state["retry_at"] is not None:
            break
        await asyncio.sleep(0.025)
    cancelled = await client.delete(f"/api/v1/workflow/{job_id}", headers=auth)
    assert cancelled.status == 200 and (await cancelled.json())["status"] == "cancelled"
    await asyncio.sleep(0.5)
    final = await (await client.get(f"/api/v1/workflow/status/{job_id}", headers=auth)).json()
    assert final["status"] == "cancelled"
    assert final["retry_at"] is None  # no retry is coming


async def test_a_cancel_racing_the_jobs_end_answers_truly_and_keeps_one_outcome(
    client: TestClient, auth: dict[str, str], target: Target
) -> None:
    """Cancels sent about when each job ends by itself: 200 cancelled or 409 already
    completed, and the job keeps that one outcome and sends one callback."""
    for n in range(10):
        body = job("sleep", parameters={"seconds": 0.1}, callback_url=target.url(f"/{n}"))
        job_id = (await (await client.post(EXECUTE, json=body, headers=auth)).json())["job_id"]
        await asyncio.sleep(0.08 + 0.005 * n)
        answer = await client.delete(f"/api/v1/workflow/{job_id}", headers=auth)
        said = await answer.json()
        final = await finished(client, auth, job_id)
        if answer.status == 200:
            assert said["status"] == final["status"] == "cancelled"
        else:
            assert answer.status == 409 and "already completed" in said["error"]["message"]
            assert final["status"] == "completed"
        [call] = [c for c in await target.wait_for(n + 1) if c.path == f"/{n}"]
        assert json_of(call)["status"] == final["status"]
    await asyncio.sleep(0.5)
    assert len(target.received) == 10


@pytest.mark.parametrize("url", ["ftp://example.com/x", "file:///etc/passwd", "not a url"])
async def test_a_callback_url_must_be_http(
    client: TestClient, auth: dict[str, str], url: str
) -> None:
    response = await client.post(EXECUTE, json=job("echo", callback_url=url), headers=auth)
    assert response.status == 422
    assert (await response.json())["error"]["details"][0]["pointer"] == "/callback_url"


async def test_callback_is_signed_and_carries_the_result(
    make_client: ClientFactory, auth: dict[str, str], target: Target
) -> None:
    client = await make_client(callback_secret=SECRET)
    accepted = await (
        await client.post(
            EXECUTE,
            json=job("repeat", callback_url=target.url(), parameters={"times": 1}),
            headers={**auth, "X-Trace-ID": "trace-cb-000001"},
        )
    ).json()
    [call] = await target.wait_for(1)
    assert call.method == "POST"
    Webhook(SECRET).verify(call.body, call.headers)  # raises unless the signature is right
    assert call.headers["webhook-id"] == f"cb_{accepted['job_id']}"
    assert call.headers["X-Trace-ID"] == "trace-cb-000001"
    body = json_of(call)
    assert body["job_id"] == accepted["job_id"] and body["status"] == "completed"
    assert body["workflow_id"] == "wf-1" and body["execution_id"] == "ex-1"
    assert body["items"] == [{"json": {"n": 1, "copy": 0}, "pairedItem": {"item": 0}}]
    assert body["errors"] == [] and body["duration_ms"] >= 0
    # a failed job's node pairs its error with every input item, and names the trace
    assert body["item_count"] == 1 and body["trace_id"] == "trace-cb-000001"
    # signed with the rest: the receiver can check the callback was meant for the URL it came to
    assert body["callback_url"] == target.url()
    done = await after_callback(client, auth, accepted["job_id"], "delivered")
    assert done["callback"]["state"] == "delivered" and done["callback"]["attempts"] == 1


async def test_callback_retries_keep_the_webhook_id(
    make_client: ClientFactory, auth: dict[str, str], target: Target
) -> None:
    """Down (connection refused is covered by 503s here), then 409 'is running already', then up."""
    client = await make_client(callback_secret=SECRET, retry_base_s=0.01)
    target.script = [503, 503, 409]
    target.texts = {409: '{"code": 409, "message": "The execution \\"1\\" is running already."}'}
    target.headers = {"Retry-After": "0"}
    accepted = await (
        await client.post(EXECUTE, json=job("echo", callback_url=target.url()), headers=auth)
    ).json()
    calls = await target.wait_for(4)
    assert {c.headers["webhook-id"] for c in calls} == {f"cb_{accepted['job_id']}"}
    await asyncio.sleep(0.2)
    assert len(target.received) == 4  # delivered once it got its 200; nothing after
    # Each attempt is kept on the job, with its outcome (the console's job page shows them).
    done = await after_callback(client, auth, accepted["job_id"], "delivered")
    history = done["callback"]["history"]
    assert [(a["attempt"], a["outcome"]) for a in history] == [
        (1, "failed"),
        (2, "failed"),
        (3, "failed"),
        (4, "delivered"),
    ]
    assert "503" in history[0]["error"] and "409" in history[2]["error"]
    assert history[3]["error"] is None
    assert [a["at"] for a in history] == sorted(a["at"] for a in history)


async def test_a_404_ends_the_callback_as_a_dead_letter(
    make_client: ClientFactory, auth: dict[str, str], target: Target
) -> None:
    client = await make_client(retry_base_s=0.01)
    target.script = [404]
    accepted = await (
        await client.post(EXECUTE, json=job("echo", callback_url=target.url()), headers=auth)
    ).json()
    await target.wait_for(1)
    done = await after_callback(client, auth, accepted["job_id"], "failed")
    assert done["callback"]["state"] == "failed"
    assert "HTTP 404" in done["callback"]["last_error"]
    await asyncio.sleep(0.1)
    assert len(target.received) == 1


async def test_n8n_saying_the_execution_has_finished_ends_the_callback(
    make_client: ClientFactory, auth: dict[str, str]
) -> None:
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    calls: list[str] = []

    async def finished_execution(request: web.Request) -> web.Response:
        calls.append(request.headers["webhook-id"])
        return web.json_response(
            {"code": 409, "message": 'The execution "7" has finished already.'}, status=409
        )

    app = web.Application()
    app.router.add_post("/webhook-waiting/7", finished_execution)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        client = await make_client(retry_base_s=0.01)
        url = str(server.make_url("/webhook-waiting/7"))
        accepted = await (
            await client.post(EXECUTE, json=job("echo", callback_url=url), headers=auth)
        ).json()
        done = await after_callback(client, auth, accepted["job_id"], "failed")
    finally:
        await server.close()
    assert (
        done["callback"]["state"] == "failed" and "has finished" in done["callback"]["last_error"]
    )
    assert len(calls) == 1


async def test_a_get_callback_carries_the_outcome_in_the_query(
    make_client: ClientFactory, auth: dict[str, str], target: Target
) -> None:
    client = await make_client(callback_secret=SECRET)
    accepted = await (
        await client.post(
            EXECUTE,
            json=job(
                "echo", callback_url=target.url("/webhook-waiting/42?x=1"), callback_method="GET"
            ),
            headers=auth,
        )
    ).json()
    [call] = await target.wait_for(1)
    assert call.method == "GET" and call.path == "/webhook-waiting/42"
    assert call.query["x"] == "1"
    assert call.query["job_id"] == accepted["job_id"] and call.query["status"] == "completed"
    assert call.query["item_count"] == "1"
    # The signature covers the query the bridge added (after the URL's own `x=1`).
    query = call.query_string.removeprefix("x=1&").encode()
    Webhook(SECRET).verify(query, call.headers, json_parse=False)


async def test_a_target_that_is_down_then_up_gets_every_callback_once(
    make_client: ClientFactory, settings: Settings, auth: dict[str, str]
) -> None:
    """Connection refused for a while (the breaker opens), then the target starts: every job's
    callback arrives, each with its one webhook-id."""
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    port = free_port()
    client = await make_client(retry_base_s=0.02, breaker_failures=2, breaker_reset_s=0.2)
    admin_auth = {"Authorization": f"Bearer {token(settings, 'admin')}"}
    url = f"http://127.0.0.1:{port}/hook"
    ids = [
        (
            await (
                await client.post(EXECUTE, json=job("echo", callback_url=url), headers=auth)
            ).json()
        )["job_id"]
        for _ in range(10)
    ]
    await asyncio.sleep(0.5)  # every first attempt has failed by now
    received: list[str] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(request.headers["webhook-id"])
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    server = TestServer(app, host="127.0.0.1", port=port)
    await server.start_server()
    try:
        for _ in range(500):
            if len(set(received)) == len(ids):
                break
            await asyncio.sleep(0.02)
    finally:
        await server.close()
    done = [(await finished(client, auth, job_id))["status"] for job_id in ids]
    dead = len(
        (await (await client.get("/admin/dead-letters", headers=admin_auth)).json())["dead_letters"]
    )
    print(
        f"\ncallback target down then up: accepted {len(ids)}, completed "
        f"{done.count('completed')}, callbacks delivered {len(set(received))}, "
        f"dead-lettered {dead}, lost {len(ids) - len(set(received)) - dead}"
    )
    assert sorted(received) == sorted(f"cb_{job_id}" for job_id in ids)


async def test_jobs_are_listed_by_execution(client: TestClient, auth: dict[str, str]) -> None:
    for execution in ("ex-a", "ex-b", "ex-a"):
        await client.post(EXECUTE, json=job("echo", execution_id=execution), headers=auth)
    page = await (await client.get("/api/v1/status/wf-1?execution_id=ex-a", headers=auth)).json()
    assert [j["execution_id"] for j in page["jobs"]] == ["ex-a", "ex-a"]


async def test_jobs_beyond_the_decoded_budget_are_read_back_from_the_store(
    make_client: ClientFactory, auth: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backlog keeps at most DECODED_BUDGET_JOBS jobs decoded in memory; the others are read
    from the store when their turn comes, with the same result."""
    from bridge import worker

    monkeypatch.setattr(worker, "DECODED_BUDGET_JOBS", 2)
    client = await make_client(queues=[{"name": "default", "concurrency": 1}])
    ids = []
    for n in range(6):
        body = job("repeat", items=[{"json": {"n": n}}], parameters={"times": 2})
        ids.append((await (await client.post(EXECUTE, json=body, headers=auth)).json())["job_id"])
    for n, job_id in enumerate(ids):
        done = await finished(client, auth, job_id)
        assert done["status"] == "completed"
        result = await (await client.get(f"/api/v1/workflow/status/{job_id}", headers=auth)).json()
        assert [i["json"] for i in result["items"]] == [{"n": n, "copy": 0}, {"n": n, "copy": 1}]
