"""The Redis backend where it differs from the embedded one: several instances on one real
redis-server, its queues' streams, a Redis that goes away and comes back."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient

from bridge.queues.base import Entry
from bridge.queues.redis_streams import GROUP, StreamQueue
from bridge.settings import Settings
from bridge.stores.redis_db import RedisDb
from tests.conftest import ClientFactory
from tests.redis_server import RedisServer
from tests.test_events import admin
from tests.test_worker import EXECUTE, finished, job
from tests.webhook_target import Target, json_of

# Apps on the Redis backend only (the parameter shadows the `backend` fixture of conftest).
redis_only = pytest.mark.parametrize("backend", ["redis"])


async def two_instances(make_client: ClientFactory, **overrides: Any) -> tuple[TestClient, ...]:
    return await make_client(**overrides), await make_client(**overrides)


async def completed_jobs(client: TestClient) -> float:
    """Background jobs this instance completed, of every processor (each has its series)."""
    text = await (await client.get("/metrics")).text()
    return sum(
        float(line.rpartition(" ")[2])
        for line in text.splitlines()
        if line.startswith("bridge_jobs_total{")
        and 'mode="async"' in line
        and 'status="completed"' in line
    )


@redis_only
async def test_two_instances_share_the_queue_and_both_work(
    make_client: ClientFactory, auth: dict[str, str]
) -> None:
    queues = [{"name": "default", "concurrency": 2}]
    a, b = await two_instances(make_client, queues=queues)
    body = job("sleep", parameters={"seconds": 0.02})
    accepted = [
        (await (await (a if n % 2 else b).post(EXECUTE, json=body, headers=auth)).json())["job_id"]
        for n in range(40)
    ]
    for job_id in accepted:  # every job's status is the same whichever instance is asked
        assert (await finished(a, auth, job_id))["status"] == "completed"
        assert (await finished(b, auth, job_id))["status"] == "completed"
    ran = (await completed_jobs(a), await completed_jobs(b))
    assert sum(ran) == 40 and min(ran) > 0, f"one instance did all the work: {ran}"


@redis_only
async def test_an_idempotency_key_is_one_job_across_instances(
    make_client: ClientFactory, auth: dict[str, str]
) -> None:
    a, b = await two_instances(make_client)
    body = job("echo", idempotency_key="shared-key-1")
    answers = await asyncio.gather(
        *(c.post(EXECUTE, json=body, headers=auth) for c in (a, b, a, b, a, b))
    )
    bodies = [await answer.json() for answer in answers]
    assert len({b["job_id"] for b in bodies}) == 1
    assert sorted(b["created"] for b in bodies) == [False] * 5 + [True]


@redis_only
async def test_sse_on_one_instance_shows_a_job_run_by_another(
    make_client: ClientFactory, settings: Settings, auth: dict[str, str]
) -> None:
    a, b = await two_instances(make_client)
    assert (await a.post("/admin/drain", headers=admin(settings))).status == 200  # a takes none
    events = await a.get(
        "/api/v1/events",
        params={"workflow_id": "wf-sse", "type": "workflow.completed"},
        headers={**auth, "Accept": "text/event-stream"},
    )
    assert events.status == 200
    submitted = await b.post(EXECUTE, json=job("echo", workflow_id="wf-sse"), headers=auth)
    job_id = (await submitted.json())["job_id"]
    last_id, seen = await read_until(events, job_id)
    assert seen["type"] == "workflow.completed" and seen["job_id"] == job_id
    # Resuming from an earlier id on the other instance replays the same event, same id.
    replay = await b.get(
        "/api/v1/events",
        params={"workflow_id": "wf-sse", "type": "workflow.completed"},
        headers={**auth, "Last-Event-ID": str(last_id - 1)},
    )
    again_id, again = await read_until(replay, job_id)
    assert (again_id, again["job_id"]) == (last_id, job_id)
    events.close()
    replay.close()


async def read_until(response: Any, job_id: str) -> tuple[int, dict[str, Any]]:
    event_id = 0
    async with asyncio.timeout(20):
        while True:
            line = (await response.content.readline()).decode().strip()
            if line.startswith("id: "):
                event_id = int(line[4:])
            elif line.startswith("data: "):
                data = orjson.loads(line[6:])
                if data.get("job_id") == job_id:
                    return event_id, data


@redis_only
async def test_a_stopping_instance_hands_its_running_job_to_another(
    make_client: ClientFactory, auth: dict[str, str]
) -> None:
    a = await make_client(shutdown_timeout_s=0.2)
    accepted = await a.post(EXECUTE, json=job("sleep", parameters={"seconds": 30}), headers=auth)
    job_id = (await accepted.json())["job_id"]
    for _ in range(200):
        status = await (await a.get(f"/api/v1/workflow/status/{job_id}", headers=auth)).json()
        if status["status"] == "running":
            break
        await asyncio.sleep(0.02)
    await a.close()  # SIGTERM's path: the job is cut after 0.2 s and handed back
    b = await make_client()
    for _ in range(300):
        status = await (await b.get(f"/api/v1/workflow/status/{job_id}", headers=auth)).json()
        if status["status"] == "running" and status["attempts"] == 2:
            break
        await asyncio.sleep(0.02)
    assert (status["status"], status["attempts"], status["interruptions"]) == ("running", 2, 1)


# ---- cancelling a job through any instance ------------------------------------------------------


async def job_events(redis_url: str, job_id: str) -> list[str]:
    """The types of one job's events in the shared log, in order."""
    redis = aioredis.Redis.from_url(redis_url)
    try:
        found = [orjson.loads(fields[b"b"]) for _, fields in await redis.xrange("bridge:events")]
    finally:
        await redis.aclose()
    return [event["type"] for event in found if event.get("job_id") == job_id]


