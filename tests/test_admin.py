"""Admin endpoints: status, drain, dead letters and replay, retrying a job."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from aiohttp.test_utils import TestClient

from bridge.api.models import AdminStatus, DrainAnswer
from bridge.ids import new_id
from bridge.keys import LIFECYCLE, OUTBOX
from bridge.settings import Settings
from bridge.webhooks import Delivery
from tests.conftest import ClientFactory, token
from tests.smtp_server import free_port
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


async def status_when(
    client: TestClient, settings: Settings, ready: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """/admin/status once `ready` holds of it (or the last one seen, after about 10 s)."""
    for _ in range(500):
        status = await (await client.get("/admin/status", headers=admin(settings))).json()
        if ready(status):
            break
        await asyncio.sleep(0.02)
    return status  # type: ignore[no-any-return]


async def test_a_callback_waiting_for_its_retry_leaves_the_bridge_drained(
    make_client: ClientFactory, settings: Settings, auth: dict[str, str]
) -> None:
    """A callback between attempts is in the outbox, not on the wire: nothing to wait for before
    stopping (the next start, or on Redis another instance, sends it). The status shows it as
    waiting, apart from what is being sent. An n8n resume URL that is gone must not hold a
    blue-green switch for the callback's whole retry schedule."""
    client = await make_client(breaker_failures=1, breaker_reset_s=600, retry_base_s=600)
    nobody = f"http://127.0.0.1:{free_port()}/webhook-waiting/7"  # refused: nothing listens
    accepted = await client.post(EXECUTE, json=job("echo", callback_url=nobody), headers=auth)
    job_id = (await accepted.json())["job_id"]
    for _ in range(500):  # its first attempt failed: the job shows when the next one is due
        done = await finished(client, auth, job_id)
        if done["callback"]["next_attempt_at"] is not None:
            break
        await asyncio.sleep(0.02)
    assert done["callback"]["attempts"] == 1 and done["callback"]["state"] == "pending", done
    drained = await (await client.post("/admin/drain", headers=admin(settings))).json()
    assert drained["drained"] is True, drained
    assert drained["deliveries"] == {"sending": 0, "waiting": 1}
    status = await (await client.get("/admin/status", headers=admin(settings))).json()
    assert status["drained"] is True
    DrainAnswer.model_validate(drained, strict=True)  # as the OpenAPI document describes them
    AdminStatus.model_validate(status, strict=True)
    assert (status["deliveries"]["sending"], status["deliveries"]["waiting"]) == (0, 1)
    [host] = status["deliveries"]["hosts"].values()
    assert host["sending"] == 0 and sum(host["waiting"].values()) == 1
    assert host["next_attempt_at"] == done["callback"]["next_attempt_at"]


async def test_a_drained_bridge_still_sends_its_waiting_callback_and_is_not_drained_meanwhile(
    make_client: ClientFactory, settings: Settings, auth: dict[str, str], target: Target
) -> None:
    """Its deliveries stay its own while it lives (no other instance takes them over until it
    has stopped), so a drained bridge left running — kept for a rollback — goes on with them:
    while one is being sent it is not drained, and afterwards it is again."""
    client = await make_client(retry_base_s=0.01)
    target.script = [503]
    target.headers = {"Retry-After": "3"}  # the first attempt fails, the next one in 3 s
    accepted = await client.post(
        EXECUTE, json=job("echo", callback_url=target.url("/hook")), headers=auth
    )
    job_id = (await accepted.json())["job_id"]
    await target.wait_for(1)
    target.hold_s["/hook"] = 1.5  # the next attempt is answered only after that
    await status_when(client, settings, lambda s: s["deliveries"].get("waiting") == 1)
    drained = await (await client.post("/admin/drain", headers=admin(settings))).json()
    assert drained["drained"] is True and drained["deliveries"] == {"sending": 0, "waiting": 1}
    sending = await status_when(client, settings, lambda s: s["deliveries"]["sending"] == 1)
    assert sending["drained"] is False and sending["deliveries"]["waiting"] == 0
    done = await after_callback(client, auth, job_id, "delivered")
    assert done["callback"]["state"] == "delivered" and len(target.received) == 2
    after = await status_when(client, settings, lambda s: s["drained"])
    assert after["drained"] is True and after["draining"] is True
    assert (after["deliveries"]["sending"], after["deliveries"]["waiting"]) == (0, 0)


