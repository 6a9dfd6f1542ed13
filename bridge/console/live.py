"""The pages' live updates: the event stream of GET /api/v1/events, opened by the page's script
with its session cookie (EventSource sends no other credential), narrowed to the session's
workflows as the API narrows a limited token's, and ended within a second of its session's end
(sign-out, expiry, its token's expiry) or of a drain — an open console page must not hold a
draining instance's connections, which the blue-green switch waits to see closed.

The pages' streams count among the BRIDGE_SSE_MAX_STREAMS the API's do, at most MAX_STREAMS of
them and MAX_PER_CREDENTIAL a credential (whatever its sessions), so that n8n's listeners keep
the rest and no one credential takes the console's share. A page refused a stream (429, or 503
while draining) refreshes by its timer; EventSource does not try again after a refusal."""

from __future__ import annotations

from aiohttp import web

from bridge.api.events import STILL_ALLOWED, stream
from bridge.console.render import SESSION
from bridge.console.sessions import SESSIONS
from bridge.errors import Overloaded, Unavailable
from bridge.keys import LIFECYCLE

MAX_STREAMS = 10
MAX_PER_CREDENTIAL = 3
# A credential (by its sessions) → its pages' open streams.
OPEN: web.AppKey[dict[str, list[web.Request]]] = web.AppKey("console_streams")


def _open_now(open_streams: dict[str, list[web.Request]]) -> None:
    """Forget the streams whose connection has closed (a page left a moment ago: its stream's
    own loop notices within a second, its count must not wait for that)."""
    for key, requests in list(open_streams.items()):
        requests[:] = [
            r for r in requests if r.transport is not None and not r.transport.is_closing()
        ]
        if not requests:
            del open_streams[key]


async def events(request: web.Request) -> web.StreamResponse:
    session, sessions = request[SESSION], request.app[SESSIONS]
    lifecycle, open_streams = request.app[LIFECYCLE], request.app[OPEN]
    if lifecycle.draining:
        raise Unavailable("this instance is draining: its pages refresh by their timers")
    _open_now(open_streams)
    own = open_streams.setdefault(session.credential, [])
    if len(own) >= MAX_PER_CREDENTIAL or sum(map(len, open_streams.values())) >= MAX_STREAMS:
        if not own:
            del open_streams[session.credential]
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
            open_streams.pop(session.credential, None)
