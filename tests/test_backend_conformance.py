"""One suite, both backends: what callers see of background jobs — the order of their events, the
delivery of their callbacks, recovery after a crash, the status document — must be the same on
the embedded backend (SQLite, in-process queues) and on Redis. Every test takes conftest's
`backend` fixture, so a difference between the backends fails a test here.

The "Order" paragraph of docs/background-jobs.md is checked here (the events of jobs that end
every way, and after a SIGKILL) and in test_faults (the events of jobs refused with 503).
"""

from __future__ import annotations

import asyncio
import itertools
import re
import signal
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from standardwebhooks.webhooks import Webhook
from yarl import URL

from bridge.events import EVENT_TYPES
from bridge.keys import EVENTS
from bridge.settings import Settings
from bridge.webhook_attempt import ATTEMPT_OUTCOMES
from tests.conftest import ClientFactory, token
from tests.daemon import Daemon
from tests.test_events import read_until
from tests.test_recovery import CALLBACK_SECRET, env, headers, submit
from tests.webhook_target import Target, json_of

EXECUTE = "/api/v1/workflow/execute"
JOB_EVENTS = [t for t in EVENT_TYPES if t.startswith(("workflow.", "callback."))]
LETTER = {
    "workflow.queued": "Q",
    "workflow.started": "S",
    "workflow.completed": "E",
    "workflow.failed": "E",
    "workflow.cancelled": "E",
    "callback.delivered": "C",
    "callback.failed": "C",
}
# A job's events, one letter each: queued once and first; started once per run (a retried job,
# or one whose run a crash cut short, runs again); one end; its callback's outcome after the end.
ONE_RUN = re.compile("QS*EC")
AFTER_A_CRASH = re.compile("QS*EC+")  # a callback sent before the kill may be sent again


def causal_faults(events: Iterable[dict[str, Any]], order: re.Pattern[str]) -> list[str]:
    """What is out of causal order in `events` (as they came): ids not increasing; per job, a
    time going backwards, or its events not in `order`."""
    faults: list[str] = []
    by_job: dict[str, list[dict[str, Any]]] = defaultdict(list)
    last_id = 0
    for event in events:
        if event["id"] <= last_id:
            faults.append(f"id {event['id']} came after id {last_id}")
        last_id = event["id"]
        by_job[event["job_id"]].append(event)
    for job_id, seen in by_job.items():
        letters = "".join(LETTER[e["type"]] for e in seen)
        if not order.fullmatch(letters):
            faults.append(f"job {job_id}: {[e['type'] for e in seen]}")
        times = [e["at"] for e in seen]
        if times != sorted(times):
            faults.append(f"job {job_id}: times go backwards {times}")
    return faults


def sse_events(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The events of parsed SSE frames, checked against their `id:` and `event:` lines."""
    for frame in frames:
        assert int(frame["id"]) == frame["data"]["id"] and frame["event"] == frame["data"]["type"]
    return [frame["data"] for frame in frames]


def each_job_ended(job_ids: set[str]) -> Any:
    """A `read_until` condition: every one of these jobs' callbacks has an outcome event."""

    def done(frames: list[dict[str, Any]]) -> bool:
        return job_ids <= {
            f["data"]["job_id"] for f in frames if f["event"].startswith("callback.")
        }

    return done


def admin(settings: Settings) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(settings, 'admin')}"}


async def post_job(client: TestClient, auth: dict[str, str], body: dict[str, Any]) -> str:
    response = await client.post(EXECUTE, json=body, headers=auth)
    assert response.status == 202, await response.text()
    return str((await response.json())["job_id"])


async def status_of(client: TestClient, auth: dict[str, str], job_id: str) -> dict[str, Any]:
    response = await client.get(f"/api/v1/workflow/status/{job_id}", headers=auth)
    assert response.status == 200
    return await response.json()  # type: ignore[no-any-return]


# ---- event order ------------------------------------------------------------------------------

ORDER_JOBS = 50


