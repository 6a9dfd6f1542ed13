"""Outgoing webhooks (job callbacks, event deliveries) as records, and their Standard Webhooks
signatures (https://www.standardwebhooks.com/): `webhook-id`, `webhook-timestamp` and
`webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, through the
specification's own reference library.

A delivery's id is its `webhook-id`: it stays the same across retries and replays, so a receiver
can drop repeats.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field
from standardwebhooks.webhooks import Webhook

from bridge.redact import redact_url

DeliveryKind = Literal["callback", "event", "job"]
DeliveryState = Literal["pending", "dead"]
# Why a delivery waits for its next attempt: its own back-off after a failed attempt, the
# target's Retry-After (when longer), or the host's circuit breaker being open.
WaitReason = Literal["backoff", "retry_after", "breaker_open"]


class Delivery(BaseModel):
    """One webhook to send, or a dead letter (`state` "dead") that could not be done."""

    id: str = Field(description="the webhook-id, stable across retries and replays")
    kind: DeliveryKind = Field(description="callback: a job's outcome; event: a subscription's")
    state: DeliveryState = "pending"
    url: str
    method: Literal["POST", "GET", "PUT", "PATCH"] = "POST"
    job_id: str | None = None
    workflow_id: str | None = None
    subscription_id: str | None = None
    trace_id: str | None = None
    body: dict[str, Any] = Field(default_factory=dict)
    attempts: int = 0
    created_at: float = Field(default_factory=time.time)
    last_error: str | None = None
    next_attempt_at: float | None = Field(
        None, description="while it waits: the next attempt is due then (Unix time)"
    )
    waiting_for: WaitReason | None = None
    dead_at: float | None = None

    def shown(self) -> dict[str, Any]:
        """The delivery as `/admin/dead-letters` shows it: its URL redacted, in the body too (a
        callback's body names the URL it is sent to)."""
        shown = {**self.model_dump(mode="json"), "url": redact_url(self.url)}
        body = shown.get("body")
        if isinstance(body, dict) and isinstance(body.get("callback_url"), str):
            shown["body"] = {**body, "callback_url": redact_url(body["callback_url"])}
        return shown


class Signer:
    """Signs with BRIDGE_CALLBACK_SECRET; without one, deliveries go unsigned."""

    def __init__(self, secret: str | None) -> None:
        self._webhook = Webhook(secret) if secret else None

    @property
    def enabled(self) -> bool:
        return self._webhook is not None

    def headers(self, webhook_id: str, body: bytes, now: float | None = None) -> dict[str, str]:
        timestamp = int(now if now is not None else time.time())
        headers = {"webhook-id": webhook_id, "webhook-timestamp": str(timestamp)}
        if self._webhook is not None:
            headers["webhook-signature"] = self._webhook.sign(
                webhook_id, datetime.fromtimestamp(timestamp, UTC), body.decode()
            )
        return headers

    def verify(self, body: bytes, headers: dict[str, str]) -> bool:
        """True when the headers carry a valid, fresh (5 minutes) signature of `body`."""
        if self._webhook is None:
            return False
        try:
            self._webhook.verify(body, headers, json_parse=False)
        except Exception:  # the library raises assorted errors on malformed headers
            return False
        return True
