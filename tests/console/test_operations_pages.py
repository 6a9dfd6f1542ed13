"""The console's operations pages, signed in as an operator is, on both backends: dead letters
and their replay, subscriptions, processors and their try-it form, drain and undrain. Each POST
without the session's CSRF token is refused and changes nothing; a workflow-limited session
reaches only the processors; whatever a workflow, a plugin or an error puts on a page is text."""

from __future__ import annotations

import asyncio
import html
import io
import json
import re
from typing import Any
from urllib.parse import urlencode

import pytest
from aiohttp.test_utils import TestClient

from bridge.auth import mint_token
from bridge.console import dead_letters as dead_letters_page
from bridge.events import EVENT_TYPES
from bridge.keys import REGISTRY
from bridge.settings import Settings
from tests.conftest import PLUGINS, ClientFactory, token
from tests.console.signin import sign_in
from tests.plugins.hostile import DESCRIPTION
from tests.test_admin import admin, dead_letter, dead_letters, newest_first, put_dead
from tests.test_worker import after_callback, job
from tests.webhook_target import Target

EXECUTE = "/api/v1/workflow/execute"
UI = "/admin/ui"
SCRIPT = "<script>"


def flash(page: str) -> str:
    """The text of the page's outcome message(s)."""
    marker = 'class="flash" role="status">'
    start = page.index(marker) + len(marker)
    return html.unescape(page[start : page.index("</p>", start)])


async def letters_of(client: TestClient, settings: Settings, kind: str, count: int) -> list[str]:
    """The ids of the dead letters of `kind`, once there are `count` of them."""
    for _ in range(500):
        answer = await client.get("/admin/dead-letters?limit=500", headers=admin(settings))
        found = [d["id"] for d in (await answer.json())["dead_letters"] if d["kind"] == kind]
        if len(found) == count:
            return found
        await asyncio.sleep(0.02)
    raise AssertionError(f"expected {count} dead letters of kind {kind}, have {found}")


async def test_a_dead_callback_is_listed_and_replayed_from_the_page(
    make_client: ClientFactory, settings: Settings, auth: dict[str, str], target: Target
) -> None:
    client = await make_client(retry_base_s=0.01, callback_max_attempts=2)
    target.script = [500, 500]
    callback_url = target.url("/hook") + "?signature=sekrit-123"  # a capability: never shown
    accepted = await (
        await client.post(EXECUTE, json=job("echo", callback_url=callback_url), headers=auth)
    ).json()
    [letter] = await dead_letters(client, settings, 1)
    csrf = await sign_in(client, token(settings, "admin"), f"{UI}/dead-letters")

    page = await (await client.get(f"{UI}/dead-letters")).text()
    assert letter["id"] in page and "HTTP 500" in page
    assert f'href="/admin/ui/jobs/{accepted["job_id"]}"' in page
    assert "sekrit-123" not in page and "/hook?***" in page
    assert 'data-confirm="Send this callback again to 127.0.0.1?' in page
    assert letter["id"] in await (await client.get(f"{UI}/dead-letters?kind=callback")).text()
    assert letter["id"] not in await (await client.get(f"{UI}/dead-letters?kind=event")).text()
    assert (await client.get(f"{UI}/dead-letters?kind=nonsense")).status == 422

    replay = f"{UI}/dead-letters/{letter['id']}/replay"
    for data in ({"kind": "callback"}, {"kind": "callback", "csrf": "forged"}):
        assert (await client.post(replay, data=data)).status == 403
    assert [d["id"] for d in await dead_letters(client, settings, 1)] == [letter["id"]]
    assert len(target.received) == 2

    answer = await client.post(
        replay, data={"kind": "callback", "csrf": csrf}, allow_redirects=False
    )
    assert answer.status == 303 and answer.headers["Location"] == f"{UI}/dead-letters?kind=callback"
    shown = await client.get(answer.headers["Location"])
    assert "is being sent again" in flash(await shown.text())
    calls = await target.wait_for(3)
    assert {c.headers["webhook-id"] for c in calls} == {letter["id"]}
    done = await after_callback(client, auth, accepted["job_id"], "delivered")
    assert done["callback"]["state"] == "delivered"
    assert (
        "No dead callbacks." in await (await client.get(f"{UI}/dead-letters?kind=callback")).text()
    )
    # Replayed: it is no dead letter any more.
    assert (await client.post(replay, data={"kind": "callback", "csrf": csrf})).status == 404