def order_job(n: int, hook: str) -> dict[str, Any]:
    """Jobs that end every way there is: completed, completed on a retry, failed, cancelled
    (running, or queued behind the two long sleepers that fill the queue's two slots)."""
    kinds: list[tuple[str, dict[str, Any]]] = [
        ("echo", {}),
        ("crash", {}),
        ("flaky", {"failures": 1}),
        ("sleep", {"seconds": 0.01}),
        ("echo", {}),
    ]
    processing_type, parameters = ("sleep", {"seconds": 1.0}) if n < 2 else kinds[n % 5]
    return {
        "processing_type": processing_type,
        "mode": "async",
        "items": [{"json": {"n": n}}],
        "parameters": parameters,
        "workflow_id": "wf-order",
        "callback_url": hook,
    }


async def test_each_job_s_events_come_in_causal_order_in_the_log_sse_and_webhooks(
    make_client: ClientFactory, settings: Settings, auth: dict[str, str], target: Target
) -> None:
    client = await make_client(
        callback_secret=CALLBACK_SECRET,
        retry_base_s=0.01,
        queues=[{"name": "default", "concurrency": 2}],
    )
    subscribed = await client.post(
        "/api/v1/subscriptions",
        json={"url": target.url("/events"), "events": JOB_EVENTS, "workflow_id": "wf-order"},
        headers=admin(settings),
    )
    assert subscribed.status == 201
    async with client.get("/api/v1/events?workflow_id=wf-order", headers=auth) as live:
        jobs = await asyncio.gather(
            *(
                post_job(client, auth, order_job(n, target.url(f"/cb/{n}")))
                for n in range(ORDER_JOBS)
            )
        )
        # Queued jobs (the sleepers hold both slots for a second), and a running sleeper.
        for job_id in (*jobs[10::10], jobs[0]):
            cancelled = await client.delete(f"/api/v1/workflow/{job_id}", headers=auth)
            assert cancelled.status in (200, 409)  # 409: it had ended already
        streamed = sse_events(await read_until(live, each_job_ended(set(jobs)), timeout=30))
    async with client.get(
        "/api/v1/events?workflow_id=wf-order", headers={**auth, "Last-Event-ID": "0"}
    ) as replay:
        logged = sse_events(await read_until(replay, lambda frames: len(frames) >= len(streamed)))

    assert causal_faults(logged, ONE_RUN) == []
    assert streamed == logged  # live, every event once, in the log's order
    assert {e["job_id"] for e in logged} == set(jobs)
    # A job cancelled while queued never starts afterwards (ONE_RUN: nothing after its end).
    ends = Counter(e["type"] for e in logged if LETTER[e["type"]] == "E")
    assert ends["workflow.cancelled"] >= 2 and ends["workflow.failed"] >= 9

    # Webhooks: each event once, signed, as logged. They travel as separate deliveries and may
    # arrive in any order; each carries the event's id and time, which are in causal order.
    hooks = [r for r in target.received if r.path == "/events"]
    for _ in range(200):
        if len(hooks) >= len(logged):
            break
        await asyncio.sleep(0.05)
        hooks = [r for r in target.received if r.path == "/events"]
    for hook in hooks:
        Webhook(CALLBACK_SECRET).verify(hook.body, hook.headers)
    assert Counter(h.headers["webhook-id"] for h in hooks).most_common(1)[0][1] == 1
    assert sorted((json_of(h) for h in hooks), key=lambda e: e["id"]) == logged


# ---- callback delivery ------------------------------------------------------------------------