async def test_a_waiting_callback_left_by_a_stopped_bridge_is_sent_after_it(
    make_client: ClientFactory, settings: Settings, auth: dict[str, str], target: Target
) -> None:
    """What makes stopping a drained bridge with a waiting callback safe. On Redis another
    instance takes the callback over once the bridge has stopped — never while it lives, even
    drained; embedded, the next start on the same data directory sends it. Either way with the
    same webhook-id, at once. The stop itself does not wait for the callback's next attempt."""
    first = await make_client(retry_base_s=0.01)
    target.script = [503]
    target.headers = {"Retry-After": "600"}
    accepted = await first.post(
        EXECUTE, json=job("echo", callback_url=target.url("/hook")), headers=auth
    )
    job_id = (await accepted.json())["job_id"]
    await target.wait_for(1)
    await status_when(first, settings, lambda s: s["deliveries"]["waiting"] == 1)
    drained = await (await first.post("/admin/drain", headers=admin(settings))).json()
    assert drained["drained"] is True and drained["deliveries"] == {"sending": 0, "waiting": 1}
    other = None
    if settings.redis_url is not None:  # the new colour, running beside the drained one
        other = await make_client(retry_base_s=0.01, redis_claim_idle_s=1)
        await asyncio.sleep(3.0)  # three rounds of looking for deliveries of stopped instances
        assert len(target.received) == 1, "taken over from an instance still alive"
        # A draining instance takes on no more work, deliveries of stopped ones included.
        await other.post("/admin/drain", headers=admin(settings))
    started = time.monotonic()
    await first.close()  # what SIGTERM does after the HTTP side
    assert time.monotonic() - started < 4.0  # the deliverer's bound is 5 s: not waited out
    if other is None:
        other = await make_client(retry_base_s=0.01)  # the same data directory
    else:
        await asyncio.sleep(3.0)
        assert len(target.received) == 1, "taken over by a draining instance"
        await other.delete("/admin/drain", headers=admin(settings))
    [one, two] = await target.wait_for(2)
    assert one.headers["webhook-id"] == two.headers["webhook-id"]
    done = await after_callback(other, auth, job_id, "delivered")
    assert done["callback"]["state"] == "delivered" and done["callback"]["attempts"] == 2


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


async def every_letter(
    client: TestClient, settings: Settings, limit: int, follow: str, count: int
) -> list[dict[str, Any]]:
    """The dead letters, page by page of `limit`, following `next_before` (follow "before") or
    `next_cursor` ("cursor") to the end; a paging that goes on past twice `count` fails."""
    seen: list[dict[str, Any]] = []
    params = {"limit": str(limit)}
    while len(seen) <= 2 * count:
        answer = await client.get("/admin/dead-letters", params=params, headers=admin(settings))
        assert answer.status == 200, await answer.text()
        body = await answer.json()
        seen += body["dead_letters"]
        following = body[f"next_{follow}"]
        if following is None:
            return seen
        params = {"limit": str(limit), follow: repr(following) if follow == "before" else following}
    raise AssertionError(f"paging went on past {len(seen)} letters of {count}")


def newest_first(letters: list[dict[str, Any]]) -> list[str]:
    """The ids of `letters` in the order the listing promises: by created_at, then id, newest
    first."""
    return [
        d["id"] for d in sorted(letters, key=lambda d: (d["created_at"], d["id"]), reverse=True)
    ]


