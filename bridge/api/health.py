"""GET /health (liveness), /ready (readiness), /metrics (Prometheus), /api/v1/openapi.json."""

from __future__ import annotations

import contextlib

from aiohttp import web

from bridge import __version__
from bridge.api.body import json_response
from bridge.keys import LIFECYCLE, METRICS, OPENAPI, OUTBOX, SETTINGS, STORE
from bridge.metrics import CONTENT_TYPE


async def health(request: web.Request) -> web.Response:
    return json_response(
        {
            "status": "ok",
            "version": __version__,
            "color": request.app[SETTINGS].color,
            "uptime_s": round(request.app[LIFECYCLE].uptime_s, 3),
        }
    )


async def ready(request: web.Request) -> web.Response:
    checks = await readiness(request.app)
    ok = all(state == "ok" for state in checks.values())
    return json_response(
        {"status": "ready" if ok else "not_ready", "checks": checks}, status=200 if ok else 503
    )


async def readiness(app: web.Application) -> dict[str, str]:
    """Each check: "ok", or why not (/ready and the console's overview)."""
    checks = {"accepting": "draining" if app[LIFECYCLE].draining else "ok"}
    store = app[STORE]
    try:
        await store.ping()
        checks["store"] = store.unavailable() or "ok"  # it reads, but can it write?
    except Exception as exc:
        checks["store"] = f"{type(exc).__name__}: {exc}"
    return checks


async def metrics(request: web.Request) -> web.Response:
    metrics = request.app[METRICS]
    if not request.app[STORE].unavailable():  # known down: no scrape waits for it to time out
        with contextlib.suppress(Exception):  # it cannot answer: the last count stands
            metrics.dead_letters.set(await request.app[OUTBOX].count_dead())
    return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE})


async def openapi(request: web.Request) -> web.Response:
    return json_response(request.app[OPENAPI])
