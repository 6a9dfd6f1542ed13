"""Admin endpoints: status, drain, dead letters and replay, retrying a job."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.test_utils import TestClient

from bridge.ids import new_id
from bridge.keys import LIFECYCLE
from bridge.settings import Settings
from tests.conftest import ClientFactory, token
from tests.test_worker import after_callback, finished, job
from tests.webhook_target import Target

EXECUTE = "/api/v1/workflow/execute"


def admin(settings: Settings) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(settings, 'admin')}"}


async def dead_letters(client: TestClient, settings: Settings, count: int) -> list[dict[str, Any]]:
    for _ in range(200):
        answer = await (await client.get("/admin/dead-letters", headers=admin(settings))).json()
        if len(answer["dead_letters"]) >= count:
            return answer["dead_letters"]  # type: ignore[no-any-return]
        await asyncio.sleep(0.02)
    raise AssertionError(f"expected {count} dead letters, have {answer}")


async def test_status_shows_queues_workers_and_backends(
    client: TestClient, settings: Settings, auth: dict[str, str], backend: str
) -> None:
    assert (await client.get("/admin/status", headers=auth)).status == 403
    status = await (await client.get("/admin/status", headers=admin(settings))).json()
    assert status["draining"] is False
    expected = {"embedded": ("sqlite", "memory"), "redis": ("redis", "redis-streams")}[backend]
    assert (status["backends"]["store"], status["backends"]["queues"]) == expected
    assert status["queues"]["default"]["concurrency"] == 4
    await client.post(EXECUTE, json=job("sleep", parameters={"seconds": 0.05}), headers=auth)
    for _ in range(100):
        status = await (await client.get("/admin/status", headers=admin(settings))).json()
        if status["queues"]["default"]["recent_run_s"]:
            break
        await asyncio.sleep(0.02)
    assert status["queues"]["default"]["recent_run_s"] >= 0.05
    assert status["dead_letters"] == 0 and status["breakers"] == {}


async def test_drain_refuses_new_jobs_and_turns_ready_503(
    client: TestClient, settings: Settings, auth: dict[str, str]
) -> None:
    drained = await client.post("/admin/drain", headers=admin(settings))
    assert (await drained.json())["draining"] is True
    assert (await drained.json())["drained"] is True  # nothing of its own to finish
    ready = await client.get("/ready")
    assert ready.status == 503 and (await ready.json())["checks"]["accepting"] == "draining"
    submitted = await client.post(EXECUTE, json=job("echo"), headers=auth)
    if settings.redis_url is None:  # its own queue: the job would wait for a leaving instance
        assert submitted.status == 503 and submitted.headers["Retry-After"] == "5"
    else:  # shared queues: accepted, for another instance to run (this one takes no more)
        assert submitted.status == 202
        status = await (await client.get("/admin/status", headers=admin(settings))).json()
        assert status["drained"] is True and status["workers"]["in_flight"] == 0
    sync = await client.post(EXECUTE, json={**job("echo"), "mode": "sync"}, headers=auth)
    assert sync.status == 200  # answered here and now: nothing to hand over
    # A rollback brings it back: ready again, and background jobs accepted and run again.
    resumed = await client.delete("/admin/drain", headers=admin(settings))
    assert resumed.status == 200 and (await resumed.json())["draining"] is False
    assert (await client.get("/ready")).status == 200
    accepted = await client.post(EXECUTE, json=job("echo"), headers=auth)
    assert accepted.status == 202
    done = await finished(client, auth, (await accepted.json())["job_id"])
    assert done["status"] == "completed"


async def test_drained_only_once_its_running_job_ends(
    client: TestClient, settings: Settings, auth: dict[str, str]
) -> None:
    """What the blue-green switch waits for before it puts the old colour in maintenance."""
    accepted = await client.post(
        EXECUTE, json=job("sleep", parameters={"seconds": 0.3}), headers=auth
    )
    job_id = (await accepted.json())["job_id"]
    for _ in range(100):  # running here
        status = await (await client.get("/admin/status", headers=admin(settings))).json()
        if status["workers"]["in_flight"]:
            break
        await asyncio.sleep(0.01)
    drained = await (await client.post("/admin/drain", headers=admin(settings))).json()
    assert drained["draining"] is True and drained["drained"] is False
    assert (await finished(client, auth, job_id))["status"] == "completed"
    for _ in range(100):
        status = await (await client.get("/admin/status", headers=admin(settings))).json()
        if status["drained"]:
            break
        await asyncio.sleep(0.01)
    assert status["drained"] is True and status["workers"]["in_flight"] == 0


async def test_a_stopping_bridge_does_not_serve_again(
    client: TestClient, settings: Settings
) -> None:
    client.app[LIFECYCLE].stop()  # what SIGTERM does first
    refused = await client.delete("/admin/drain", headers=admin(settings))
    assert refused.status == 409
    assert (await client.get("/ready")).status == 503


async def test_a_dead_callback_is_replayed_with_its_webhook_id(
    make_client: ClientFactory, settings: Settings, auth: dict[str, str], target: Target
) -> None:
    client = await make_client(retry_base_s=0.01, callback_max_attempts=2)
    target.script = [500, 500]
    accepted = await (
        await client.post(EXECUTE, json=job("echo", callback_url=target.url()), headers=auth)
    ).json()
    [letter] = await dead_letters(client, settings, 1)
    assert letter["kind"] == "callback" and letter["job_id"] == accepted["job_id"]
    assert letter["attempts"] == 2 and "HTTP 500" in letter["last_error"]
    replayed = await client.post(
        f"/admin/dead-letters/{letter['id']}/replay", headers=admin(settings)
    )
    assert replayed.status == 200
    calls = await target.wait_for(3)
    assert {c.headers["webhook-id"] for c in calls} == {letter["id"]}
    done = await after_callback(client, auth, accepted["job_id"], "delivered")
    assert done["callback"]["state"] == "delivered"
    left = await (await client.get("/admin/dead-letters", headers=admin(settings))).json()
    assert left["dead_letters"] == []
    missing = await client.post("/admin/dead-letters/nope/replay", headers=admin(settings))
    assert missing.status == 404


async def test_a_failed_job_is_retried_as_a_new_job(
    make_client: ClientFactory, settings: Settings, auth: dict[str, str]
) -> None:
    client = await make_client(job_max_attempts=1)
    key = f"retry-by-hand-{new_id()}"  # flaky counts runs per key for the whole session
    body = job("flaky", [{"json": {"key": key}}], parameters={"failures": 1})
    failed = await (await client.post(EXECUTE, json=body, headers=auth)).json()
    assert (await finished(client, auth, failed["job_id"]))["status"] == "failed"
    retried = await client.post(f"/admin/jobs/{failed['job_id']}/retry", headers=admin(settings))
    assert retried.status == 202
    again = await retried.json()
    assert again["job_id"] != failed["job_id"]
    assert (await finished(client, auth, again["job_id"]))["status"] == "completed"
    not_failed = await client.post(f"/admin/jobs/{again['job_id']}/retry", headers=admin(settings))
    assert not_failed.status == 409
