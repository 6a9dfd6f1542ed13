"""What one answer of a webhook's target means — taken, retried (and whether the host itself is
failing, for its breaker), or never to be taken — against a real server on loopback, as
docs/background-jobs.md ("Delivery") lists them."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bridge.webhook_attempt import GiveUp, HttpAttempt, Retry
from bridge.webhooks import Delivery, Signer
from tests.webhook_target import Target

RUNNING = '{"code": 409, "message": "The execution \\"7\\" is running already."}'
FINISHED = '{"code": 409, "message": "The execution \\"7 has finished already."}'

# path → (status, body, headers)
ANSWERS: dict[str, tuple[int, str, dict[str, str]]] = {
    "/ok": (200, "", {}),
    "/no-content": (204, "", {}),
    "/running": (409, RUNNING, {}),
    "/finished": (409, FINISHED, {}),
    "/conflict-empty": (409, "", {}),
    "/conflict-other": (409, '{"message": "Conflict: something else"}', {"Retry-After": "1"}),
    "/too-early": (425, "", {}),
    "/throttled": (429, "", {"Retry-After": "7"}),
    "/request-timeout": (408, "", {}),
    "/unavailable": (503, "", {}),
    "/error": (500, "", {}),
    "/not-found": (404, "", {}),
    "/gone": (410, "", {}),
    "/bad": (400, "", {}),
    "/moved": (302, "", {"Location": "/ok"}),
}


@pytest.fixture
async def attempt() -> AsyncIterator[tuple[HttpAttempt, TestServer]]:
    async def answer(request: web.Request) -> web.Response:
        status, body, headers = ANSWERS[request.path]
        return web.Response(status=status, text=body or None, headers=headers)

    app = web.Application()
    app.router.add_route("*", "/{path:.*}", answer)
    async with TestServer(app) as server, aiohttp.ClientSession() as session:
        yield HttpAttempt(session, Signer(None)), server


@pytest.mark.parametrize(
    ("path", "outcome", "host_failed", "after_s"),
    [
        ("/running", "not_ready", False, None),
        ("/too-early", "not_ready", False, None),
        ("/throttled", "throttled", True, 7.0),
        ("/request-timeout", "timeout", True, None),
        ("/unavailable", "server_error", True, None),
        ("/error", "server_error", True, None),
    ],
)
async def test_answers_that_are_retried(
    attempt: tuple[HttpAttempt, TestServer],
    path: str,
    outcome: str,
    host_failed: bool,
    after_s: float | None,
) -> None:
    send, server = attempt
    with pytest.raises(Retry) as raised:
        await send(Delivery(id="cb_1", kind="callback", url=str(server.make_url(path))))
    assert (raised.value.outcome, raised.value.host_failed) == (outcome, host_failed)
    assert raised.value.after_s == after_s


@pytest.mark.parametrize(
    ("path", "outcome"),
    [
        ("/finished", "finished"),
        ("/conflict-empty", "rejected"),  # a 409 that is not n8n's "is running already"
        ("/conflict-other", "rejected"),
        ("/not-found", "rejected"),
        ("/gone", "rejected"),
        ("/bad", "rejected"),
        ("/moved", "rejected"),
    ],
)
async def test_answers_that_end_it(
    attempt: tuple[HttpAttempt, TestServer], path: str, outcome: str
) -> None:
    send, server = attempt
    with pytest.raises(GiveUp) as raised:
        await send(Delivery(id="cb_1", kind="callback", url=str(server.make_url(path))))
    assert raised.value.outcome == outcome


@pytest.mark.parametrize("path", ["/ok", "/no-content"])
async def test_a_2xx_is_taken(attempt: tuple[HttpAttempt, TestServer], path: str) -> None:
    send, server = attempt
    await send(Delivery(id="cb_1", kind="callback", url=str(server.make_url(path))))


async def test_no_answer_is_a_host_failure(
    attempt: tuple[HttpAttempt, TestServer], unused_tcp_port: int
) -> None:
    send, _ = attempt
    with pytest.raises(Retry) as raised:
        await send(
            Delivery(id="cb_1", kind="callback", url=f"http://127.0.0.1:{unused_tcp_port}/x")
        )
    assert (raised.value.outcome, raised.value.host_failed) == ("connection_error", True)


async def test_a_get_callback_stored_with_a_fragment_carries_its_outcome(target: Target) -> None:
    """A URL with a fragment is refused when given; one stored before that (a job or
    subscription of an older version) still gets its outcome in the query, not after the
    fragment, which the client drops."""
    async with aiohttp.ClientSession() as session:
        send = HttpAttempt(session, Signer(None))
        url = target.url("/").rstrip("/") + "/cbget/3?sig=abc#frag"
        body = {"job_id": "j1", "status": "completed", "items": [{}]}
        await send(Delivery(id="cb_1", kind="callback", url=url, method="GET", body=body))
    [received] = target.received
    assert (
        received.raw_path
        == "/cbget/3?sig=abc&job_id=j1&status=completed&item_count=1&error_count=0"
    )
