"""Typed keys for what the app and each request carry."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    import aiohttp

    from bridge.auth import Authenticator, Principal
    from bridge.backends import DeadLetterStore, Embedded, EventStore, Redis
    from bridge.breaker import Breakers
    from bridge.callbacks import Deliverer
    from bridge.events import EventBus
    from bridge.execution import Execution
    from bridge.history import History
    from bridge.lifecycle import Lifecycle
    from bridge.metrics import Metrics
    from bridge.outbound import OutboundGuard
    from bridge.processors.registry import Registry
    from bridge.runner import Runner
    from bridge.services import Services
    from bridge.settings import Settings
    from bridge.stores.base import Store
    from bridge.subscriptions import Subscriptions
    from bridge.webhooks import Signer
    from bridge.worker import WorkerPool

SETTINGS: web.AppKey[Settings] = web.AppKey("settings")
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
AUTH: web.AppKey[Authenticator] = web.AppKey("auth")
REGISTRY: web.AppKey[Registry] = web.AppKey("registry")
RUNNER: web.AppKey[Runner] = web.AppKey("runner")
STORE: web.AppKey[Store] = web.AppKey("store")
EXECUTION: web.AppKey[Execution] = web.AppKey("execution")
LIFECYCLE: web.AppKey[Lifecycle] = web.AppKey("lifecycle")
OPENAPI: web.AppKey[dict[str, Any]] = web.AppKey("openapi")
BACKEND: web.AppKey[Embedded | Redis] = web.AppKey("backend")
EVENT_LOG: web.AppKey[EventStore] = web.AppKey("event_log")
OUTBOX: web.AppKey[DeadLetterStore] = web.AppKey("outbox")
EVENTS: web.AppKey[EventBus] = web.AppKey("events")
SUBSCRIPTIONS: web.AppKey[Subscriptions] = web.AppKey("subscriptions")
HTTP: web.AppKey[aiohttp.ClientSession] = web.AppKey("http")
BREAKERS: web.AppKey[Breakers] = web.AppKey("breakers")
OUTBOUND: web.AppKey[OutboundGuard] = web.AppKey("outbound")
DELIVERER: web.AppKey[Deliverer] = web.AppKey("deliverer")
SIGNER: web.AppKey[Signer] = web.AppKey("signer")
WORKERS: web.AppKey[WorkerPool] = web.AppKey("workers")
HISTORY: web.AppKey[History] = web.AppKey("history")
SERVICES: web.AppKey[Services] = web.AppKey("services")

TRACE_ID: web.RequestKey[str] = web.RequestKey("trace_id")
PRINCIPAL: web.RequestKey[Principal] = web.RequestKey("principal")
