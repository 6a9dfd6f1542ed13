"""GET /api/v1/processors: what the n8n node offers in its processing-type list."""

from __future__ import annotations

from aiohttp import web

from bridge.api.body import json_response
from bridge.keys import REGISTRY


async def list_processors(request: web.Request) -> web.Response:
    return json_response(
        {
            "processors": [
                {
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
                for spec in request.app[REGISTRY]
            ]
        }
    )
