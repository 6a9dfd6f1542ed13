"""GET /api/v1/processors: what the n8n node offers in its processing-type list."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from bridge.api.body import json_response
from bridge.keys import REGISTRY
from bridge.processors.registry import ProcessorSpec


async def list_processors(request: web.Request) -> web.Response:
    return json_response({"processors": [described(spec) for spec in request.app[REGISTRY]]})


def described(spec: ProcessorSpec) -> dict[str, Any]:
    """A processor as the API (and the console) shows it."""
    return {
        "name": spec.name,
        "description": spec.description,
        "parameters": spec.parameters_schema(),
        "options": {
            "batch": spec.batch,
            "cpu_bound": spec.cpu_bound,
            "is_async": spec.is_async,
            "timeout_s": spec.timeout_s,
            "concurrency": spec.concurrency,
            "item_concurrency": spec.item_concurrency,
            "max_attempts": spec.max_attempts,
        },
    }