async def test_callbacks_are_signed_and_taken_once_each_with_one_webhook_id(
    make_client: ClientFactory, auth: dict[str, str], target: Target
) -> None:
    client = await make_client(callback_secret=CALLBACK_SECRET, retry_base_s=0.01)
    target.script = [503, 503, 503]  # fewer than open the breaker: these three are retried
    target.headers = {"Retry-After": "0"}
    body = {"processing_type": "echo", "mode": "async", "workflow_id": "wf-cb"}
    jobs = await asyncio.gather(
        *(
            post_job(
                client,
                auth,
                {**body, "items": [{"json": {"n": n}}], "callback_url": target.url(f"/cb/{n}")},
            )
            for n in range(20)
        )
    )
    calls = await target.wait_for(len(jobs) + 3)
    for call in calls:
        Webhook(CALLBACK_SECRET).verify(call.body, call.headers)
    taken = Counter(call.headers["webhook-id"] for call in calls[3:])  # answered 200
    assert taken == Counter(f"cb_{job_id}" for job_id in jobs)
    for n, job_id in enumerate(jobs):
        sent = [c for c in calls if c.headers["webhook-id"] == f"cb_{job_id}"]
        assert {c.path for c in sent} == {f"/cb/{n}"} and len({c.body for c in sent}) == 1
        assert json_of(sent[0])["job_id"] == job_id and json_of(sent[0])["status"] == "completed"
    for job_id in jobs:
        for _ in range(100):
            callback = (await status_of(client, auth, job_id))["callback"]
            if callback["state"] != "pending":
                break
            await asyncio.sleep(0.02)
        assert callback["state"] == "delivered" and callback["delivered_at"] is not None
    await asyncio.sleep(0.3)
    assert len(target.received) == len(jobs) + 3  # nothing more once each was taken


ANNOUNCED = re.compile(r"^callback (cb_\S+) to .*; next try in ([0-9.]+) s$")


async def test_a_failing_callback_keeps_its_own_schedule_beside_successful_ones(
    tmp_path: Path, target: Target, backend: str, request: pytest.FixtureRequest
) -> None:
    """One job's callback path answers 503 twenty times while a stream of other jobs' callbacks
    to the same host are taken. It is delivered on its 21st attempt, and no wait is cut short
    by the others' successes: each lasts what the bridge announced in its log (and no more than
    the schedule's bound, min(cap, base·2^(n-1))). Today's failure was 12 attempts in 0.93 s."""
    base, cap = 0.02, 0.3
    target.by_path["/slow"] = [503] * 20
    daemon_env = backend_env(tmp_path, backend, request) | {
        "BRIDGE_RETRY_BASE_S": str(base),
        "BRIDGE_CALLBACK_RETRY_MAX_S": str(cap),
        "BRIDGE_CALLBACK_MAX_ATTEMPTS": "25",
        "BRIDGE_BREAKER_FAILURES": "100",  # the breaker is not what is tested here
    }
    auth = headers(tmp_path)
    async with aiohttp.ClientSession() as session, Daemon(daemon_env) as daemon:
        slow = await submit(session, daemon, auth, 0, target.url("/slow"))
        others = 0

        def slow_calls() -> list[Any]:
            return [r for r in target.received if r.path == "/slow"]

        while len(slow_calls()) < 21:  # a stream of successes meanwhile, one every 20 ms
            await submit(session, daemon, auth, others + 1, target.url("/ok"))
            others += 1
            await asyncio.sleep(0.02)
            assert others < 1500, f"not delivered: {len(slow_calls())} attempts so far"
        async with session.get(
            f"{daemon.url}/api/v1/workflow/status/{slow}", headers=auth
        ) as response:
            callback = (await response.json())["callback"]
        announced = [
            float(m[2])
            for record in daemon.records()
            if (m := ANNOUNCED.match(record.get("msg", ""))) and m[1] == f"cb_{slow}"
        ]
    calls = slow_calls()
    assert len(calls) == 21 and {c.headers["webhook-id"] for c in calls} == {f"cb_{slow}"}
    assert callback["state"] == "delivered" and callback["attempts"] == 21
    assert callback["next_attempt_at"] is None and callback["waiting_for"] is None
    assert others >= 20, "the stream of other callbacks did not run beside it"
    gaps = [b.at - a.at for a, b in itertools.pairwise(calls)]
    assert len(announced) == len(gaps) == 20
    for n, (gap, said) in enumerate(zip(gaps, announced, strict=True), start=1):
        # measured where they arrive: a loaded machine may delay one arrival by some ms
        assert gap >= said - 0.03, f"wait {n} cut short: {gap:.3f} s of the {said:.3f} s announced"
        assert said <= min(cap, base * 2 ** (n - 1)) + 0.001, f"wait {n} beyond the schedule"
    assert sum(gaps) >= sum(announced) - 0.05


