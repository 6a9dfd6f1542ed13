"""GET /api/v1/events (Server-Sent Events) and the webhook subscriptions to events.

A stream's buffer is bounded (BRIDGE_SSE_BUFFER_BYTES, and 1000 events): a stream that falls
behind is closed at once, and its client resumes with Last-Event-ID.
At most BRIDGE_SSE_MAX_STREAMS streams are open at once (429 past it).

A workflow-limited token streams only its workflows' events (none without a workflow); its
subscriptions are delivered only those, and it sees, and removes, only the subscriptions made
by tokens whose limit lies within its own."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiohttp import web
from pydantic import TypeAdapter, ValidationError

from bridge.api.access import limit_of, require_workflow
from bridge.api.body import json_response, parse_query, read_json, validate
from bridge.api.models import MAX_EVENT_ID, EventId, EventsQuery
from bridge.errors import NotFound, Overloaded, ValidationFailed
from bridge.events import Event, frame_of, matches
from bridge.keys import EVENTS, OUTBOUND, SETTINGS, SUBSCRIPTIONS
from bridge.outbound import refuse_url
from bridge.subscriptions import Subscription, SubscriptionRequest

_EVENT_ID = TypeAdapter(EventId)
HEARTBEAT_S = 15.0
GONE_CHECK_S = 1.0  # how often an idle stream looks whether its client is gone
# Events replayed per read of the log: at most ~2 MiB at the largest reports, held while written.
REPLAY_PAGE = 16
# Whether the stream may go on (checked at each event and each second): a console session's
# stream ends with its session; a credential in a header is checked once, at the start.
STILL_ALLOWED: web.RequestKey[Callable[[], bool]] = web.RequestKey("stream_still_allowed")
STREAM_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}


async def stream(request: web.Request) -> web.StreamResponse:
    """Events as they happen, after those since `Last-Event-ID` (header, or `last_event_id`)."""
    query = parse_query(request, EventsQuery)
    bus = request.app[EVENTS]
    settings = request.app[SETTINGS]
    if len(bus.listeners) >= settings.sse_max_streams:
        raise Overloaded(
            f"{settings.sse_max_streams} event streams are open, as many as "
            "BRIDGE_SSE_MAX_STREAMS allows; try again later",
            headers={"Retry-After": str(int(HEARTBEAT_S))},
        )
    types = tuple(t for t in (query.type or "").split(",") if t)
    if query.workflow_id is not None:
        require_workflow(request, query.workflow_id, "/query/workflow_id")
    accepts = _accepts(request, matches(types, query.workflow_id))
    after = _last_event_id(request, query.last_event_id)
    if request.method == "HEAD":  # the stream's head, checked as a GET's is; no stream
        return web.StreamResponse(headers=STREAM_HEADERS)
    # Listen before replaying, so nothing published in between is missed; ids skip repeats.
    listener = bus.listen(accepts, settings.sse_buffer_bytes)
    loop = asyncio.get_running_loop()
    listener.on_behind = lambda: _cut_off(request)
    response = web.StreamResponse(headers=STREAM_HEADERS)
    try:
        await response.prepare(request)
        await response.write(b"retry: 2000\n\n")
        if after is None:
            after = bus.last_id
        while page := await bus.since(
            after, types=types, workflow_id=query.workflow_id, limit=REPLAY_PAGE
        ):
            for past in filter(accepts, page):
                await response.write(frame_of(past))
            after = page[-1].id
            if len(page) < REPLAY_PAGE:
                break
        written = loop.time()
        allowed = request.get(STILL_ALLOWED, _always)
        while not listener.ended.is_set() and allowed():
            event = await listener.next(GONE_CHECK_S)
            if event is None:
                # aiohttp tells a handler of a closed connection only when it writes: look, so
                # that a closed stream's listener (and its buffer) goes within a second.
                if request.transport is None or request.transport.is_closing():
                    break
                if loop.time() - written >= HEARTBEAT_S and not listener.ended.is_set():
                    await response.write(b": keep-alive\n\n")
                    written = loop.time()
                continue
            if event.id > after and allowed():
                await response.write(event.frame)
                after, written = event.id, loop.time()
        # Too slow to keep up, or the bridge is stopping: the stream ends, and the client
        # resumes with Last-Event-ID (from this bridge's log, or another instance's).
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        bus.forget(listener)
    return response


def _always() -> bool:
    return True


def _cut_off(request: web.Request) -> None:
    """A stream fell behind: close its connection at once. Its writer may be waiting on a client
    that reads nothing, and would wait so even to end the stream; the frames the system already
    took still reach the client, which resumes after the last whole one."""
    if request.transport is not None:
        request.transport.abort()


def _accepts(request: web.Request, wanted: Callable[[Event], bool]) -> Callable[[Event], bool]:
    """The stream's filter, narrowed to the credential's workflows."""
    limit = limit_of(request)
    if limit is None:
        return wanted
    return lambda event: wanted(event) and limit.allows(event.workflow_id)


def _last_event_id(request: web.Request, from_query: int | None) -> int | None:
    header = request.headers.get("Last-Event-ID")
    if header is None:
        return from_query
    # Parsed as the query's `last_event_id` is (ASCII digits, no more than the stores hold):
    # checked here, before the stream's 200, not by the store in the middle of it.
    try:
        return _EVENT_ID.validate_python(header)
    except ValidationError:
        raise ValidationFailed(
            f"Last-Event-ID must be an event id (0 to {MAX_EVENT_ID}), not {header[:40]!r}",
            details=[{"pointer": "/headers/Last-Event-ID", "message": "not an event id"}],
        ) from None


async def subscribe(request: web.Request) -> web.Response:
    subscription = await add_subscription(request, await read_json(request))
    return json_response(
        subscription.shown(),
        status=201,
        headers={"Location": f"/api/v1/subscriptions/{subscription.id}"},
    )


async def add_subscription(request: web.Request, data: Any) -> Subscription:
    """A new subscription from a request's parsed body (the API's or the console's form): 422
    for a body that is no SubscriptionRequest or a URL the outbound guard refuses, 403 for a
    workflow outside the credential's limit; nothing is made then."""
    body = validate(SubscriptionRequest, data)
    if body.workflow_id is not None:
        require_workflow(request, body.workflow_id, "/workflow_id")
    refuse_url(request.app[OUTBOUND], str(body.url), "/url")
    return await request.app[SUBSCRIPTIONS].add(body, limit_of(request))


