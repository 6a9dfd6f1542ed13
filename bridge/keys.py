"""Typed keys for what the app and each request carry."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from bridge.auth import Authenticator
    from bridge.execution import Execution
    from bridge.lifecycle import Lifecycle
    from bridge.metrics import Metrics
    from bridge.processors.registry import Registry
    from bridge.runner import Runner
    from bridge.settings import Settings
    from bridge.stores.base import Store

SETTINGS: web.AppKey[Settings] = web.AppKey("settings")
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
AUTH: web.AppKey[Authenticator] = web.AppKey("auth")
REGISTRY: web.AppKey[Registry] = web.AppKey("registry")
RUNNER: web.AppKey[Runner] = web.AppKey("runner")
STORE: web.AppKey[Store] = web.AppKey("store")
EXECUTION: web.AppKey[Execution] = web.AppKey("execution")
LIFECYCLE: web.AppKey[Lifecycle] = web.AppKey("lifecycle")
OPENAPI: web.AppKey[dict[str, Any]] = web.AppKey("openapi")

TRACE_ID: web.RequestKey[str] = web.RequestKey("trace_id")