async def wait_until(check: Any, timeout: float = 10) -> None:
    for _ in range(int(timeout / 0.02)):
        if await check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("not in time")


async def test_a_waiting_callback_says_when_and_why(
    make_client: ClientFactory,
    settings: Settings,
    auth: dict[str, str],
    target: Target,
    unused_tcp_port: int,
) -> None:
    """While a callback waits, its job shows the attempts so far, the last error, when the next
    attempt is due and why; `/admin/status` shows per host the deliveries waiting, by why, and
    its breaker; the attempts metric counts by outcome, every series there from start-up."""
    client = await make_client(retry_base_s=0.01, breaker_failures=1, breaker_reset_s=60)
    metrics = await (await client.get("/metrics")).text()
    for kind in ("callback", "event"):
        for outcome in ATTEMPT_OUTCOMES:
            assert f'attempts_total{{kind="{kind}",outcome="{outcome}"}} 0.0' in metrics
    target.by_path["/later"] = [503]
    target.headers = {"Retry-After": "30"}
    down = f"http://127.0.0.1:{unused_tcp_port}/hook"  # nothing listens there
    body = {"processing_type": "echo", "mode": "async", "items": [{"json": {}}]}
    later = await post_job(client, auth, {**body, "callback_url": target.url("/later")})
    first_down = await post_job(client, auth, {**body, "callback_url": down})

    async def waiting(job_id: str, why: str) -> bool:
        return (await status_of(client, auth, job_id))["callback"]["waiting_for"] == why

    await wait_until(lambda: waiting(later, "retry_after"))
    await wait_until(lambda: waiting(first_down, "breaker_open"))
    second_down = await post_job(client, auth, {**body, "callback_url": down})
    await wait_until(lambda: waiting(second_down, "breaker_open"))
    now = time.time()

    shown = {j: (await status_of(client, auth, j))["callback"] for j in (later, second_down)}
    assert shown[later]["state"] == "pending" and shown[later]["attempts"] == 1
    assert shown[later]["last_error"] == "HTTP 503 Service Unavailable"
    assert now + 25 < shown[later]["next_attempt_at"] < now + 31
    assert shown[second_down]["attempts"] == 0  # the open breaker spares the host: not sent
    assert now + 50 < shown[second_down]["next_attempt_at"] < now + 61

    response = await client.get("/admin/status", headers=admin(settings))
    hosts = (await response.json())["deliveries"]["hosts"]
    assert hosts[f"127.0.0.1:{URL(target.url()).port}"] == {
        "breaker": "open",  # one failure opens a breaker here; its own Retry-After is sooner
        "sending": 0,
        "queued": 0,
        "waiting": {"backoff": 0, "retry_after": 1, "breaker_open": 0},
        "next_attempt_at": shown[later]["next_attempt_at"],
    }
    assert hosts[f"127.0.0.1:{unused_tcp_port}"] | {"next_attempt_at": None} == {
        "breaker": "open",
        "sending": 0,
        "queued": 0,
        "waiting": {"backoff": 0, "retry_after": 0, "breaker_open": 2},
        "next_attempt_at": None,
    }
    metrics = await (await client.get("/metrics")).text()
    assert 'attempts_total{kind="callback",outcome="server_error"} 1.0' in metrics
    assert 'attempts_total{kind="callback",outcome="connection_error"} 1.0' in metrics


