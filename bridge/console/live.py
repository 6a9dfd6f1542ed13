"""The pages' live updates: the event stream of GET /api/v1/events, opened by the page's script
with its session cookie (EventSource sends no other credential), narrowed to the session's
workflows as the API narrows a limited token's, and ended within a second of its session's end
(sign-out, expiry, its token's expiry)."""

from __future__ import annotations

from aiohttp import web

from bridge.api.events import STILL_ALLOWED, stream
from bridge.console.render import SESSION
from bridge.console.sessions import SESSIONS


async def events(request: web.Request) -> web.StreamResponse:
    session, sessions = request[SESSION], request.app[SESSIONS]
    request[STILL_ALLOWED] = lambda: sessions.alive(session)
    return await stream(request)