async def list_subscriptions(request: web.Request) -> web.Response:
    subscriptions = await visible_subscriptions(request)
    return json_response({"subscriptions": [s.shown() for s in subscriptions]})


async def visible_subscriptions(request: web.Request) -> list[Subscription]:
    """The subscriptions this credential may see."""
    limit = limit_of(request)
    await request.app[SUBSCRIPTIONS].load()  # those another instance made a moment ago too
    return [s for s in request.app[SUBSCRIPTIONS].all() if s.visible_to(limit)]


async def _subscription(request: web.Request) -> Subscription:
    """The subscription of the path, if this credential may see it; else 404, as if unknown."""
    subscription_id = request.match_info["subscription_id"]
    subscriptions = request.app[SUBSCRIPTIONS]
    if subscriptions.get(subscription_id) is None:
        await subscriptions.load()  # another instance may have made it a moment ago
    subscription = subscriptions.get(subscription_id)
    if subscription is None or not subscription.visible_to(limit_of(request)):
        raise NotFound(f"no subscription {subscription_id!r}")
    return subscription


async def get_subscription(request: web.Request) -> web.Response:
    return json_response((await _subscription(request)).shown())


async def unsubscribe(request: web.Request) -> web.Response:
    return json_response({"deleted": await remove_subscription(request)})


async def remove_subscription(request: web.Request) -> str:
    """Remove the subscription of the path (404 as `_subscription`); its id."""
    subscription_id = (await _subscription(request)).id
    if not await request.app[SUBSCRIPTIONS].remove(subscription_id):
        raise NotFound(f"no subscription {subscription_id!r}")
    return subscription_id