async def test_a_callback_being_sent_shows_no_wait_and_a_replay_shows_pending(
    make_client: ClientFactory, settings: Settings, auth: dict[str, str], target: Target
) -> None:
    """An attempt under way is not shown as a wait; a dead letter counts in bridge_dead_letters at
    once; replayed, its job's callback is pending again (not failed) while it is retried."""
    client = await make_client(retry_base_s=0.01, callback_max_attempts=2, breaker_failures=100)
    body = {"processing_type": "echo", "mode": "async", "items": [{"json": {}}]}
    target.headers = {"Retry-After": "1"}
    target.by_path["/slow"] = [503]
    target.hold_s["/slow"] = 1.5  # every call there is answered after 1.5 s
    slow = await post_job(client, auth, {**body, "callback_url": target.url("/slow")})

    async def callback(job_id: str) -> dict[str, Any]:
        return (await status_of(client, auth, job_id))["callback"]  # type: ignore[no-any-return]

    async def sending_again() -> bool:  # the second attempt has reached the target
        return len([r for r in target.received if r.path == "/slow"]) == 2

    await wait_until(sending_again, timeout=15)
    shown = await callback(slow)
    assert shown["state"] == "pending" and shown["attempts"] == 1
    assert shown["next_attempt_at"] is None and shown["waiting_for"] is None
    await wait_until(lambda: _state_is(client, auth, slow, "delivered"), timeout=15)

    target.by_path["/dead"] = [404, 503]  # a dead letter; replayed: one 503, then taken
    dead = await post_job(client, auth, {**body, "callback_url": target.url("/dead")})
    await wait_until(lambda: _state_is(client, auth, dead, "failed"), timeout=15)
    metrics = await (await client.get("/metrics")).text()
    assert "bridge_dead_letters 1.0" in metrics
    response = await client.post(f"/admin/dead-letters/cb_{dead}/replay", headers=admin(settings))
    assert response.status == 200, await response.text()
    shown = await callback(dead)
    assert shown["state"] == "pending" and shown["attempts"] == 0
    await wait_until(lambda: _state_is(client, auth, dead, "pending", waiting="retry_after"))
    await wait_until(lambda: _state_is(client, auth, dead, "delivered"), timeout=15)
    metrics = await (await client.get("/metrics")).text()
    assert "bridge_dead_letters 0.0" in metrics
    events = await client.app[EVENTS].since(0, types=["callback.failed", "callback.delivered"])
    assert [e.type for e in events if e.job_id == dead] == ["callback.failed", "callback.delivered"]


async def _state_is(
    client: TestClient, auth: dict[str, str], job_id: str, state: str, waiting: str | None = None
) -> bool:
    shown = (await status_of(client, auth, job_id))["callback"]
    return bool(shown["state"] == state and (waiting is None or shown["waiting_for"] == waiting))


async def test_a_new_subscription_gets_every_later_event_of_every_instance(
    make_client: ClientFactory,
    backend: str,
    tmp_path: Path,
    settings: Settings,
    auth: dict[str, str],
    target: Target,
) -> None:
    """Events published right after a subscription's 201 — by the instance that made it or by
    another on the same Redis, before that one has learned of it — each reach it once."""
    first = await make_client(data_dir=tmp_path / "first")
    second = await make_client(data_dir=tmp_path / "second") if backend == "redis" else first
    wanted = {"url": target.url("/events"), "events": ["workflow.completed"], "workflow_id": "wf-s"}
    response = await first.post("/api/v1/subscriptions", json=wanted, headers=admin(settings))
    assert response.status == 201
    made = await response.json()
    listed = await (await second.get("/api/v1/subscriptions", headers=admin(settings))).json()
    assert [s["id"] for s in listed["subscriptions"]] == [made["id"]]  # at once, on both
    body = {"processing_type": "echo", "mode": "async", "workflow_id": "wf-s"}
    jobs = [
        await post_job(client, auth, {**body, "items": [{"json": {"n": n}}]})
        for n, client in enumerate([first, second] * 5)
    ]
    calls = await target.wait_for(len(jobs), timeout=15)
    await asyncio.sleep(2.5)  # past the instances' reload of subscriptions: nothing comes twice
    delivered = Counter(json_of(call)["job_id"] for call in target.received)
    assert delivered == Counter(jobs), f"{len(calls)} calls"


# ---- status -----------------------------------------------------------------------------------

VOLATILE = ("job_id", "trace_id", "created_at", "started_at", "finished_at", "duration_ms")


