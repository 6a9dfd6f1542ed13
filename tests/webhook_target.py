"""A real HTTP server on loopback that records webhooks and answers as a test tells it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer


@dataclass
class Received:
    method: str
    path: str
    raw_path: str  # the request target as it came on the wire: path and query, undecoded
    query: dict[str, str]
    query_string: str
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.monotonic)  # when it arrived


@dataclass
class Target:
    server: TestServer | None = None
    received: list[Received] = field(default_factory=list)
    # Statuses to answer, in order; once used up, 200. `by_path` first, for its paths.
    script: list[int] = field(default_factory=list)
    by_path: dict[str, list[int]] = field(default_factory=dict)
    hold_s: dict[str, float] = field(default_factory=dict)  # by path: answer only after that
    texts: dict[int, str] = field(default_factory=dict)  # by status; else "ok" or "nope"
    headers: dict[str, str] = field(default_factory=dict)
    arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    def url(self, path: str = "/hook") -> str:
        assert self.server is not None
        return str(self.server.make_url(path))

    async def handle(self, request: web.Request) -> web.Response:
        script = self.by_path.get(request.path, self.script)
        status = script.pop(0) if script else 200
        async with self.arrived:
            self.received.append(
                Received(
                    request.method,
                    request.path,
                    request.raw_path,
                    dict(request.query),
                    request.query_string,
                    dict(request.headers),
                    await request.read(),
                )
            )
            self.arrived.notify_all()
        if request.path in self.hold_s:  # recorded as it arrives, answered later
            await asyncio.sleep(self.hold_s[request.path])
        return web.Response(
            status=status,
            text=self.texts.get(status, "ok" if status < 300 else "nope"),
            headers=self.headers if status >= 300 else None,
        )

    async def wait_for(self, count: int, timeout: float = 20) -> list[Received]:
        """The first `count` requests received, once they are in."""
        async with self.arrived:
            await asyncio.wait_for(
                self.arrived.wait_for(lambda: len(self.received) >= count), timeout
            )
        return self.received[:count]


@pytest.fixture
async def target() -> AsyncIterator[Target]:
    target = Target()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", target.handle)
    target.server = TestServer(app, host="127.0.0.1")
    await target.server.start_server()
    yield target
    await target.server.close()


def json_of(received: Received) -> Any:
    return orjson.loads(received.body)
