"""The console's jobs pages, on both backends: the list (filters, pages, live first page), a
job's page (items, errors, events, callback), cancel and retry, and the workflow limit."""

from __future__ import annotations

import asyncio
import base64
import datetime
import re
import time
from html import unescape
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from bridge.auth import mint_token
from bridge.console.preview import PREVIEW_CHARS, PREVIEW_ITEMS
from bridge.keys import EVENT_LOG, EVENTS
from bridge.settings import Settings
from tests.conftest import ClientFactory, token
from tests.console.signin import sign_in
from tests.test_worker import finished, job
from tests.webhook_target import Target

EXECUTE = "/api/v1/workflow/execute"
JOBS = "/admin/ui/jobs"
LINK = re.compile(r'href="/admin/ui/jobs/([0-9a-f]{32})"')


@pytest.fixture
def admin_token(settings: Settings) -> str:
    return token(settings, "admin")


@pytest.fixture
def auth(settings: Settings) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(settings, 'execute,status')}"}


async def submit(client: TestClient, auth: dict[str, str], body: dict[str, Any]) -> str:
    answer = await client.post(EXECUTE, json=body, headers=auth)
    assert answer.status in (200, 202), await answer.text()
    return str((await answer.json())["job_id"])


async def listed(client: TestClient, query: str = "") -> list[str]:
    """The job ids a jobs page lists, in its order."""
    answer = await client.get(f"{JOBS}{query}")
    assert answer.status == 200, await answer.text()
    return LINK.findall(await answer.text())