def shape(document: dict[str, Any]) -> dict[str, Any]:
    """A status document with what differs from run to run (ids, times) reduced to whether it is
    there; everything else as it is."""
    shaped = {k: (v is not None) if k in VOLATILE else v for k, v in document.items()}
    if shaped["callback"] is not None:
        shaped["callback"] = {
            **shaped["callback"],
            "delivered_at": shaped["callback"]["delivered_at"] is not None,
            # Each attempt's time differs from run to run; its number and outcome do not.
            "history": [
                {k: v for k, v in attempt.items() if k != "at"}
                for attempt in shaped["callback"]["history"]
            ],
        }
    return shaped


BASE = {
    "job_id": True,
    "mode": "async",
    "processing_type": "sleep",
    "workflow_id": "wf-status",
    "execution_id": "ex-1",
    "node": "Python Bridge",
    "priority": 7,
    "queue": "default",
    "max_attempts": 3,
    "interruptions": 0,
    "timeout_s": 30.0,
    "api": "items",
    "trace_id": True,
    "created_at": True,
    "item_count": 2,
    "errors": [],
    "reported": None,
    "retry_at": None,
}
PENDING = {
    "state": "pending",
    "attempts": 0,
    "last_error": None,
    "next_attempt_at": None,
    "waiting_for": None,
    "delivered_at": False,
    "history": [],
}


async def watch(
    client: TestClient, auth: dict[str, str], job_id: str, until: str
) -> list[dict[str, Any]]:
    """The job's status documents, shaped, each different one once, until its status is `until`
    and its callback is no longer pending."""
    seen: list[dict[str, Any]] = []
    for _ in range(400):
        document = shape(await status_of(client, auth, job_id))
        if not seen or seen[-1] != document:
            seen.append(document)
        if document["status"] == until and document["callback"]["state"] != "pending":
            return seen
        await asyncio.sleep(0.01)
    raise AssertionError(f"job {job_id} never got to {until}: {seen[-1]}")


async def test_status_documents_and_their_transitions_are_the_same(
    make_client: ClientFactory, auth: dict[str, str], target: Target
) -> None:
    client = await make_client(queues=[{"name": "default", "concurrency": 1}])
    body = {
        "processing_type": "sleep",
        "mode": "async",
        "items": [{"json": {"n": 0}}, {"json": {"n": 1}}],
        "parameters": {"seconds": 0.3},
        "workflow_id": "wf-status",
        "execution_id": "ex-1",
        "node": "Python Bridge",
        "priority": 7,
        "timeout_s": 30,
        "callback_url": target.url("/cb"),
    }
    first = await post_job(client, auth, {**body, "idempotency_key": "status-1"})
    second = await post_job(client, auth, {**body, "idempotency_key": "status-2"})
    watching = asyncio.create_task(watch(client, auth, first, "completed"))
    queued = shape(await status_of(client, auth, second))  # behind the first (one slot)
    cancelled = await client.delete(f"/api/v1/workflow/{second}", headers=auth)
    assert cancelled.status == 200
    first_seen = await watching
    second_seen = await watch(client, auth, second, "cancelled")

    assert queued == {
        **BASE,
        "status": "queued",
        "idempotency_key": "status-2",
        "attempts": 0,
        "started_at": False,
        "finished_at": False,
        "duration_ms": False,
        "output_count": None,
        "error_count": 0,
        "error": None,
        "callback": {"url": target.url("/cb"), "method": "POST", **PENDING},
    }
    running = {
        **queued,
        "status": "running",
        "idempotency_key": "status-1",
        "attempts": 1,
        "started_at": True,
    }
    completed = {
        **running,
        "status": "completed",
        "finished_at": True,
        "duration_ms": True,
        "output_count": 2,
        "items": [
            {"json": {"slept": 0.3}, "pairedItem": {"item": 0}},
            {"json": {"slept": 0.3}, "pairedItem": {"item": 1}},
        ],
    }
    delivered = {
        "state": "delivered",
        "attempts": 1,
        "delivered_at": True,
        "history": [{"attempt": 1, "outcome": "delivered", "error": None}],
    }
    called_back = {**completed, "callback": {**completed["callback"], **delivered}}
    # (the first may be seen queued, and its end before its callback's, if the poll is quick)
    assert [s for s in first_seen if s["status"] != "queued"] in (
        [running, completed, called_back],
        [running, called_back],
    )
    ended = {
        **queued,
        "status": "cancelled",
        "finished_at": True,
        "error": {"code": "cancelled", "message": "cancelled", "retryable": False},
        "items": [],
    }
    assert second_seen[-1] == {**ended, "callback": {**ended["callback"], **delivered}}