async def queue_is_empty(redis_url: str) -> bool:
    """No entry of the default queue is left waiting, running or unacknowledged (its cancel
    stream too), within a few seconds (an entry is acknowledged just after its job's end)."""
    redis = aioredis.Redis.from_url(redis_url)
    streams = [f"bridge:q:default:{level}" for level in range(10)] + ["bridge:q:default:cancel"]
    try:
        for _ in range(100):
            lengths = [await redis.xlen(stream) for stream in streams]
            if sum(lengths) == 0 and await redis.zcard("bridge:q:delayed") == 0:
                return True
            await asyncio.sleep(0.05)
        return False
    finally:
        await redis.aclose()


async def until_running(client: TestClient, auth: dict[str, str], job_id: str) -> None:
    for _ in range(400):
        status = await (await client.get(f"/api/v1/workflow/status/{job_id}", headers=auth)).json()
        if status["status"] == "running":
            return
        await asyncio.sleep(0.025)
    raise AssertionError(f"job {job_id} did not start: {status}")


async def in_flight(client: TestClient, settings: Settings) -> int:
    status = await (await client.get("/admin/status", headers=admin(settings))).json()
    return int(status["queues"]["default"]["in_flight"])


@redis_only
async def test_a_cancel_through_another_instance_stops_the_job_where_it_runs(
    make_client: ClientFactory,
    settings: Settings,
    auth: dict[str, str],
    redis_url: str,
    target: Target,
) -> None:
    a, b = await two_instances(make_client)
    assert (await b.post("/admin/drain", headers=admin(settings))).status == 200  # a runs it
    body = job("sleep", parameters={"seconds": 30}, callback_url=target.url())
    job_id = (await (await a.post(EXECUTE, json=body, headers=auth)).json())["job_id"]
    await until_running(a, auth, job_id)
    asked = time.monotonic()
    answer = await b.delete(f"/api/v1/workflow/{job_id}", headers=auth)
    assert answer.status == 200, await answer.text()
    assert (await answer.json())["status"] == "cancelled"
    assert time.monotonic() - asked < 10
    for _ in range(200):  # a's processor was stopped, not left to run its 30 s
        if await in_flight(a, settings) == 0:
            break
        await asyncio.sleep(0.05)
    assert await in_flight(a, settings) == 0
    [call] = await target.wait_for(1)
    assert json_of(call)["status"] == "cancelled"
    await asyncio.sleep(1.5)  # nothing else comes: no second outcome, no second callback
    assert len(target.received) == 1
    final = await (await b.get(f"/api/v1/workflow/status/{job_id}", headers=auth)).json()
    assert final["status"] == "cancelled"
    events = await job_events(redis_url, job_id)
    assert [e for e in events if e.startswith("workflow.")] == [
        "workflow.queued",
        "workflow.started",
        "workflow.cancelled",
    ]
    assert await queue_is_empty(redis_url)


