"""Webhook subscriptions to events: listed, made and removed through the API's own functions
(`bridge.api.events`), so a form is checked exactly as a POST /api/v1/subscriptions body is."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from bridge.api.events import add_subscription, remove_subscription, visible_subscriptions
from bridge.console.render import SESSION, page, redirect, text_field
from bridge.errors import ValidationFailed
from bridge.events import EVENT_TYPES
from bridge.redact import redact_url

PAGE = "/admin/ui/subscriptions"


async def _page(
    request: web.Request,
    *,
    status: int = 200,
    values: dict[str, Any] | None = None,
    error: ValidationFailed | None = None,
) -> web.Response:
    subscriptions = await visible_subscriptions(request)
    return page(
        request,
        "subscriptions.html",
        status=status,
        title="Subscriptions",
        subscriptions=[(s, redact_url(s.url)) for s in subscriptions],
        event_types=EVENT_TYPES,
        values=values or {"url": "", "events": [], "workflow_id": ""},
        error=error,
    )


async def subscriptions(request: web.Request) -> web.StreamResponse:
    return await _page(request)


async def create(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    values: dict[str, Any] = {
        "url": text_field(form, "url"),
        "events": [value for value in form.getall("events", []) if isinstance(value, str)],
        "workflow_id": text_field(form, "workflow_id"),
    }
    # An empty field is no workflow filter; anything else goes to the API's checks as typed.
    body = {**values, "workflow_id": values["workflow_id"] or None}
    try:
        made = await add_subscription(request, body)
    except ValidationFailed as exc:
        return await _page(request, status=exc.http_code, values=values, error=exc)
    request[SESSION].flashes.append(
        f"Subscribed {redact_url(made.url)} to {', '.join(made.events)} (subscription {made.id})."
    )
    return redirect(PAGE)


async def delete(request: web.Request) -> web.StreamResponse:
    removed = await remove_subscription(request)
    request[SESSION].flashes.append(f"Deleted the subscription {removed}: no more events go to it.")
    return redirect(PAGE)
