"""The overview: this instance's state at a glance, refreshed live."""

from __future__ import annotations

import time

from aiohttp import web

from bridge.api.admin import snapshot
from bridge.api.health import readiness
from bridge.console.render import page


async def overview(request: web.Request) -> web.StreamResponse:
    state = await snapshot(request.app)
    checks = await readiness(request.app)
    return page(
        request,
        "overview.html",
        title="Overview",
        state=state,
        checks=checks,
        charts=[],
        now=time.time(),
    )
