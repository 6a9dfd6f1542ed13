"""A receiver that answers callbacks as n8n's resume webhook (`/webhook-waiting/<execution>`) does,
for the callback soak (`bench/callback_soak.py`, and its short variant in the tests).

n8n answers a resume call with 409 while the execution is still running — a callback that races
ahead of the Wait node's state being saved — and with 409 once the execution has finished
(`WaitingWebhooks.executeWebhook` in n8n's `packages/cli`: its `ConflictError`s, sent as
`{"code": 409, "message": …}`). Here, calls are numbered over all webhook-ids: every tenth is
answered 503; any other call is, per webhook-id, answered 409 "is running already" the first time,
200 the next (the execution resumes), and 409 "has finished already" after that — so a callback
sent again after it was taken shows as a call after its 2xx. Once `down_after` callbacks have been
taken, the receiver is down for `down_s`: its port closed, so calls are refused (not answered
503), and then back on the same port.

Every call that reaches it is recorded per webhook-id: when it came (`time.monotonic()`) and the
status it was answered.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from dataclasses import dataclass
from types import TracebackType

import orjson
from aiohttp import web

from bench.common import free_port

HOST = "127.0.0.1"


def running_already(execution: str) -> str:
    """n8n's message for a resume call while the execution runs."""
    return f'The execution "{execution}" is running already.'


def finished_already(execution: str) -> str:
    """n8n's message for a resume call once the execution has finished (its missing quote is
    n8n's own)."""
    return f'The execution "{execution} has finished already.'


@dataclass(frozen=True)
class Call:
    at: float  # time.monotonic() when it came
    status: int  # what it was answered


def conflict(message: str) -> web.Response:
    body = orjson.dumps({"code": 409, "message": message})
    return web.Response(status=409, body=body, content_type="application/json")


class ResumeReceiver:
    def __init__(self, down_after: int | None = None, down_s: float = 0.0) -> None:
        self.down_after = down_after
        self.down_s = down_s
        self.calls: dict[str, list[Call]] = defaultdict(list)
        self.taken = 0  # 2xx answered, over all webhook-ids
        # When the port was closed and opened again (time.monotonic()).
        self.down_from: float | None = None
        self.down_until: float | None = None
        self.port = 0
        self._count = 0
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._outage: asyncio.Task[None] | None = None

    def url(self, execution: str) -> str:
        return f"http://{HOST}:{self.port}/webhook-waiting/{execution}"

    def delivered(self, webhook_id: str) -> int:
        """How many times the webhook-id was answered 2xx."""
        return sum(200 <= call.status < 300 for call in self.calls.get(webhook_id, ()))

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        if self.down_from is not None and self.down_until is None:
            # Going down: the call is dropped unanswered, as its connection closes.
            request.protocol.force_close()
            return web.Response(status=503)
        execution = request.match_info["execution"]
        webhook_id = request.headers.get("webhook-id", "")
        calls = self.calls[webhook_id]
        self._count += 1
        if self._count % 10 == 0:
            response = web.Response(status=503, text="Service Unavailable")
        elif not any(call.status == 409 for call in calls):
            response = conflict(running_already(execution))
        elif self.delivered(webhook_id):
            response = conflict(finished_already(execution))
        else:
            response = web.json_response({"message": "Workflow was started"})
            self.taken += 1
            if self.taken == self.down_after:
                self.down_from = time.monotonic()
                self._outage = asyncio.create_task(self._go_down())
        calls.append(Call(time.monotonic(), response.status))
        return response

    async def _go_down(self) -> None:
        assert self._runner is not None and self._site is not None
        await self._site.stop()  # no new connections: they are refused
        # Kept-alive connections close too. Every answer given is out already: a handler
        # writes its answer in the step it returns, and calls read after `down_from` was set
        # are dropped unanswered (an answer recorded but never received would be this
        # receiver's fault, not the bridge's).
        for connection in self._runner.server.connections if self._runner.server else ():
            connection.force_close()
        await asyncio.sleep(self.down_s)
        self._site = web.TCPSite(self._runner, HOST, self.port)
        await self._site.start()
        self.down_until = time.monotonic()

    async def wait_up(self) -> None:
        """Once the receiver is back from its outage (at once when it has none)."""
        if self._outage is not None:
            await self._outage

    async def start(self) -> ResumeReceiver:
        app = web.Application()
        app.router.add_route("*", "/webhook-waiting/{execution}", self.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        self.port = free_port()
        self._site = web.TCPSite(self._runner, HOST, self.port)
        await self._site.start()
        return self

    async def close(self) -> None:
        if self._outage is not None:
            self._outage.cancel()
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> ResumeReceiver:
        return await self.start()

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        await self.close()
