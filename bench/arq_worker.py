"""The arq side of bench/background.py: a worker whose job does what a bridge `echo` job with a
callback does — return the items, POST them to the callback URL."""

from __future__ import annotations

import os
from typing import Any, ClassVar

import aiohttp
from arq.connections import RedisSettings


async def startup(ctx: dict[str, Any]) -> None:
    ctx["session"] = aiohttp.ClientSession()


async def shutdown(ctx: dict[str, Any]) -> None:
    await ctx["session"].close()


async def echo(ctx: dict[str, Any], items: list[Any], callback_url: str | None) -> list[Any]:
    if callback_url:
        body = {"job_id": ctx["job_id"], "status": "completed", "items": items}
        async with ctx["session"].post(callback_url, json=body) as response:
            await response.read()
    return items


class WorkerSettings:
    functions: ClassVar = [echo]
    on_startup = startup
    on_shutdown = shutdown
    redis_settings = RedisSettings.from_dsn(os.environ.get("ARQ_REDIS", "redis://127.0.0.1:6379"))
    max_jobs = int(os.environ.get("ARQ_MAX_JOBS", "32"))
    keep_result = 3600