async def test_letters_replayed_and_dead_again_are_paged_newest_first_each_once(
    make_client: ClientFactory, settings: Settings, auth: dict[str, str]
) -> None:
    """Reported: after "Replay all" and the letters' death again, the listing was in no order
    and `next_before` served the same page forever (embedded: the replay's created_at reached
    the record but not the column the store sorts by)."""
    client = await make_client(retry_base_s=0.01, callback_max_attempts=1, breaker_failures=1000)
    for _ in range(12):  # each to its own closed port
        body = job("echo", callback_url=f"http://127.0.0.1:{free_port()}/cb")
        assert (await client.post(EXECUTE, json=body, headers=auth)).status == 202
    first = await dead_letters(client, settings, 12)
    replayed_at = time.time()
    again = {letter["id"] for letter in first[-5:]}  # the oldest five
    for letter_id in again:
        answer = await client.post(
            f"/admin/dead-letters/{letter_id}/replay", headers=admin(settings)
        )
        assert answer.status == 200
    for _ in range(500):
        answer = await client.get("/admin/dead-letters?limit=500", headers=admin(settings))
        letters = (await answer.json())["dead_letters"]
        dead_again = {d["id"] for d in letters if d["created_at"] >= replayed_at}
        if len(letters) == 12 and dead_again == again:
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError(f"the replayed letters did not die again: {letters}")
    assert [d["id"] for d in letters] == newest_first(letters)
    assert {d["id"] for d in letters[:5]} == again  # made again: the newest
    for follow in ("before", "cursor"):
        paged = await every_letter(client, settings, 5, follow, 12)
        assert [d["id"] for d in paged] == newest_first(letters), follow


def dead_letter(created_at: float, kind: str = "callback") -> Delivery:
    letter_id = f"evt_7_{new_id()}" if kind == "event" else f"cb_{new_id()}"
    return Delivery(
        id=letter_id,
        kind="event" if kind == "event" else "callback",
        state="dead",
        url="http://127.0.0.1:9/cb",
        job_id=None if kind == "event" else new_id(),
        created_at=created_at,
        dead_at=created_at + 1,
        attempts=1,
        last_error="connection refused",
    )


async def put_dead(client: TestClient, letters: list[Delivery]) -> None:
    outbox = client.app[OUTBOX]
    for letter in letters:
        outbox.put(letter)
    await outbox.flush()


async def test_dead_letters_made_in_the_same_instant_are_each_paged_once(
    client: TestClient, settings: Settings
) -> None:
    """Letters that share a created_at (a coarse clock, many made at once) are each reached
    once by next_cursor, whichever page boundary falls among them; `before`, a bare time, means
    strictly before it."""
    at = time.time()
    tied = [dead_letter(at) for _ in range(7)]
    others = [dead_letter(at - 2), dead_letter(at - 1), dead_letter(at + 1)]
    # Made at one time, then again (a replay) at another: listed by the last.
    moved = dead_letter(at - 3)
    await put_dead(client, [*tied, *others, moved])
    moved = moved.model_copy(update={"created_at": at + 2})
    await put_dead(client, [moved])
    everything = [d.shown() for d in (*tied, *others, moved)]
    for limit in (1, 3, 7, 500):
        paged = await every_letter(client, settings, limit, "cursor", 11)
        assert [d["id"] for d in paged] == newest_first(everything), limit
    older = await client.get(
        "/admin/dead-letters", params={"before": repr(at)}, headers=admin(settings)
    )
    assert [d["id"] for d in (await older.json())["dead_letters"]] == [
        others[1].id,
        others[0].id,
    ]
    for params, pointer in (
        ({"cursor": "bm90IGEgY3Vyc29y"}, "/query/cursor"),
        ({"cursor": "="}, "/query/cursor"),
    ):
        refused = await client.get("/admin/dead-letters", params=params, headers=admin(settings))
        assert refused.status == 422
        details = (await refused.json())["error"]["details"]
        assert [detail["pointer"] for detail in details] == [pointer]
    both = await client.get(
        "/admin/dead-letters", params={"before": repr(at), "cursor": "x"}, headers=admin(settings)
    )
    assert both.status == 422


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
