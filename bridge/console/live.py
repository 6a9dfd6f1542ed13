"""The pages' live updates: the event stream of GET /api/v1/events, opened by the page's script
with its session cookie (EventSource sends no other credential), narrowed to the session's
workflows as the API narrows a limited token's, and ended within a second of its session's end
(sign-out, expiry, its token's expiry) or of a drain — an open console page must not hold a
draining instance's connections, which the blue-green switch waits to see closed.

The pages' streams count among the BRIDGE_SSE_MAX_STREAMS the API's do, at most MAX_STREAMS of
them, MAX_PER_SESSION a session (a new one ends the session's oldest): n8n's listeners keep the
rest. A page refused a stream (429, or 503 while draining) refreshes by its timer; EventSource
does not try again after a refusal."""

from __future__ import annotations

from aiohttp import web

from bridge.api.events import STILL_ALLOWED, stream
from bridge.console.render import SESSION
from bridge.console.sessions import SESSIONS
from bridge.errors import Overloaded, Unavailable
from bridge.keys import LIFECYCLE

MAX_STREAMS = 10
MAX_PER_SESSION = 3
# Session id → its pages' open streams, oldest first.
OPEN: web.AppKey[dict[str, list[web.Request]]] = web.AppKey("console_streams")


async def events(request: web.Request) -> web.StreamResponse:
    session, sessions = request[SESSION], request.app[SESSIONS]
    lifecycle, open_streams = request.app[LIFECYCLE], request.app[OPEN]
    if lifecycle.draining:
        raise Unavailable("this instance is draining: its pages refresh by their timers")
    own = open_streams.setdefault(session.id, [])
    if len(own) >= MAX_PER_SESSION:
        # The page just opened is the one being looked at: the session's oldest stream goes
        # (a page left a moment ago, whose close the bridge has not seen yet, most likely).
        oldest = own.pop(0)
        if oldest.transport is not None:
            oldest.transport.abort()
    elif sum(map(len, open_streams.values())) >= MAX_STREAMS:
        raise Overloaded(
            "the console's pages hold as many event streams as they may: this page refreshes "
            "by its timer"
        )
    request[STILL_ALLOWED] = lambda: sessions.alive(session) and not lifecycle.draining
    own.append(request)
    try:
        return await stream(request)
    finally:
        if request in own:
            own.remove(request)
        if not own:
            open_streams.pop(session.id, None)