@redis_only
async def test_a_job_waiting_for_another_instance_is_cancelled_at_once_and_never_runs(
    make_client: ClientFactory, settings: Settings, auth: dict[str, str], redis_url: str
) -> None:
    a, b = await two_instances(make_client, queues=[{"name": "default", "concurrency": 1}])
    assert (await b.post("/admin/drain", headers=admin(settings))).status == 200  # b takes none
    sleeper = job("sleep", parameters={"seconds": 30})
    first = (await (await a.post(EXECUTE, json=sleeper, headers=auth)).json())["job_id"]
    await until_running(a, auth, first)
    waiting = (await (await a.post(EXECUTE, json=job("echo"), headers=auth)).json())["job_id"]
    answer = await b.delete(f"/api/v1/workflow/{waiting}", headers=auth)
    assert answer.status == 200 and (await answer.json())["status"] == "cancelled"
    stopped = await b.delete(f"/api/v1/workflow/{first}", headers=auth)
    assert stopped.status == 200 and (await stopped.json())["status"] == "cancelled"
    await asyncio.sleep(1.0)  # a is free now: the cancelled job must not run there
    assert await job_events(redis_url, waiting) == ["workflow.queued", "workflow.cancelled"]
    final = await (await a.get(f"/api/v1/workflow/status/{waiting}", headers=auth)).json()
    assert (final["status"], final["attempts"]) == ("cancelled", 0)
    assert await queue_is_empty(redis_url)


@redis_only
async def test_a_cancel_racing_the_jobs_own_end_answers_truly_and_keeps_one_outcome(
    make_client: ClientFactory, auth: dict[str, str], redis_url: str, target: Target
) -> None:
    """Cancels sent through another instance about when each job ends by itself: each answer
    is either 200 cancelled or 409 already completed, the job keeps that one outcome, and its
    end event and its callback come once."""
    a, b = await two_instances(make_client)
    for n in range(12):
        seconds = 0.2 + 0.05 * n
        body = job("sleep", parameters={"seconds": seconds}, callback_url=target.url(f"/{n}"))
        job_id = (await (await a.post(EXECUTE, json=body, headers=auth)).json())["job_id"]
        await until_running(a, auth, job_id)
        await asyncio.sleep(0.2)
        answer = await b.delete(f"/api/v1/workflow/{job_id}", headers=auth)
        said = await answer.json()
        final = await finished(a, auth, job_id)
        if answer.status == 200:
            assert said["status"] == final["status"] == "cancelled"
        else:
            assert answer.status == 409, said
            assert "already completed" in said["error"]["message"]
            assert final["status"] == "completed"
        await target.wait_for(n + 1)
        ends = [e for e in await job_events(redis_url, job_id) if e.startswith("workflow.")]
        assert ends[-1] == f"workflow.{final['status']}" and len(ends) == 3, ends
    await asyncio.sleep(1.0)
    callbacks = Counter(json_of(call)["job_id"] for call in target.received)
    assert len(callbacks) == 12 and set(callbacks.values()) == {1}
    assert await queue_is_empty(redis_url)


@redis_only
async def test_a_job_whose_instance_died_is_cancelled_by_the_one_taking_it_over(
    make_client: ClientFactory,
    settings: Settings,
    auth: dict[str, str],
    redis_url: str,
    tmp_path: Path,
) -> None:
    """Nobody stops the job in time: 202, the cancel recorded; the instance that takes the
    job over cancels it instead of running it."""
    from tests.daemon import Daemon
    from tests.test_recovery import env

    b = await make_client()  # takes over only after the default 30 s
    assert (await b.post("/admin/drain", headers=admin(settings))).status == 200  # a runs it
    daemon = Daemon(env(tmp_path / "a", BRIDGE_REDIS_URL=redis_url, BRIDGE_REDIS_CLAIM_IDLE_S="2"))
    async with daemon as a, aiohttp.ClientSession() as session:
        body = job("sleep", parameters={"seconds": 60})
        async with session.post(f"{a.url}{EXECUTE}", json=body, headers=auth) as response:
            job_id = (await response.json())["job_id"]
        await until_running(b, auth, job_id)
        a.signal(signal.SIGKILL)
        await a.wait()
        asked = time.monotonic()
        answer = await b.delete(f"/api/v1/workflow/{job_id}", headers=auth)
        assert 4.5 <= time.monotonic() - asked < 30  # waited its 5 s for a stop
        assert answer.status == 202, await answer.text()
        assert (await answer.json())["status"] == "running"
        assert answer.headers["Location"] == f"/api/v1/workflow/status/{job_id}"
    c = await make_client(redis_claim_idle_s=1)  # takes it over after 1 s
    final = await finished(c, auth, job_id)
    assert final["status"] == "cancelled"
    assert [e for e in await job_events(redis_url, job_id) if e.startswith("workflow.")] == [
        "workflow.queued",
        "workflow.started",
        "workflow.cancelled",
    ]
    assert await queue_is_empty(redis_url)


