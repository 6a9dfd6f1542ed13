"""The baseline: a bare aiohttp handler that reads the same JSON body and echoes its items back.
Served the same way as the bridge (one process, uvloop), with none of the bridge's work."""

from __future__ import annotations

import asyncio
import sys

import orjson
import uvloop
from aiohttp import web


async def echo(request: web.Request) -> web.Response:
    body = orjson.loads(await request.read())
    return web.Response(
        body=orjson.dumps({"items": body["items"]}), content_type="application/json"
    )


async def serve(port: int) -> None:
    app = web.Application()
    app.router.add_post("/api/v1/workflow/execute", echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print(f"listening on http://127.0.0.1:{port}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1])))