# ---- recovery ---------------------------------------------------------------------------------

RECOVERY_JOBS = 1000


def backend_env(tmp_path: Path, backend: str, request: pytest.FixtureRequest) -> dict[str, str]:
    """A daemon's environment on `backend` (on Redis, a SIGKILLed instance's jobs are taken over
    one second after it stopped renewing them)."""
    if backend == "embedded":
        return env(tmp_path)
    redis = request.getfixturevalue("redis_url")
    return env(tmp_path, BRIDGE_REDIS_URL=redis, BRIDGE_REDIS_CLAIM_IDLE_S="1")


async def test_sigkill_mid_batch_loses_no_accepted_job(
    tmp_path: Path, target: Target, backend: str, request: pytest.FixtureRequest
) -> None:
    """SIGKILL while jobs are submitted, run and called back; after a restart every accepted job
    ends exactly once (one end event, after its queued event) with its callback delivered."""
    auth = headers(tmp_path)
    accepted: list[str] = []
    async with aiohttp.ClientSession() as session:
        first = await Daemon(backend_env(tmp_path, backend, request)).start()

        numbers = iter(range(RECOVERY_JOBS))

        async def submit_all() -> None:
            for n in numbers:  # shared by the submitters: each number once
                accepted.append(await submit(session, first, auth, n, target.url()))

        # The kill lands while jobs are still being submitted, however fast the machine is:
        # two submitters outpace the four workers (0.2 s a job, 20 a second) many times over.
        submitting = asyncio.gather(*(submit_all() for _ in range(2)))
        try:
            # Mid-batch: some callbacks in, hundreds of jobs accepted and not yet run.
            while len(accepted) < 200 or len(target.received) < 5:
                assert not submitting.done(), "every job was submitted before the kill"
                await asyncio.sleep(0.01)
            submitting.cancel()  # a job accepted but not recorded here is simply not checked
            await asyncio.gather(submitting, return_exceptions=True)
            first.signal(signal.SIGKILL)
            assert await first.wait() == -signal.SIGKILL
        finally:
            await first.kill()
        before_restart = {r.headers["webhook-id"] for r in target.received}
        assert len(before_restart) < len(accepted) // 2, "the kill came too late to test anything"
        # More workers after the restart, only to finish the rest sooner.
        queues = '[{"name": "default", "concurrency": 32}]'
        second_env = {**backend_env(tmp_path, backend, request), "BRIDGE_QUEUES": queues}
        second = await Daemon(second_env).start()
        try:
            async with session.get(
                f"{second.url}/api/v1/events?workflow_id=wf-recovery",
                headers={**auth, "Last-Event-ID": "0"},
            ) as log:
                frames = await read_until(log, each_job_ended(set(accepted)), timeout=90)
            statuses = [
                await (
                    await session.get(f"{second.url}/api/v1/workflow/status/{job_id}", headers=auth)
                ).json()
                for job_id in accepted
            ]
        finally:
            await second.kill()
    taken = {r.headers["webhook-id"] for r in target.received}
    completed = sum(s["status"] == "completed" for s in statuses)
    print(
        f"\n{backend}: accepted {len(accepted)}, completed {completed}, "
        f"lost {len(accepted) - completed}, callbacks before the kill {len(before_restart)}, "
        f"repeated callbacks {len(target.received) - len(taken)}"
    )
    assert [s["status"] for s in statuses] == ["completed"] * len(accepted)
    assert [s["callback"]["state"] for s in statuses] == ["delivered"] * len(accepted)
    assert {f"cb_{job_id}" for job_id in accepted} <= taken
    events = [e for e in sse_events(frames) if e["job_id"] in set(accepted)]
    assert causal_faults(events, AFTER_A_CRASH) == []
