"""The app factory: `create_app(settings)` wires everything; resources open and close in
cleanup contexts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from aiohttp import web

from bridge.api.middleware import errors, observe
from bridge.api.routes import add_routes
from bridge.auth import Authenticator
from bridge.execution import Execution
from bridge.keys import (
    AUTH,
    EXECUTION,
    LIFECYCLE,
    METRICS,
    OPENAPI,
    REGISTRY,
    RUNNER,
    SETTINGS,
    STORE,
)
from bridge.lifecycle import Lifecycle
from bridge.metrics import Metrics
from bridge.openapi import build_spec
from bridge.processors.registry import Registry
from bridge.runner import Runner
from bridge.services import Services
from bridge.settings import Settings
from bridge.smtp import SmtpPool
from bridge.stores.sqlite import SqliteJobStore

log = logging.getLogger(__name__)

DB_FILE = "bridge.sqlite3"


def create_app(settings: Settings, registry: Registry | None = None) -> web.Application:
    """The daemon as an aiohttp app; `registry` defaults to the processors the settings name."""
    app = web.Application(
        middlewares=[observe, errors],
        client_max_size=settings.max_body_bytes,
    )
    app[SETTINGS] = settings
    app[METRICS] = Metrics(settings.color)
    app[AUTH] = Authenticator(settings)
    app[REGISTRY] = registry or Registry.load(settings.processors)
    app[LIFECYCLE] = Lifecycle()
    app[OPENAPI] = build_spec(app[REGISTRY].names())
    add_routes(app)
    app.cleanup_ctx.extend([_store, _runner, _execution, _purge])
    return app


async def _store(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    store = SqliteJobStore(
        settings.data_dir / DB_FILE, settings.job_retention_s, settings.sync_job_retention_s
    )
    await store.open()
    app[STORE] = store
    yield
    await store.close()


async def _runner(app: web.Application) -> AsyncIterator[None]:
    runner = Runner(app[SETTINGS])
    app[RUNNER] = runner
    yield
    runner.close()


async def _execution(app: web.Application) -> AsyncIterator[None]:
    smtp = SmtpPool(app[SETTINGS])
    services = Services(ledger=app[STORE], smtp=smtp)
    app[EXECUTION] = Execution(
        app[SETTINGS], app[REGISTRY], app[RUNNER], app[STORE], app[METRICS], services
    )
    yield
    await smtp.close()


async def _purge(app: web.Application) -> AsyncIterator[None]:
    """Remove finished jobs past their retention, now and then, in small chunks."""
    settings = app[SETTINGS]
    interval = min(settings.job_retention_s / 10, settings.sync_job_retention_s / 10, 300.0)

    async def loop() -> None:
        while True:
            try:
                removed = await app[STORE].purge_expired(time.time())
                if removed:
                    log.info("removed %d expired job(s)", removed)
            except Exception:
                log.exception("expired-job clean-up failed; trying again later")
            await asyncio.sleep(interval)

    task = asyncio.create_task(loop(), name="purge-expired-jobs")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
