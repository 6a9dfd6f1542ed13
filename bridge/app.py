"""The app factory: `create_app(settings)` wires everything; resources open and close in
cleanup contexts.

Each cleanup context closes what it opened also when its own start fails or is cancelled half-way
(its `try … finally` spans the opening): aiohttp exits only the contexts that got to their
`yield`, so a start-up that stops at a later one (Redis silent, the address taken, a signal)
lets go of everything, the data directory's lock included."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator

from aiohttp import web

from bridge.aio import stop_tasks
from bridge.api.edge import no_server_header
from bridge.api.execute import decode_job_request
from bridge.api.middleware import errors, observe, trace_header
from bridge.api.routes import add_routes
from bridge.auth import Authenticator
from bridge.backends import open_backend
from bridge.breaker import Breakers
from bridge.callbacks import Deliverer
from bridge.console.routes import add_console
from bridge.events import Event, EventBus
from bridge.execution import Execution
from bridge.history import History
from bridge.http_client import open_session
from bridge.keys import (
    AUTH,
    BACKEND,
    BREAKERS,
    DELIVERER,
    EVENT_LOG,
    EVENTS,
    EXECUTION,
    HISTORY,
    HTTP,
    LIFECYCLE,
    METRICS,
    OPENAPI,
    OUTBOUND,
    OUTBOX,
    REGISTRY,
    RUNNER,
    SERVICES,
    SETTINGS,
    SIGNER,
    STORE,
    SUBSCRIPTIONS,
    WORKERS,
)
from bridge.lifecycle import Lifecycle
from bridge.metrics import Metrics
from bridge.n8n_client import N8nClient
from bridge.openapi import build_spec
from bridge.outbound import OutboundGuard
from bridge.processors.registry import Registry
from bridge.router import with_default
from bridge.runner import Runner
from bridge.services import Services
from bridge.settings import Settings
from bridge.smtp import SmtpPool
from bridge.subscriptions import Subscriptions
from bridge.webhook_attempt import HttpAttempt
from bridge.webhooks import Delivery, Signer
from bridge.worker import WorkerPool

log = logging.getLogger(__name__)


def create_app(settings: Settings, registry: Registry | None = None) -> web.Application:
    """The daemon as an aiohttp app; `registry` defaults to the processors the settings name."""
    app = web.Application(
        middlewares=[observe, errors],
        client_max_size=settings.max_body_bytes,
    )
    app[SETTINGS] = settings
    app[REGISTRY] = registry or Registry.load(settings.processors)
    app[AUTH] = Authenticator(settings)
    app[LIFECYCLE] = Lifecycle()
    app[OPENAPI] = build_spec(app[REGISTRY].names())
    add_routes(app)
    if settings.console:
        add_console(app)
    app[METRICS] = Metrics(
        settings.color,
        processors=app[REGISTRY].names(),
        queues=[queue.name for queue in with_default(settings.queues)],
        # Every route the router answers, the console's too: their series exist from start-up.
        routes=[(r.resource.canonical, r.method) for r in app.router.routes() if r.resource],
    )
    app.on_response_prepare.append(no_server_header)
    app.on_response_prepare.append(trace_header)
    app.cleanup_ctx.extend([_backend, _runner, _http, _execution, _background, _history, _purge])
    app.on_shutdown.append(_end_streams)
    return app


async def _end_streams(app: web.Application) -> None:
    """Before the shutdown bound starts: end the event streams, which would never end by
    themselves and would hold the shutdown for the whole bound."""
    if EVENTS in app:
        app[EVENTS].close()


async def _backend(app: web.Application) -> AsyncIterator[None]:
    backend = app[BACKEND] = open_backend(app[SETTINGS], app[METRICS], app[LIFECYCLE])
    try:
        await backend.open()
        app[STORE] = backend.store
        app[EVENT_LOG] = backend.events
        app[OUTBOX] = backend.outbox
        yield
    finally:
        await backend.close()


async def _runner(app: web.Application) -> AsyncIterator[None]:
    runner = Runner(app[SETTINGS], app[METRICS])
    app[RUNNER] = runner
    yield
    runner.close()


async def _http(app: web.Application) -> AsyncIterator[None]:
    """One client session for every outgoing call (callbacks, event webhooks, n8n), guarded:
    by host on each request (literal addresses, names, redirects) and by resolved address."""
    settings = app[SETTINGS]
    guard = OutboundGuard.from_settings(settings)
    log.info(guard.describe())
    session = open_session(settings, guard)
    try:
        app[OUTBOUND] = guard
        app[HTTP] = session
        app[BREAKERS] = Breakers(settings.breaker_failures, settings.breaker_reset_s)
        yield
    finally:
        await session.close()


async def _execution(app: web.Application) -> AsyncIterator[None]:
    smtp = SmtpPool(app[SETTINGS])
    try:
        n8n = N8nClient(app[SETTINGS], app[HTTP], app[BREAKERS], app[OUTBOUND])
        app[SERVICES] = Services(ledger=app[STORE], smtp=smtp, n8n=n8n)
        app[EXECUTION] = Execution(
            app[SETTINGS], app[REGISTRY], app[RUNNER], app[STORE], app[METRICS], app[SERVICES]
        )
        yield
    finally:
        await smtp.close()


async def _background(app: web.Application) -> AsyncIterator[None]:
    """The event bus, webhook subscriptions, the deliverer and the worker pool; on start-up
    they take up what the last run left, on shutdown they stop within the bound."""
    settings, store, metrics = app[SETTINGS], app[STORE], app[METRICS]
    bus = app[EVENTS] = EventBus(app[EVENT_LOG], metrics)
    event_log = app[EVENT_LOG]
    subscriptions = app[SUBSCRIPTIONS] = Subscriptions(
        app[BACKEND].subscriptions, event_log.newest_id, lambda: event_log.last_id
    )
    await subscriptions.load()

    async def delivery_ended(delivery: Delivery, delivered: bool, reason: str | None) -> None:
        await app[WORKERS].callback_ended(delivery, delivered, reason)

    async def delivery_progress(delivery: Delivery) -> None:
        await app[WORKERS].callback_progress(delivery)

    secret = settings.callback_secret
    signer = app[SIGNER] = Signer(secret.get_secret_value() if secret else None)
    deliverer = app[DELIVERER] = Deliverer(
        settings,
        app[OUTBOX],
        HttpAttempt(app[HTTP], signer),
        app[BREAKERS],
        metrics,
        delivery_ended,
        delivery_progress,
    )
    if not signer.enabled:
        log.warning("BRIDGE_CALLBACK_SECRET is not set: callbacks and event webhooks go unsigned")

    def deliver_to_subscribers(event: Event) -> None:
        for delivery in subscriptions.deliveries_for(event):
            deliverer.send(delivery)

    bus.hooks.append(deliver_to_subscribers)
    bus.hooks_wanted = subscriptions.any
    workers = app[WORKERS] = WorkerPool(
        settings,
        app[REGISTRY],
        app[RUNNER],
        store,
        bus,
        deliverer,
        metrics,
        app[SERVICES],
        functools.partial(decode_job_request, max_binary_bytes=settings.max_binary_bytes),
        app[BACKEND].new_queue,
    )
    try:
        await app[BACKEND].start(bus, workers, subscriptions, deliverer)
        workers.start()
        yield
    finally:
        app[LIFECYCLE].stop()
        await workers.stop(settings.shutdown_timeout_s)
        await deliverer.stop(min(5.0, settings.shutdown_timeout_s))
        await app[BACKEND].stop()
        with contextlib.suppress(Exception):  # a backend that is down keeps what it had
            await store.flush()


async def _history(app: web.Application) -> AsyncIterator[None]:
    """The last 15 minutes in memory, for the console's charts; stopped before the workers."""
    history = app[HISTORY] = History(app[WORKERS], app[METRICS])
    history.start()
    yield
    await history.stop()


async def _purge(app: web.Application) -> AsyncIterator[None]:
    """Remove finished jobs, old events and dead letters past their retention, now and then, in
    small chunks."""
    settings = app[SETTINGS]
    interval = min(settings.job_retention_s / 10, settings.sync_job_retention_s / 10, 300.0)

    async def loop() -> None:
        while True:
            if app[STORE].unavailable():  # said once where it was noticed; try again later
                await asyncio.sleep(interval)
                continue
            try:
                now = time.time()
                removed = await app[STORE].purge_expired(now)
                removed += await app[EVENT_LOG].purge(now)
                removed += await app[OUTBOX].purge(now)
                if removed:
                    log.info("removed %d expired record(s)", removed)
            except Exception:
                log.exception("clean-up failed; trying again later")
            await asyncio.sleep(interval)

    task = asyncio.create_task(loop(), name="purge-expired")
    yield
    await stop_tasks([task])
