"""One attempt at delivering a webhook over HTTP, and what its answer means: delivered (2xx), to
be retried (`Retry`), or never to be taken (`GiveUp`) — with the outcome the metrics count and
whether the answer says the host itself is failing (what its circuit breaker counts).

GET callbacks (n8n's Wait node resumes on GET by default) carry no body: the outcome travels in
the query (`job_id`, `status`, `workflow_id`, `execution_id`, `duration_ms`, `item_count`,
`error_count`), the signature covers that query string, and the items are fetched from
`GET /api/v1/workflow/status/{job_id}`.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlencode, urlsplit

import aiohttp

from bridge.given_url import as_called
from bridge.http_client import failure, status_text
from bridge.items import dumps
from bridge.outbound import OutboundRefused
from bridge.retry import retry_after
from bridge.webhooks import Delivery, Signer

GET_FIELDS = ("job_id", "status", "workflow_id", "execution_id", "duration_ms")

# What became of one attempt (the `outcome` label of bridge_webhook_attempts_total).
AttemptOutcome = Literal[
    "delivered",  # 2xx
    "connection_error",  # no answer: refused, reset, DNS, TLS
    "timeout",  # no answer in time, or 408
    "server_error",  # 5xx
    "throttled",  # 429
    "not_ready",  # 409 "is running already" (n8n has not saved the wait yet), 425
    "finished",  # 409: n8n says the execution has finished; it will never take this
    "rejected",  # 404, 410, any other 4xx (another 409 too), 3xx
    "refused",  # not sent: BRIDGE_OUTBOUND_* does not allow the URL
]
ATTEMPT_OUTCOMES: tuple[AttemptOutcome, ...] = (
    "delivered",
    "connection_error",
    "timeout",
    "server_error",
    "throttled",
    "not_ready",
    "finished",
    "rejected",
    "refused",
)
HOST_FAILURES: frozenset[AttemptOutcome] = frozenset(
    {"connection_error", "timeout", "server_error", "throttled"}
)


class Retry(Exception):
    """Try again later; `host_failed` when the host itself is failing (not when it answered
    that this one resource is not ready)."""

    def __init__(self, reason: str, outcome: AttemptOutcome, after_s: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.outcome = outcome
        self.after_s = after_s

    @property
    def host_failed(self) -> bool:
        return self.outcome in HOST_FAILURES


class GiveUp(Exception):
    def __init__(self, reason: str, outcome: AttemptOutcome) -> None:
        super().__init__(reason)
        self.outcome = outcome


class HttpAttempt:
    """Sends a delivery once through the guarded client, signed."""

    def __init__(self, session: aiohttp.ClientSession, signer: Signer) -> None:
        self._session = session
        self.signer = signer

    async def __call__(self, delivery: Delivery) -> None:
        # A fragment is never sent. Given URLs with one are refused; one stored before they
        # were would drop a GET's outcome, appended after it: the query goes before it.
        url, body = delivery.url.partition("#")[0], b""
        if delivery.method == "GET":
            query = urlencode(
                {k: v for k in GET_FIELDS if (v := delivery.body.get(k)) is not None}
                | {
                    "item_count": len(delivery.body.get("items") or ()),
                    "error_count": len(delivery.body.get("errors") or ()),
                }
            )
            url += ("&" if urlsplit(url).query else "?") + query
            signed = query.encode()
        else:
            body = signed = dumps(delivery.body)
        headers = self.signer.headers(delivery.id, signed)
        if delivery.trace_id:
            headers["X-Trace-ID"] = delivery.trace_id
        if body:
            headers["Content-Type"] = "application/json"
        try:
            async with self._session.request(
                delivery.method,
                as_called(url),
                data=body or None,
                headers=headers,
                allow_redirects=False,
            ) as response:
                status = response.status
                after = retry_after(response.headers.get("Retry-After"))
                # Only n8n's 409 is read, a little: is the execution running, or finished?
                conflict = (await response.content.read(300)).lower() if status == 409 else b""
        except OutboundRefused as exc:  # BRIDGE_OUTBOUND_*: no retry changes that
            raise GiveUp(f"not sent: {exc}", "refused") from None
        except TimeoutError as exc:
            raise Retry(failure(exc), "timeout") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise Retry(failure(exc), "connection_error") from None
        if 200 <= status < 300:
            return
        # The bridge's words only: the target's answer is never quoted (it may be anything).
        message = status_text(status)
        if b"finished" in conflict:
            raise GiveUp(f"{message}: n8n says the execution has finished", "finished")
        if b"running" in conflict or status == 425:
            raise Retry(message, "not_ready", after)
        if status >= 500:
            raise Retry(message, "server_error", after)
        if status == 429:
            raise Retry(message, "throttled", after)
        if status == 408:
            raise Retry(message, "timeout", after)
        raise GiveUp(message, "rejected")  # any other 409 too: retrying does not change it
