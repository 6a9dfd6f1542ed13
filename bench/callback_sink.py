"""A callback sink for benchmarks: counts what arrives. `python -m bench.callback_sink PORT`.
POST /hook counts one (any body); GET /count answers the count."""

from __future__ import annotations

import sys

import uvloop
from aiohttp import web

RECEIVED = web.AppKey("received", list)


async def hook(request: web.Request) -> web.Response:
    await request.read()
    request.app[RECEIVED][0] += 1
    return web.Response(text="ok")


async def count(request: web.Request) -> web.Response:
    return web.Response(text=str(request.app[RECEIVED][0]))


def main() -> None:
    app = web.Application()
    app[RECEIVED] = [0]
    app.router.add_post("/hook", hook)
    app.router.add_get("/count", count)
    web.run_app(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        access_log=None,
        print=None,
        loop=uvloop.new_event_loop(),
    )


if __name__ == "__main__":
    main()