@redis_only
async def test_items_kept_for_jobs_that_another_instance_ran_or_cancelled_are_let_go(
    make_client: ClientFactory,
    settings: Settings,
    auth: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bridge import worker
    from bridge.keys import WORKERS

    monkeypatch.setattr(worker, "DECODED_KEEP_S", 0.5)
    a, b = await two_instances(make_client)
    assert (await a.post("/admin/drain", headers=admin(settings))).status == 200  # b runs all
    ids = [
        (await (await a.post(EXECUTE, json=job("echo"), headers=auth)).json())["job_id"]
        for _ in range(5)
    ]
    for job_id in ids:
        assert (await finished(b, auth, job_id))["status"] == "completed"
    for _ in range(100):  # a kept their decoded items for a first run it never made
        if not a.app[WORKERS]._decoded:
            break
        await asyncio.sleep(0.05)
    assert not a.app[WORKERS]._decoded


# ---- the job store ------------------------------------------------------------------------------


async def test_a_jobs_report_is_kept_beside_it_and_goes_with_it(redis_url: str) -> None:
    """A report saved while the job runs outlives the worker's next save, takes the job's
    expiry when it ends, and is unlinked with it."""
    from bridge.jobs import JobRecord, JobStatus
    from bridge.stores.redis import RedisJobStore, kinds
    from bridge.stores.redis_db import key

    retention = {"async": 600.0, "sync": 60.0}
    db = RedisDb(redis_url, kinds(retention))
    await db.open()
    try:
        store = RedisJobStore(db, retention)
        queued = JobRecord(
            job_id="a" * 32,
            status=JobStatus.QUEUED,
            mode="async",
            processing_type="echo",
            workflow_id="wf-report",
            created_at=time.time(),
        )
        await store.save(queued, durable=True)
        running = queued.advance(JobStatus.RUNNING)
        await store.save(running, durable=True)
        await store.save_report(running.job_id, b'{"status": "success"}')
        await store.save(running.advance(JobStatus.COMPLETED), durable=True)
        got = await store.get(running.job_id)
        assert got is not None and got.reported == {"status": "success"}
        page, _ = await store.list_for_workflow("wf-report", limit=5)
        assert [job.reported for job in page] == [{"status": "success"}]
        assert 590 < await db.redis.ttl(key("job", running.job_id, "report")) <= 600
        await store.purge_expired(time.time() + 601)
        assert not await db.redis.exists(key("job", running.job_id, "report"))
    finally:
        await db.close()


# ---- the streams themselves ---------------------------------------------------------------------


async def stream_queue(url: str, aging_s: float = 60.0) -> tuple[RedisDb, StreamQueue]:
    from bridge.queues.redis_streams import KINDS, StreamKeeper

    db = RedisDb(url, KINDS)
    await db.open()
    queue = StreamQueue("q", 100, aging_s, db, "test-consumer")
    await StreamKeeper(db, "test-consumer", [queue], 30).open()
    return db, queue


async def test_streams_hand_out_by_priority_and_age(redis_url: str) -> None:
    db, queue = await stream_queue(redis_url, aging_s=0.2)
    try:
        for job_id, priority in [("low-1", 1), ("high-1", 8), ("mid-1", 5), ("high-2", 8)]:
            queue.put(Entry(job_id, priority))
        await db.flush()
        order = [(await queue.get()).job_id for _ in range(4)]
        assert order == ["high-1", "high-2", "mid-1", "low-1"]
        queue.put(Entry("old-low", 0))
        await db.flush()
        await asyncio.sleep(2.0)  # ten levels of aging: it now outranks a fresh urgent job
        queue.put(Entry("new-high", 9))
        await db.flush()
        assert [(await queue.get()).job_id for _ in range(2)] == ["old-low", "new-high"]
    finally:
        await db.close()


async def test_acknowledged_entries_leave_the_stream_and_the_rest_stay(redis_url: str) -> None:
    db, queue = await stream_queue(redis_url)
    client = aioredis.Redis.from_url(redis_url)
    try:
        for n in range(50):
            queue.put(Entry(f"job-{n}", 5))
        await db.flush()
        taken = [await queue.get() for _ in range(30)]
        for entry in taken[:20]:
            queue.ack(entry)
        await db.flush()
        stream = queue.streams[5]
        pending = await client.xpending(stream, GROUP)
        assert await client.xlen(stream) == 30  # 10 taken and not settled + 20 waiting
        assert pending["pending"] == 10
        await queue.refresh()
        assert (queue.depth, queue.running) == (20, 10)
    finally:
        await client.aclose()
        await db.close()


async def test_an_entry_nobody_renews_is_taken_over_and_counted(redis_url: str) -> None:
    db, first = await stream_queue(redis_url)
    second = StreamQueue("q", 100, 60, db, "other-consumer")
    try:
        first.put(Entry("orphan", 5))
        await db.flush()
        entry = await first.get()
        assert entry.deliveries == 1
        first.held.clear()  # as if its instance had died: nobody renews it
        await asyncio.sleep(0.3)
        assert await second.reclaim(idle_ms=10_000) == 0  # not idle long enough yet
        assert await second.reclaim(idle_ms=200) == 1
        taken = await second.get()
        assert (taken.job_id, taken.deliveries) == ("orphan", 2)
    finally:
        await db.close()


async def test_a_cancel_takes_a_waiting_entry_out_of_line_and_flags_the_others(
    redis_url: str,
) -> None:
    db, queue = await stream_queue(redis_url)
    client = aioredis.Redis.from_url(redis_url)
    try:
        for job_id in ("first", "second", "third"):
            queue.put(Entry(job_id, 5))
        queue.later(Entry("retrying", 3), 60)
        await db.flush()
        taken = await queue.get()
        assert (taken.job_id, taken.cancel_requested) == ("first", False)
        assert await queue.withhold("first", 5) is None  # held by an instance: only recorded
        withheld = await queue.withhold("third", 5)  # waiting: now held here, out of line
        delayed = await queue.withhold("retrying", 3)  # waiting for its retry: the same
        assert withheld is not None and delayed is not None
        assert withheld.cancel_requested and (withheld.ref or "").startswith(queue.cancels)
        assert await queue.withhold("elsewhere", 5) is None  # not here (yet): recorded
        asked = ["first", "second", "third", "retrying", "elsewhere"]
        assert await queue.cancel_requests(asked) == {"first", "third", "retrying", "elsewhere"}
        queue.put(Entry("elsewhere", 5))
        await db.flush()
        second, flagged = await queue.get(), await queue.get()  # "third" is no longer there
        assert (second.job_id, second.cancel_requested) == ("second", False)
        assert (flagged.job_id, flagged.cancel_requested) == ("elsewhere", True)
        for entry in (taken, withheld, delayed, second, flagged):
            queue.ack(entry)
        await db.flush()
        assert sum([await client.xlen(s) for s in [*queue.streams, queue.cancels]]) == 0
        assert await client.zcard("bridge:q:delayed") == 0
    finally:
        await client.aclose()
        await db.close()


async def test_a_withheld_entry_is_taken_over_or_handed_back_still_to_be_cancelled(
    redis_url: str,
) -> None:
    db, first = await stream_queue(redis_url)
    second = StreamQueue("q", 100, 60, db, "other-consumer")
    try:
        for job_id in ("orphaned", "handed-back"):
            first.put(Entry(job_id, 2))
        await db.flush()
        orphaned = await first.withhold("orphaned", 2)
        handed = await first.withhold("handed-back", 2)
        assert orphaned is not None and handed is not None
        first.release(handed)  # as a stop does: back in its level, where any instance takes it
        first.held.clear()  # as if its instance had died before cancelling "orphaned"
        await db.flush()
        await asyncio.sleep(0.3)
        assert await second.reclaim(idle_ms=200) == 1
        taken = [await second.get(), await second.get()]
        assert {(e.job_id, e.cancel_requested) for e in taken} == {
            ("orphaned", True),
            ("handed-back", True),
        }
    finally:
        await db.close()


# ---- Redis going away ---------------------------------------------------------------------------


@pytest.fixture
def own_redis(tmp_path: Path) -> Any:
    server = RedisServer(tmp_path / "own-redis", appendonly=True).start()
    yield server
    server.stop()


@redis_only
async def test_without_redis_sync_works_async_gets_503_and_ready_says_why(
    make_client: ClientFactory,
    auth: dict[str, str],
    own_redis: RedisServer,
) -> None:
    client = await make_client(redis_url=own_redis.url)
    assert (await client.get("/ready")).status == 200
    own_redis.stop()
    for _ in range(100):
        ready = await client.get("/ready")
        if ready.status == 503:
            break
        await asyncio.sleep(0.05)
    checks = (await ready.json())["checks"]
    assert ready.status == 503 and "Redis is unreachable" in checks["store"]
    sync = await client.post(EXECUTE, json={**job("echo"), "mode": "sync"}, headers=auth)
    assert sync.status == 200
    refused = await client.post(EXECUTE, json=job("echo"), headers=auth)
    assert refused.status == 503
    assert int(refused.headers["Retry-After"]) >= 1
    error = (await refused.json())["error"]
    assert error["code"] == "unavailable" and "not accepted" in error["message"]
    metrics = await (await client.get("/metrics")).text()
    assert "bridge_backend_up 0.0" in metrics
    own_redis.start()
    for _ in range(100):
        if (await client.get("/ready")).status == 200:
            break
        await asyncio.sleep(0.05)
    accepted = await client.post(EXECUTE, json=job("echo"), headers=auth)
    assert accepted.status == 202
    assert (await finished(client, auth, (await accepted.json())["job_id"]))[
        "status"
    ] == "completed"
    states = [e["type"] for e in await events_of(client, auth)]
    assert states.count("backend.down") == 1 and states.count("backend.up") == 1
    assert refused.status == 503  # and the refused job never ran:
    assert sum(s == "workflow.queued" for s in states) == 1


async def events_of(client: TestClient, auth: dict[str, str]) -> list[Any]:
    response = await client.get(
        "/api/v1/events",
        params={"last_event_id": 0},
        headers=auth,
        timeout=aiohttp.ClientTimeout(sock_read=1),
    )
    found = []
    try:
        async with asyncio.timeout(3):
            while True:
                line = (await response.content.readline()).decode().strip()
                if line.startswith("data: "):
                    found.append(orjson.loads(line[6:]))
    except TimeoutError:
        pass
    response.close()
    return found


@redis_only
async def test_a_redis_restart_mid_run_loses_no_accepted_job(
    make_client: ClientFactory, settings: Settings, auth: dict[str, str], own_redis: RedisServer
) -> None:
    client = await make_client(
        redis_url=own_redis.url, queues=[{"name": "default", "concurrency": 4}]
    )
    body = job("sleep", parameters={"seconds": 0.01})
    accepted, refused = [], 0
    started = time.monotonic()
    restarted = False
    while len(accepted) < 150:
        response = await client.post(EXECUTE, json=body, headers=auth)
        if response.status == 202:
            accepted.append((await response.json())["job_id"])
        else:
            assert response.status == 503
            refused += 1
        if not restarted and len(accepted) == 60:
            own_redis.stop()  # SIGTERM: Redis writes its append-only file, as a restart does
            restarted = True
            await asyncio.sleep(0.5)
            own_redis.start()
        assert time.monotonic() - started < 60
    final = Counter([(await finished(client, auth, job_id))["status"] for job_id in accepted])
    status = await client.get("/admin/status", headers=admin(settings))
    dead = (await status.json())["dead_letters"]
    print(
        f"\nRedis restarted: accepted {len(accepted)}, refused while down {refused}, "
        f"completed {final['completed']}, dead-lettered {dead}, "
        f"lost {len(accepted) - final['completed'] - final['failed']}"
    )
    assert final == Counter(completed=len(accepted))


@redis_only
async def test_under_load_the_event_log_is_capped_and_no_queued_job_is_dropped(
    make_client: ClientFactory, auth: dict[str, str], redis_url: str
) -> None:
    client = await make_client(events_max=1000, queues=[{"name": "default", "concurrency": 8}])
    body = job("echo")
    accepted = await asyncio.gather(
        *(client.post(EXECUTE, json=body, headers=auth) for _ in range(700))
    )
    ids = [(await answer.json())["job_id"] for answer in accepted]
    for job_id in ids:
        assert (await finished(client, auth, job_id))["status"] == "completed"
    redis = aioredis.Redis.from_url(redis_url)
    try:
        # 700 jobs made 2,100 events; the log keeps about the last 1,000 (MAXLEN ~ trims whole
        # nodes of the stream, so a little more).
        assert 1000 <= await redis.xlen("bridge:events") < 2000
        for level in range(10):  # every entry was acknowledged, and only then deleted
            stream = f"bridge:q:default:{level}"
            assert await redis.xlen(stream) == 0
            assert (await redis.xpending(stream, GROUP))["pending"] == 0
    finally:
        await redis.aclose()
