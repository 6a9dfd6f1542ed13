"""Delivering webhooks — job callbacks and event deliveries — from the outbox.

A delivery is in the outbox (the database) before it is first sent and leaves it only when the
target took it (2xx) or when it becomes a dead letter. Retried with exponential backoff and full
jitter (`backoff`), honouring Retry-After, on connection errors, timeouts, 5xx, 429 and 409 (n8n
answers 409 "is running already" when a callback races ahead of the execution's wait being saved);
404, 410 and other 4xx end it at once. A circuit breaker per host spares a host that is down. On
start-up, whatever the outbox still holds is sent again — with the same `webhook-id`, so a
receiver can drop a repeat.

GET callbacks (n8n's Wait node resumes on GET by default) carry no body: the outcome travels in
the query (`job_id`, `status`, `workflow_id`, `execution_id`, `duration_ms`, `item_count`,
`error_count`), the signature covers that query string, and the items are fetched from
`GET /api/v1/workflow/status/{job_id}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol
from urllib.parse import urlencode, urlsplit

import aiohttp
import backoff

from bridge.aio import stop_tasks
from bridge.breaker import Breakers, host_of
from bridge.given_url import as_called
from bridge.http_client import failure, status_text
from bridge.items import dumps
from bridge.metrics import Metrics
from bridge.outbound import OutboundRefused
from bridge.redact import redact_url
from bridge.settings import Settings
from bridge.webhooks import Delivery, Signer

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({408, 409, 425, 429})
GET_FIELDS = ("job_id", "status", "workflow_id", "execution_id", "duration_ms")


class Outbox(Protocol):
    def put(self, delivery: Delivery) -> None: ...

    def done(self, delivery_id: str) -> None: ...

    async def flush(self) -> None: ...

    async def pending(self) -> list[Delivery]: ...


# Called when a delivery ends: (delivery, delivered?, reason)
Outcome = Callable[[Delivery, bool, str | None], Awaitable[None]]


class Retry(Exception):
    def __init__(self, reason: str, after_s: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.after_s = after_s


class GiveUp(Exception):
    pass


def retry_delay(attempt: int, base_s: float, cap_s: float) -> float:
    """Full-jitter exponential backoff for the `attempt`-th retry (1-based)."""
    waits = backoff.expo(base=2, factor=base_s, max_value=cap_s)
    next(waits)  # the generator's first step primes it
    return float(backoff.full_jitter(next(itertools.islice(waits, attempt - 1, None))))


def retry_after(value: str | None) -> float | None:
    """Retry-After in seconds, from delta-seconds or an HTTP date."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    with contextlib.suppress(TypeError, ValueError):
        return max(email.utils.parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
    return None


class Deliverer:
    def __init__(
        self,
        settings: Settings,
        outbox: Outbox,
        session: aiohttp.ClientSession,
        breakers: Breakers,
        metrics: Metrics,
        on_end: Outcome,
    ) -> None:
        self._settings = settings
        self._outbox = outbox
        self._session = session
        self._breakers = breakers
        self._metrics = metrics
        self._on_end = on_end
        secret = settings.callback_secret
        self.signer = Signer(secret.get_secret_value() if secret else None)
        self._gate = asyncio.Semaphore(settings.callback_concurrency)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._stopping = False

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def resume(self) -> int:
        """Send again whatever the outbox still holds (after a restart)."""
        started = sum(self.start(delivery) for delivery in await self._outbox.pending())
        if started:
            log.info("resuming %d undelivered webhook(s)", started)
        return started

    def send(self, delivery: Delivery) -> None:
        """Record the delivery in the outbox (with the next group commit) and send it."""
        self.record(delivery)
        self.start(delivery)

    def record(self, delivery: Delivery) -> None:
        """Put the delivery in the outbox; it is committed with the next write that waits for
        a commit — a job's outcome puts its callback here first, so both land together."""
        self._outbox.put(delivery)

    def start(self, delivery: Delivery) -> bool:
        """Send the delivery, unless it is under way already; whether it was started."""
        if self._stopping or delivery.id in self._tasks:
            return False
        task = asyncio.create_task(self._deliver(delivery), name=f"deliver-{delivery.id}")
        self._tasks[delivery.id] = task
        task.add_done_callback(lambda _: self._tasks.pop(delivery.id, None))
        return True

    async def stop(self, bound_s: float) -> None:
        """Let deliveries under way finish within `bound_s`; the rest stay in the outbox."""
        self._stopping = True
        tasks = list(self._tasks.values())
        if tasks:
            await asyncio.wait(tasks, timeout=bound_s)
        await stop_tasks(tasks)
        with contextlib.suppress(Exception):
            await self._outbox.flush()

    async def _deliver(self, delivery: Delivery) -> None:
        max_attempts = self._settings.callback_max_attempts
        while True:
            host = host_of(delivery.url)
            breaker = self._breakers.for_host(host)
            wait = breaker.wait_s()
            if wait:
                reason, delay = f"circuit open for {host}", wait
            else:
                delivery = delivery.model_copy(update={"attempts": delivery.attempts + 1})
                try:
                    async with self._gate:
                        await self._attempt(delivery)
                except GiveUp as exc:
                    breaker.succeeded()  # the host answered: it is up
                    await self._end(delivery, False, str(exc))
                    return
                except Retry as exc:
                    breaker.failed()
                    if delivery.attempts >= max_attempts:
                        await self._end(
                            delivery, False, f"{exc.reason} (after {delivery.attempts} attempts)"
                        )
                        return
                    reason = exc.reason
                    delay = max(
                        retry_delay(
                            delivery.attempts,
                            self._settings.retry_base_s,
                            self._settings.callback_retry_max_s,
                        ),
                        min(exc.after_s or 0.0, self._settings.callback_retry_max_s),
                    )
                else:
                    breaker.succeeded()
                    await self._end(delivery, True, None)
                    return
                delivery = delivery.model_copy(update={"last_error": reason})
                self._outbox.put(delivery)
            self._metrics.webhook_retries.labels(delivery.kind).inc()
            log.info(
                "%s %s to %s: %s; next try in %.1f s",
                delivery.kind,
                delivery.id,
                redact_url(delivery.url),
                reason,
                delay,
                extra={"job_id": delivery.job_id, "trace_id": delivery.trace_id},
            )
            await breaker.pause(delay)

    async def _attempt(self, delivery: Delivery) -> None:
        url, body = delivery.url, b""
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
                # Only n8n's 409 is read, a little: whether the execution has finished.
                finished = status == 409 and b"finished" in (await response.content.read(300))
        except OutboundRefused as exc:  # BRIDGE_OUTBOUND_*: no retry changes that
            raise GiveUp(f"not sent: {exc}") from None
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise Retry(failure(exc)) from None
        if 200 <= status < 300:
            return
        # The bridge's words only: the target's answer is never quoted (it may be anything).
        message = status_text(status)
        if finished:  # n8n: the execution has finished; it will never take this
            raise GiveUp(f"{message}: n8n says the execution has finished")
        if status >= 500 or status in RETRY_STATUSES:
            raise Retry(message, after)
        raise GiveUp(message)

    async def _end(self, delivery: Delivery, delivered: bool, reason: str | None) -> None:
        if delivered:
            self._outbox.done(delivery.id)
            self._metrics.webhooks.labels(delivery.kind, "delivered").inc()
        else:
            dead = delivery.model_copy(
                update={"state": "dead", "last_error": reason, "dead_at": time.time()}
            )
            self._outbox.put(dead)
            self._metrics.webhooks.labels(delivery.kind, "dead_letter").inc()
            log.warning(
                "%s %s to %s is a dead letter: %s",
                delivery.kind,
                delivery.id,
                redact_url(delivery.url),
                reason,
                extra={"job_id": delivery.job_id, "trace_id": delivery.trace_id},
            )
        try:
            await self._on_end(delivery, delivered, reason)
        except Exception:
            log.exception("after delivery %s", delivery.id)