async def test_replay_all_replays_the_kind_filtered_a_bounded_number_per_click(
    make_client: ClientFactory,
    settings: Settings,
    auth: dict[str, str],
    target: Target,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Six failures to one host: its breaker stays closed, so the replays go out at once.
    client = await make_client(retry_base_s=0.01, callback_max_attempts=1, breaker_failures=50)
    headers = admin(settings)
    subscribed = await client.post(
        "/api/v1/subscriptions",
        json={"url": target.url("/events"), "events": ["workflow.completed"]},
        headers=headers,
    )
    assert subscribed.status == 201
    target.by_path = {"/hook": [500] * 3, "/events": [500] * 3}
    for _ in range(3):
        body = job("echo", callback_url=target.url("/hook"))
        assert (await client.post(EXECUTE, json=body, headers=auth)).status == 202
    callbacks = await letters_of(client, settings, "callback", 3)
    await letters_of(client, settings, "event", 3)
    csrf = await sign_in(client, token(settings, "admin"), f"{UI}/dead-letters")
    page = await (await client.get(f"{UI}/dead-letters?kind=callback")).text()
    assert all(letter in page for letter in callbacks)
    # Pages as the API's: `limit`, and a cursor in the link to the older ones.
    first_page = await (await client.get(f"{UI}/dead-letters?kind=callback&limit=2")).text()
    older = html.unescape(first_page.split('<a href="')[-1].split('">Older</a>')[0])
    assert older.startswith(f"{UI}/dead-letters?kind=callback&cursor=")
    second_page = await (await client.get(older)).text()
    assert sorted(letter for letter in callbacks if letter in first_page + second_page) == sorted(
        callbacks
    )
    assert sum(letter in second_page for letter in callbacks) == 1 and "Newest" in second_page
    assert "Replay the dead callbacks, newest first, at most 1000 this time?" in page
    assert (
        "Replay the dead letters (6), newest first"
        in await (await client.get(f"{UI}/dead-letters")).text()
    )

    assert (await client.post(f"{UI}/dead-letters/replay", data={"kind": "callback"})).status == 403
    await letters_of(client, settings, "callback", 3)

    monkeypatch.setattr(dead_letters_page, "REPLAY_LIMIT", 2)
    first = await client.post(f"{UI}/dead-letters/replay", data={"kind": "callback", "csrf": csrf})
    assert first.status == 200 and first.url.path == f"{UI}/dead-letters"
    said = flash(await first.text())
    assert "Replayed 2 of the dead callbacks." in said and "More remain" in said
    await letters_of(client, settings, "callback", 1)
    second = await client.post(f"{UI}/dead-letters/replay", data={"kind": "callback", "csrf": csrf})
    said = flash(await second.text())
    assert "Replayed 1 of the dead callbacks." in said and "More remain" not in said
    await letters_of(client, settings, "callback", 0)
    await letters_of(client, settings, "event", 3)  # another kind: left as they were
    assert len([r for r in await target.wait_for(9) if r.path == "/hook"]) == 6


def older_link(page: str) -> str | None:
    if ">Older</a>" not in page:
        return None
    return html.unescape(page.split('<a href="')[-1].split('">Older</a>')[0])


async def walk(client: TestClient, address: str) -> list[str]:
    """The ids of the dead letters on the page at `address` and on each its Older links lead
    to, in the order shown; a walk past 100 pages fails."""
    seen: list[str] = []
    next_page: str | None = address
    for _ in range(100):
        if next_page is None:
            return seen
        answer = await client.get(next_page)
        assert answer.status == 200, next_page
        page = await answer.text()
        seen += re.findall(r'action="/admin/ui/dead-letters/([^"/]+)/replay"', page)
        next_page = older_link(page)
    raise AssertionError(f"the Older links went on past 100 pages ({len(seen)} letters)")


async def test_older_links_walk_every_dead_letter_once_newest_first(
    client: TestClient, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reported: after letters were replayed and died again, "Older" served page 1 again
    forever. Letters made in the same instant, and one made again later (a replay), are each
    shown once, newest first, by every filter, whichever page boundary falls among them."""
    at = 1_800_000_000.25
    callbacks = [dead_letter(at) for _ in range(6)] + [dead_letter(at - n) for n in (1, 2, 5)]
    events = [dead_letter(at, "event") for _ in range(4)] + [dead_letter(at + 1, "event")]
    moved = dead_letter(at - 10)
    await put_dead(client, [*callbacks, *events, moved])
    moved = moved.model_copy(update={"created_at": at + 2})
    await put_dead(client, [moved])
    callbacks.append(moved)
    await sign_in(client, token(settings, "admin"), f"{UI}/dead-letters")
    every = [letter.shown() for letter in (*callbacks, *events)]
    shown_callbacks = [letter.shown() for letter in callbacks]
    for limit in (1, 4, 500):
        assert await walk(client, f"{UI}/dead-letters?limit={limit}") == newest_first(every)
        assert await walk(client, f"{UI}/dead-letters?kind=callback&limit={limit}") == newest_first(
            shown_callbacks
        )
    # The kind filter reads the store in chunks: boundaries of those among the ties too.
    monkeypatch.setattr(dead_letters_page, "SCAN_CHUNK", 3)
    monkeypatch.setattr(dead_letters_page, "SCAN_LIMIT", 5)
    events_shown = [letter.shown() for letter in events]
    for limit in (1, 2, 500):
        assert await walk(client, f"{UI}/dead-letters?kind=event&limit={limit}") == newest_first(
            events_shown
        )


async def test_subscriptions_are_made_and_deleted_through_the_apis_checks(
    client: TestClient, settings: Settings
) -> None:
    headers = admin(settings)

    async def subscriptions() -> list[dict[str, Any]]:
        answer = await client.get("/api/v1/subscriptions", headers=headers)
        return (await answer.json())["subscriptions"]  # type: ignore[no-any-return]

    csrf = await sign_in(client, token(settings, "admin"), f"{UI}/subscriptions")
    page = await (await client.get(f"{UI}/subscriptions")).text()
    assert "No subscriptions." in page
    assert all(f'name="events" value="{kind}"' in page for kind in EVENT_TYPES)

    form = {
        "url": "https://hooks.example.com/bridge/in?token=sekrit-9",
        "events": ["workflow.completed", "workflow.failed"],
        "workflow_id": "<b>wf</b>",
    }
    assert (await client.post(f"{UI}/subscriptions", data=form)).status == 403
    assert await subscriptions() == []
    made = await client.post(
        f"{UI}/subscriptions", data={**form, "csrf": csrf}, allow_redirects=False
    )
    assert made.status == 303 and made.headers["Location"] == f"{UI}/subscriptions"
    [subscription] = await subscriptions()
    assert subscription["events"] == ["workflow.completed", "workflow.failed"]
    assert subscription["workflow_id"] == "<b>wf</b>"
    page = await (await client.get(f"{UI}/subscriptions")).text()
    assert (
        subscription["id"] in page and "Subscribed https://hooks.example.com/bridge/in?***" in page
    )
    assert "sekrit-9" not in page and "<b>wf</b>" not in page and "&lt;b&gt;wf&lt;/b&gt;" in page

    for bad, pointer in (
        ({**form, "url": "http://169.254.169.254/latest/meta-data"}, "/url"),
        ({**form, "url": 'https://x.example/"><script>alert(1)</script>'}, "/url"),
        ({**form, "url": "ftp://hooks.example.com/"}, "/url"),
        ({**form, "events": []}, "/events"),
        ({**form, "events": ["workflow.nonsense"]}, "/events/0"),
    ):
        body = {**bad, "workflow_id": bad["workflow_id"] or None}
        api = await client.post("/api/v1/subscriptions", json=body, headers=headers)
        error = (await api.json())["error"]
        answer = await client.post(f"{UI}/subscriptions", data={**bad, "csrf": csrf})
        assert (answer.status, api.status) == (422, 422), error["message"]
        page = await answer.text()
        # The API's problems, each named by its pointer as the API names it ("/url"), once.
        alert = html.unescape(page.split('role="alert"')[1].split("</div>")[0])
        for detail in error["details"]:
            assert f"<code>{detail['pointer']}</code>: {detail['message']}" in alert, alert
        assert f"<code>{pointer}</code>" in page and f"{pointer}: " not in alert, alert
        assert not re.search(rf"(?<![/\w]){pointer[1:]}: ", alert), alert  # "url: …" neither
        assert SCRIPT not in page.split("</header>")[1]
        kept = html.unescape(page)
        assert f'value="{bad["url"]}"' in kept
        kept_kinds = [kind for kind in bad["events"] if kind in EVENT_TYPES]
        assert all(f'value="{kind}" checked' in kept for kind in kept_kinds)
    assert len(await subscriptions()) == 1

    delete = f"{UI}/subscriptions/{subscription['id']}/delete"
    assert (await client.post(delete, data={"csrf": "forged"})).status == 403
    assert len(await subscriptions()) == 1
    deleted = await client.post(delete, data={"csrf": csrf})
    assert deleted.status == 200 and "Deleted the subscription" in flash(await deleted.text())
    assert await subscriptions() == []
    assert (await client.post(delete, data={"csrf": csrf})).status == 404


async def test_processors_are_listed_with_their_schemas(
    make_client: ClientFactory, settings: Settings
) -> None:
    client = await make_client(processors=[PLUGINS, "tests.plugins.hostile"])
    await sign_in(client, token(settings, "admin"), f"{UI}/processors")
    page = await (await client.get(f"{UI}/processors")).text()
    for name in client.app[REGISTRY].names():
        assert f'href="/admin/ui/processors/{name}"' in page
    assert DESCRIPTION not in page and html.escape(DESCRIPTION) in page.replace("&#34;", "&quot;")
    assert SCRIPT not in page.split("</header>")[1]
    assert "batch" in page and "CPU-bound (process pool)" in page

    detail = await (await client.get(f"{UI}/processors/show_params")).text()
    text = html.unescape(detail)
    assert '\n  "properties": {\n    "greeting": {' in text  # indented JSON
    assert '>[{"json": {"name": "Ada"}}]</textarea>' in text and ">{}</textarea>" in text
    assert "data-confirm" not in detail.split('id="try"')[1]  # nothing happens but the run
    hostile = await (await client.get(f"{UI}/processors/hostile_description")).text()
    assert SCRIPT not in hostile.split("</header>")[1]
    for name in ("email_send", "n8n_trigger"):
        side = html.unescape(await (await client.get(f"{UI}/processors/{name}")).text())
        assert "Not a dry run" in side
        assert f'data-confirm="Run {name} for real on these items?' in side
    assert (await client.get(f"{UI}/processors/nowhere")).status == 404


async def try_it(client: TestClient, name: str, csrf: str, **fields: str) -> tuple[int, str]:
    values = {"items": '[{"json": {"name": "Ada"}}]', "parameters": "{}", **fields}
    answer = await client.post(f"{UI}/processors/{name}/try", data={**values, "csrf": csrf})
    return answer.status, await answer.text()


async def console_jobs(client: TestClient, settings: Settings) -> list[dict[str, Any]]:
    answer = await client.get("/api/v1/status/console", headers=admin(settings))
    return (await answer.json())["jobs"]  # type: ignore[no-any-return]


async def test_try_it_runs_a_processor_as_a_sync_execute_does(
    client: TestClient, settings: Settings
) -> None:
    csrf = await sign_in(client, token(settings, "admin"), f"{UI}/processors/echo")
    status, page = await try_it(client, "echo", "")
    assert status == 403 and await console_jobs(client, settings) == []

    status, page = await try_it(client, "echo", csrf)
    assert status == 200, page
    text = html.unescape(page)
    assert '"name": "Ada"' in text and '"pairedItem": {' in text
    [recorded] = await console_jobs(client, settings)
    assert recorded["mode"] == "sync" and recorded["status"] == "completed"
    assert f'href="/admin/ui/jobs/{recorded["job_id"]}"' in page

    status, page = await try_it(client, "echo", csrf, items='[{"json": ')
    assert status == 400 and "items is not valid JSON" in page
    assert '>[{"json": </textarea>' in html.unescape(page)  # what was typed, kept

    parameters = '{"times": "many", "<script>x</script>": 1}'
    status, page = await try_it(client, "show_params", csrf, parameters=parameters)
    assert status == 422, page
    assert "<code>/parameters/times</code>" in page
    assert "<code>/parameters/&lt;script&gt;x&lt;~1script&gt;</code>" in page  # ~1: a /
    assert SCRIPT not in page.split("</header>")[1]
    assert f">{parameters}</textarea>" in html.unescape(page)

    hostile = '<img src=x onerror="alert(1)">'
    items = json.dumps([{"json": {"message": hostile}}])
    status, page = await try_it(client, "quote_error", csrf, items=items)
    assert status == 200 and "bad input: &lt;img src=x" in page and "<img" not in page
    status, page = await try_it(client, "quote_crash", csrf, items=items)
    assert status == 500 and "bad batch: &lt;img src=x" in page and "<img" not in page
    assert "Recorded as job" in page
    assert len(await console_jobs(client, settings)) == 3  # the failures ran; bad input did not


async def test_try_it_shows_a_huge_input_back_only_up_to_a_bound(
    client: TestClient, settings: Settings
) -> None:
    """A multi-megabyte textarea is not echoed into the page (nor is its output whole): the
    field comes back empty, with a note of its size; a small one is kept as typed."""
    csrf = await sign_in(client, token(settings, "admin"), f"{UI}/processors/echo")
    items = json.dumps([{"json": {"text": "x" * 1000, "n": n}} for n in range(3000)])
    assert len(items) > 3_000_000
    # Run; refused as no JSON; refused with a problem for each of 60,000 items.
    not_objects = json.dumps([{"json": n} for n in range(60_000)])
    for typed, status in ((items, 200), (items[:-1], 400), (not_objects, 422)):
        form = {"items": typed, "parameters": "{}", "csrf": csrf}
        posted = await client.post(  # a stream: aiohttp warns of a large body sent whole
            f"{UI}/processors/echo/try",
            data=io.BytesIO(urlencode(form).encode()),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        answer, page = posted.status, await posted.text()
        assert answer == status, page[:2000]
        assert len(page.encode()) < 100_000, len(page.encode())
        field = re.search(r'<textarea id="items" ([^>]*)>(.*?)</textarea>', page, re.S)
        assert field and field[2] == "" and 'aria-describedby="items-not-shown"' in field[1]
        note = f"not shown again ({len(typed.encode())} bytes)"
        assert f'<p class="muted" id="items-not-shown">What was typed here was {note}' in page
        assert ">{}</textarea>" in page  # the small field beside it, kept
        if status == 422:  # the first problems, and how many more
            assert page.count("<code>/items/") == 20 and "and 59980 more problems" in page
    small = json.dumps([{"json": {"text": "y" * 1000}}] * 100)
    answer, page = await try_it(client, "echo", csrf, items=small)
    assert answer == 200 and f">{small}</textarea>" in html.unescape(page)
    assert "not shown again" not in page


async def test_try_it_keeps_the_apis_limits(make_client: ClientFactory, settings: Settings) -> None:
    client = await make_client(max_items=2)
    csrf = await sign_in(client, token(settings, "admin"), f"{UI}/processors/echo")
    items = '[{"json": {}}, {"json": {}}, {"json": {}}]'
    status, page = await try_it(client, "echo", csrf, items=items)
    assert status == 413 and "BRIDGE_MAX_ITEMS (2)" in page
    assert await console_jobs(client, settings) == []


async def test_a_limited_session_tries_processors_of_its_workflows_only(
    client: TestClient, settings: Settings
) -> None:
    limited = mint_token(settings, ["admin"], 300, workflows=["wf-a"])
    csrf = await sign_in(client, limited, f"{UI}/processors")
    assert (await client.get(f"{UI}/processors/echo")).status == 200
    assert (
        "required"
        in (await (await client.get(f"{UI}/processors/echo")).text())
        .split('id="workflow_id"')[1]
        .split(">")[0]
    )
    status, page = await try_it(client, "echo", csrf)
    assert status == 403 and "a token limited to workflows must name one of them" in page
    status, page = await try_it(client, "echo", csrf, workflow_id="wf-b")
    assert status == 403 and "outside the workflows this token is limited to" in page
    status, page = await try_it(client, "echo", csrf, workflow_id="wf-a")
    assert status == 200, page
    for path in ("/dead-letters", "/subscriptions", "/drain"):
        answer = await client.get(UI + path)
        assert answer.status == 403, path
    for path, data in (
        ("/drain", {"action": "drain"}),
        ("/dead-letters/replay", {"kind": "any"}),
        ("/subscriptions", {"url": "https://hooks.example.com/", "events": "workflow.failed"}),
    ):
        assert (await client.post(UI + path, data={**data, "csrf": csrf})).status == 403, path
    assert (await client.get("/ready")).status == 200
    listed = await client.get("/api/v1/subscriptions", headers=admin(settings))
    assert (await listed.json())["subscriptions"] == []


async def test_drain_then_undrain_from_the_page(client: TestClient, settings: Settings) -> None:
    csrf = await sign_in(client, token(settings, "admin"), f"{UI}/drain")
    page = html.unescape(await (await client.get(f"{UI}/drain")).text())
    assert ">Drain this instance</button>" in page
    assert "/ready answers 503 so the load balancer stops sending it requests" in page
    shared = settings.redis_url is not None
    assert ("stops taking jobs from the shared Redis queues" in page) is shared
    assert ("new background jobs are refused" in page) is not shared

    for data in ({"action": "drain"}, {"action": "drain", "csrf": "forged"}):
        assert (await client.post(f"{UI}/drain", data=data)).status == 403
    assert (await client.get("/ready")).status == 200
    assert (await client.post(f"{UI}/drain", data={"action": "x", "csrf": csrf})).status == 422
    assert (await client.get("/ready")).status == 200

    drained = await client.post(f"{UI}/drain", data={"action": "drain", "csrf": csrf})
    assert drained.status == 200 and drained.url.path == f"{UI}/drain"
    page = await drained.text()
    assert flash(page).startswith("Draining: /ready answers 503 now.")
    assert ">Serve again (undrain)</button>" in page and "drained" in page
    assert (await client.get("/ready")).status == 503
    status = await (await client.get("/admin/status", headers=admin(settings))).json()
    assert status["draining"] is True

    served = await client.post(f"{UI}/drain", data={"action": "undrain", "csrf": csrf})
    assert served.status == 200 and flash(await served.text()).startswith("Serving again")
    assert (await client.get("/ready")).status == 200
    assert ">Drain this instance</button>" in await (await client.get(f"{UI}/drain")).text()


async def test_replay_all_goes_on_past_letters_that_died_again(
    make_client: ClientFactory,
    settings: Settings,
    auth: dict[str, str],
    target: Target,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Replayed letters that fail again are the newest again: the next click goes on from where
    the last stopped (the page it leads to), not back to them."""
    client = await make_client(retry_base_s=0.01, callback_max_attempts=1, breaker_failures=50)
    target.by_path = {"/hook": [500] * 50}
    for _ in range(3):
        body = job("echo", callback_url=target.url("/hook"))
        assert (await client.post(EXECUTE, json=body, headers=auth)).status == 202
    oldest_first = (await letters_of(client, settings, "callback", 3))[::-1]
    csrf = await sign_in(client, token(settings, "admin"), f"{UI}/dead-letters")
    monkeypatch.setattr(dead_letters_page, "REPLAY_LIMIT", 2)
    first = await client.post(f"{UI}/dead-letters/replay", data={"kind": "callback", "csrf": csrf})
    assert "More remain" in flash(await first.text())
    assert "cursor=" in str(first.url)  # the page where the click stopped
    await target.wait_for(5)  # three first attempts, two replays: all failed again
    page = await first.text()
    form_cursor = re.search(r'name="cursor" value="([^"]+)"', page)
    assert form_cursor is not None
    second = await client.post(
        f"{UI}/dead-letters/replay",
        data={"kind": "callback", "csrf": csrf, "cursor": form_cursor.group(1)},
    )
    assert "Replayed 1 of the dead callbacks." in flash(await second.text())
    calls = await target.wait_for(6)
    # The sixth call is the oldest letter's replay, not a third go at the two replayed first.
    assert calls[5].headers["webhook-id"] == oldest_first[0]
