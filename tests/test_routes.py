"""Every GET endpoint answers HEAD as it answers GET — the same status and headers, no body —
behind the same authentication: monitors and load balancers probe with HEAD."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from bridge.api.routes import ROUTES
from bridge.auth import mint_token
from bridge.ids import new_id
from bridge.keys import EVENTS
from bridge.settings import Settings
from tests.conftest import API_KEY, token

GETS = [route.path for route in ROUTES if route.method == "GET"]
# Headers that differ between any two answers (the time, a timing), and those that frame a body,
# which a HEAD answer has none of: RFC 9110 §9.3.2 lets it leave out what only generating the
# content determines (a stream's chunked framing; the length of a body that changes: uptime,
# counters).
CHANGING = {"date", "server-timing", "content-length", "transfer-encoding"}
TRACE = {"X-Trace-ID": "head-and-get-trace"}  # the same on both, so it comes back the same


def credentials(settings: Settings) -> dict[str, dict[str, str]]:
    """None; each scope alone; an API key; a token limited to one workflow."""
    bearer = {
        scope: {"Authorization": f"Bearer {token(settings, scope)}"}
        for scope in ("execute", "status", "admin")
    }
    limited = mint_token(settings, ["status", "admin"], 300, workflows=["wf-head"])
    return {
        "none": {},
        **bearer,
        "api key": {"X-API-Key": API_KEY},
        "limited": {"Authorization": f"Bearer {limited}"},
        "bad token": {"Authorization": "Bearer not-a-token"},
    }


def concrete(path: str, job_id: str) -> str:
    return path.format(
        job_id=job_id,
        workflow_id="wf-head",
        subscription_id=new_id(),
        letter_id=f"cb_{new_id()}",
    )


def shown(response: ClientResponse) -> tuple[int, dict[str, str]]:
    headers = {
        name.lower(): value
        for name, value in response.headers.items()
        if name.lower() not in CHANGING
    }
    return response.status, headers


@pytest.mark.parametrize("backend", ["embedded"])  # the router, not the store, answers HEAD
async def test_every_get_answers_head_alike_for_every_credential(
    client: TestClient, settings: Settings, auth: dict[str, str]
) -> None:
    done = await client.post(
        "/api/v1/workflow/execute",
        json={"processing_type": "echo", "items": [{"json": {}}], "workflow_id": "wf-head"},
        headers=auth,
    )
    job_id = (await done.json())["job_id"]
    statuses = set()
    for path in GETS:
        url = concrete(path, job_id)
        for who, headers in credentials(settings).items():
            async with client.get(url, headers={**headers, **TRACE}) as got:
                expected = shown(got)  # an event stream: its head only
            head = await client.head(url, headers={**headers, **TRACE})
            assert shown(head) == expected, (path, who)
            assert await head.read() == b"", (path, who)
            statuses.add(head.status)
    assert {200, 401, 403, 404} <= statuses  # each kind of answer was compared


@pytest.mark.parametrize("backend", ["embedded"])
async def test_head_of_the_event_stream_ends_at_once(
    client: TestClient, auth: dict[str, str]
) -> None:
    """HEAD of /api/v1/events answers the stream's head and ends: no stream is held open."""
    head = await asyncio.wait_for(client.head("/api/v1/events", headers=auth), 5)
    assert head.status == 200
    assert head.headers["Content-Type"] == "text/event-stream"
    assert not client.app[EVENTS].listeners  # no stream was opened
    bad = await client.head("/api/v1/events?type=nope", headers=auth)
    assert bad.status == 422  # checked as a GET is
