"""Draining this instance, and serving again, by the API's own functions
(`bridge.api.admin.drain_instance`, `undrain_instance`), after a confirmation that says what
will happen on this backend."""

from __future__ import annotations

from aiohttp import web

from bridge.api.admin import drain_instance, drain_state, undrain_instance
from bridge.console.render import SESSION, page, redirect, text_field
from bridge.errors import ValidationFailed
from bridge.keys import BACKEND

PAGE = "/admin/ui/drain"


async def drain_page(request: web.Request) -> web.StreamResponse:
    return page(
        request,
        "drain.html",
        title="Drain",
        state=drain_state(request.app),
        shared=request.app[BACKEND].shared,
    )


async def act(request: web.Request) -> web.StreamResponse:
    action = text_field(await request.post(), "action")
    if action == "drain":
        state = drain_instance(request.app, "asked on the console")
        said = "Draining: /ready answers 503 now." + (
            " Nothing of this instance's own is left to finish: it may be stopped."
            if state["drained"]
            else " It is drained once its running work has finished (this page shows when)."
        )
    elif action == "undrain":
        undrain_instance(request.app, "asked on the console")
        said = "Serving again: /ready answers 200 when the backends are up."
    else:
        raise ValidationFailed(
            "action must be 'drain' or 'undrain'",
            details=[{"pointer": "/action", "message": "not an action"}],
        )
    request[SESSION].flashes.append(said)
    return redirect(PAGE)