def local(moment: float) -> str:
    """A Unix time as an <input type="datetime-local"> sends it (UTC here)."""
    return datetime.datetime.fromtimestamp(moment, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")


async def test_the_list_shows_every_job_newest_first_and_is_live(
    client: TestClient, auth: dict[str, str], admin_token: str
) -> None:
    ids = [
        await submit(client, auth, job("repeat", workflow_id=f"wf-{n}", execution_id=f"ex-{n}"))
        for n in range(3)
    ]
    for job_id in ids:
        await finished(client, auth, job_id)
    await sign_in(client, admin_token, JOBS)
    answer = await client.get(JOBS)
    html = await answer.text()
    assert LINK.findall(html) == ids[::-1]
    assert 'data-live="events"' in html and '<div id="live">' in html
    for label in ("Status (none chosen: any)", "Processor", "Queue", "Workflow id", "Execution id"):
        assert f">{label}</label>" in html
    assert "Created from (UTC)" in html and 'type="datetime-local"' in html
    assert ">completed</span>" in html and ">wf-2<" in html and ">ex-0<" in html
    part = await (await client.get(JOBS, headers={"X-Console-Partial": "1"})).text()
    assert "<html" not in part and "<form" not in part and LINK.findall(part) == ids[::-1]


async def test_each_filter_keeps_only_its_jobs(
    make_client: ClientFactory, settings: Settings, auth: dict[str, str], admin_token: str
) -> None:
    client = await make_client(
        queues=[{"name": "default"}, {"name": "bulk"}],
        routes=[{"queue": "bulk", "processing_type": ["crash"]}],
        job_max_attempts=1,
    )
    done = await submit(client, auth, job("repeat", workflow_id="wf-a", execution_id="ex-1"))
    await finished(client, auth, done)
    await asyncio.sleep(1.1)  # the time filters have whole seconds
    between = time.time()
    await asyncio.sleep(1.1)
    crashed = await submit(client, auth, job("crash", workflow_id="wf-b", execution_id="ex-2"))
    await finished(client, auth, crashed)
    await sign_in(client, admin_token, JOBS)
    assert await listed(client) == [crashed, done]
    for query, expected in (
        ("?status=failed", [crashed]),
        ("?status=completed", [done]),
        ("?status=running", []),
        ("?processing_type=repeat", [done]),
        ("?queue=bulk", [crashed]),
        ("?queue=default", [done]),
        ("?workflow_id=wf-a", [done]),
        ("?execution_id=ex-2", [crashed]),
        ("?workflow_id=wf-b&execution_id=ex-1", []),
        (f"?since={local(between)}", [crashed]),
        (f"?until={local(between)}", [done]),
        # What an empty form sends: no filter.
        (
            "?status=&processing_type=&queue=&workflow_id=&execution_id=&since=&until=",
            [crashed, done],
        ),
    ):
        assert await listed(client, query) == expected, query
    html = await (await client.get(f"{JOBS}?status=failed&queue=bulk")).text()
    assert "<option selected>failed</option>" in html and "<option selected>bulk</option>" in html


STATUSES = "queued, running, completed, failed, cancelled"
DATE = "expected a date and time such as 2025-05-01T13:30 (UTC)"


@pytest.mark.parametrize(
    ("query", "field", "words"),
    [
        ("?status=bogus", "/query/status", f"one or more of {STATUSES}, separated by commas"),
        ("?since=yesterday", "/query/since", DATE),
        ("?until=2025-13-45T99:99", "/query/until", DATE),
        ("?since=" + "9" * 100, "/query/since", DATE),
        ("?cursor=not-a-cursor-we-made", "/query/cursor", "cursor"),
        ("?workflow_id=%01", "/query/workflow_id", "no control characters"),
        ("?execution_id=ex%1b", "/query/execution_id", "no control characters"),
    ],
)
async def test_a_bad_filter_is_named_beside_the_form(
    client: TestClient, admin_token: str, query: str, field: str, words: str
) -> None:
    await sign_in(client, admin_token, JOBS)
    answer = await client.get(JOBS + query)
    assert answer.status == 422
    html = await answer.text()
    assert 'role="alert"' in html and f"<code>{field}</code>" in html
    assert '<form method="get" action="/admin/ui/jobs"' in html and "Traceback" not in html
    assert 'data-live="events"' not in html
    # In words, each problem once, named by its JSON pointer as the API names it.
    alert = unescape(html.split('role="alert"')[1].split("</div>")[0])
    assert re.search(rf"<code>{field}</code>: [^<]*{re.escape(words)}", alert), alert
    assert "pattern" not in alert and "^" not in alert, alert
    assert not re.search(r"(?<![/\w])query/", alert), alert  # no "query/since: …" beside it
    assert alert.count(field) == 1, alert


async def test_pages_go_on_with_older_jobs_and_stand_still(
    client: TestClient, auth: dict[str, str], admin_token: str
) -> None:
    ids = [await submit(client, auth, job("repeat", mode="sync")) for _ in range(61)]
    await sign_in(client, admin_token, JOBS)
    first = await client.get(JOBS)
    html = await first.text()
    assert len(html.encode()) < 50_000, len(html.encode())  # issue 20: well under 100 kB
    assert LINK.findall(html) == ids[::-1][:50]
    assert "First page" not in html
    older = re.search(r'href="([^"]*)" rel="next">Older', html)
    assert older is not None
    second = await (await client.get(older.group(1).replace("&amp;", "&"))).text()
    assert LINK.findall(second) == ids[::-1][50:]
    assert 'data-live="events"' not in second  # a page further on does not move
    assert 'rel="next"' not in second and f'href="{JOBS}?">First page' in second
    filtered = await (await client.get(f"{JOBS}?processing_type=repeat")).text()
    older = re.search(r'href="([^"]*)" rel="next">Older', filtered)
    assert older is not None and "processing_type=repeat&amp;cursor=" in older.group(1)


async def test_a_limited_session_sees_only_its_workflows_jobs(
    client: TestClient, settings: Settings, auth: dict[str, str]
) -> None:
    mine = await submit(client, auth, job("crash", workflow_id="wf-a"))
    theirs = await submit(client, auth, job("crash", workflow_id="wf-b"))
    for job_id in (mine, theirs):
        await finished(client, auth, job_id)
    csrf = await sign_in(client, mint_token(settings, ["admin"], 300, workflows=["wf-a"]), JOBS)
    assert await listed(client) == [mine]
    assert (await client.get(f"{JOBS}/{mine}")).status == 200
    foreign = await client.get(f"{JOBS}/{theirs}")
    assert foreign.status == 404 and f"no job &#39;{theirs}&#39;" in await foreign.text()
    forbidden = await client.get(f"{JOBS}?workflow_id=wf-b")
    assert forbidden.status == 403 and 'role="alert"' in await forbidden.text()
    cancel = await client.post(f"{JOBS}/{theirs}/cancel", data={"csrf": csrf})
    assert cancel.status == 404
    # Retrying acts across workflows: not for a limited session, not even its own job.
    page = await (await client.get(f"{JOBS}/{mine}")).text()
    assert "/retry" not in page
    retry = await client.post(f"{JOBS}/{mine}/retry", data={"csrf": csrf})
    assert retry.status == 403


async def test_a_job_page_shows_items_errors_events_callback_and_trace(
    client: TestClient, auth: dict[str, str], admin_token: str, target: Target
) -> None:
    target.script = [503]  # the first attempt fails: the page lists each attempt
    body = job(
        "fail_odd",
        [{"json": {"n": n, "label": f"item-{n}"}} for n in range(PREVIEW_ITEMS + 5)],
        callback_url=target.url("/done?token=resume-secret"),
        workflow_id="wf-page",
        node="Bridge",
    )
    job_id = await submit(client, auth, body)
    done = await finished(client, auth, job_id)
    for _ in range(200):
        state = await (await client.get(f"/api/v1/workflow/status/{job_id}", headers=auth)).json()
        if state["callback"]["state"] == "delivered":
            break
        await asyncio.sleep(0.02)
    await sign_in(client, admin_token, JOBS)
    answer = await client.get(f"{JOBS}/{job_id}")
    assert answer.status == 200
    html = await answer.text()
    assert done["trace_id"] and f"<code>{done['trace_id']}</code>" in html
    outputs = html[html.index('id="outputs"') : html.index('id="inputs"')]
    inputs = html[html.index('id="inputs"') :]
    assert "item-0&#34;" in inputs and f"item-{PREVIEW_ITEMS - 1}&#34;" in inputs
    assert f"item-{PREVIEW_ITEMS}&#34;" not in inputs
    assert f"The first {PREVIEW_ITEMS} of {PREVIEW_ITEMS + 5} items." in inputs
    assert "item-24&#34;" in outputs and "item-1&#34;" not in outputs  # the even ones passed
    assert 'Item 12 <span class="muted">(from input 24)</span>' in outputs
    assert "odd number 1" in html and "odd number 3" in html  # the per-item errors
    timeline = html[html.index('<ol class="timeline">') :]
    order = [
        timeline.index(f"<strong>{kind}</strong>")
        for kind in ("workflow.queued", "workflow.started", "workflow.completed")
    ]
    assert order == sorted(order) and "<strong>callback.delivered</strong>" in timeline
    assert ">delivered</span>" in html and "resume-secret" not in html
    attempts = html[
        html.index('id="attempts"') : html.index("</table>", html.index('id="attempts"'))
    ]
    assert attempts.count("<tr>") == 3  # the head, the failed attempt, the delivered one
    assert "HTTP 503" in attempts and ">failed</span>" in attempts
    assert ">Bridge<" in html and 'href="/admin/ui/jobs?workflow_id=wf-page"' in html
    assert 'data-live="events"' not in html  # nothing left to happen
    part = await (await client.get(f"{JOBS}/{job_id}", headers={"X-Console-Partial": "1"})).text()
    assert "<html" not in part and "odd number 1" in part and "item-24&#34;" in part
    assert 'id="inputs"' not in part  # the request is not read again by each refresh


async def test_a_binary_is_shown_by_name_type_and_size_never_its_bytes(
    client: TestClient, auth: dict[str, str], admin_token: str
) -> None:
    secret = b"the bytes of a private file " * 20
    encoded = base64.b64encode(secret).decode()
    item = {
        "json": {"n": 1},
        "binary": {"file": {"data": encoded, "mimeType": "text/plain", "fileName": "a.txt"}},
    }
    job_id = await submit(client, auth, job("upper_file", [item]))
    await finished(client, auth, job_id)
    await sign_in(client, admin_token, JOBS)
    html = await (await client.get(f"{JOBS}/{job_id}")).text()
    assert f"text/plain, <code>a.txt</code>, {len(secret)} bytes" in html
    assert html.count("binary <code>file</code>") == 2  # the input and the output
    for leak in (encoded[:40], "private file", "PRIVATE FILE"):
        assert leak not in html
    assert base64.b64encode(secret.upper()).decode()[:40] not in html


async def test_a_hostile_item_is_escaped_and_cut(
    client: TestClient, auth: dict[str, str], admin_token: str
) -> None:
    hostile = {
        "json": {
            "html": "</pre><script>alert(1)</script><img src=x onerror=alert(2)>",
            "huge": "A" * 200_000,
        }
    }
    job_id = await submit(client, auth, job("repeat", [hostile], workflow_id="<b>wf</b>"))
    await finished(client, auth, job_id)
    await sign_in(client, admin_token, JOBS)
    html = await (await client.get(f"{JOBS}/{job_id}")).text()
    assert "<script>alert" not in html and "<img src=x" not in html and "<b>wf" not in html
    assert "&lt;/pre&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "more characters" in html
    assert "A" * (PREVIEW_CHARS + 1) not in html
    assert len(html.encode()) < 20_000, len(html.encode())
    listing = await (await client.get(JOBS)).text()
    assert "&lt;b&gt;wf&lt;/b&gt;" in listing and "<b>wf" not in listing


async def test_a_timeline_is_bounded(
    client: TestClient, auth: dict[str, str], admin_token: str
) -> None:
    job_id = await submit(client, auth, job("repeat"))
    await finished(client, auth, job_id)
    bus = client.app[EVENTS]
    for n in range(250):
        bus.publish("workflow.started", job_id=job_id, workflow_id="wf-1", data={"attempt": n})
    events = await client.app[EVENT_LOG].of_job(job_id, 200)
    assert len(events) == 200 and [e.data["attempt"] for e in events[-2:]] == [248, 249]
    assert await client.app[EVENT_LOG].of_job("0" * 32, 200) == []
    await sign_in(client, admin_token, JOBS)
    html = await (await client.get(f"{JOBS}/{job_id}")).text()
    assert "The newest 200." in html and html.count("<li><time>") == 200


async def test_cancel_needs_the_csrf_token_and_stops_the_job(
    client: TestClient, auth: dict[str, str], admin_token: str
) -> None:
    job_id = await submit(client, auth, job("sleep", parameters={"seconds": 30}))
    csrf = await sign_in(client, admin_token, JOBS)
    page = await (await client.get(f"{JOBS}/{job_id}")).text()
    assert 'data-live="events"' in page and "data-confirm=" in page and "/cancel" in page
    refused = await client.post(f"{JOBS}/{job_id}/cancel", data={"csrf": "forged"})
    assert refused.status == 403
    state = await (await client.get(f"/api/v1/workflow/status/{job_id}", headers=auth)).json()
    assert state["status"] in ("queued", "running")
    answer = await client.post(
        f"{JOBS}/{job_id}/cancel", data={"csrf": csrf}, allow_redirects=False
    )
    assert answer.status == 303 and answer.headers["Location"] == f"{JOBS}/{job_id}"
    html = await (await client.get(answer.headers["Location"])).text()
    assert 'class="flash" role="status">Cancelled.' in html and ">cancelled</span>" in html
    assert (await finished(client, auth, job_id))["status"] == "cancelled"
    again = await client.post(f"{JOBS}/{job_id}/cancel", data={"csrf": csrf})
    assert again.status == 409 and "already cancelled" in await again.text()


async def test_retry_needs_the_csrf_token_and_opens_the_new_job(
    make_client: ClientFactory, settings: Settings, auth: dict[str, str], admin_token: str
) -> None:
    client = await make_client(job_max_attempts=1)
    job_id = await submit(client, auth, job("crash"))
    assert (await finished(client, auth, job_id))["status"] == "failed"
    csrf = await sign_in(client, admin_token, JOBS)
    page = await (await client.get(f"{JOBS}/{job_id}")).text()
    assert "the whole batch broke" in page and "/retry" in page and "/cancel" not in page
    assert (await client.post(f"{JOBS}/{job_id}/retry", data={})).status == 403
    assert await listed(client) == [job_id]  # nothing was retried
    answer = await client.post(f"{JOBS}/{job_id}/retry", data={"csrf": csrf}, allow_redirects=False)
    assert answer.status == 303
    new_id = answer.headers["Location"].rsplit("/", 1)[1]
    assert new_id != job_id and answer.headers["Location"] == f"{JOBS}/{new_id}"
    html = await (await client.get(answer.headers["Location"])).text()
    assert f'Retried as job <a href="{JOBS}/{new_id}">{new_id}</a>' in html
    assert (await finished(client, auth, new_id))["status"] == "failed"


async def test_every_bad_filter_is_named_and_statuses_combine(
    client: TestClient, auth: dict[str, str], admin_token: str
) -> None:
    await sign_in(client, admin_token, JOBS)
    answer = await client.get(f"{JOBS}?since=garbage&until=x&status=zzz")
    assert answer.status == 422
    html = await answer.text()
    for pointer in ("/query/since", "/query/until", "/query/status"):
        assert f"<code>{pointer}</code>" in html, pointer
    ok = await submit(client, auth, job("echo"))
    bad = await submit(client, auth, job("fail_odd", [{"json": {"n": 1}}]))
    await finished(client, auth, ok)
    await finished(client, auth, bad)
    both = await (await client.get(f"{JOBS}?status=completed&status=failed")).text()
    assert ok in both and bad in both
    assert both.count(" selected>") >= 2  # the two statuses stay chosen
