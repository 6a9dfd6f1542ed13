"""Delivering webhooks — job callbacks and event deliveries — from the outbox.

A delivery is in the outbox (the database) before it is first sent and leaves it only when the
target took it (2xx) or when it becomes a dead letter. On start-up, whatever the outbox still
holds is sent again — with the same `webhook-id`, so a receiver can drop a repeat.

The schedule of one delivery is its own: after a failed attempt it waits its back-off (full
jitter, bridge/retry.py) or the target's Retry-After, whichever is longer (capped), and nothing
another delivery does cuts that short. Only a wait *because the host's circuit breaker is open*
ends early — when a probe of the host succeeds. What each answer means is in
bridge/webhook_attempt.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from bridge.aio import stop_tasks
from bridge.breaker import Breaker, Breakers, host_of
from bridge.metrics import Metrics
from bridge.redact import redact_url
from bridge.retry import retry_delay
from bridge.settings import Settings
from bridge.webhook_attempt import AttemptOutcome, GiveUp, Retry
from bridge.webhooks import Delivery, WaitReason

log = logging.getLogger(__name__)


class Outbox(Protocol):
    def put(self, delivery: Delivery) -> None: ...

    def done(self, delivery_id: str) -> None: ...

    async def flush(self) -> None: ...

    async def pending(self) -> list[Delivery]: ...


# Called when a delivery ends: (delivery, delivered?, reason)
Outcome = Callable[[Delivery, bool, str | None], Awaitable[None]]
# Called when a delivery starts to wait for its next attempt (`next_attempt_at` and
# `waiting_for` set), and when the wait is over and the attempt goes (both None again)
Progress = Callable[[Delivery], Awaitable[None]]
# One attempt: returns when delivered, raises Retry or GiveUp (bridge/webhook_attempt.py)
Attempt = Callable[[Delivery], Awaitable[None]]


@contextlib.contextmanager
def _counted(counter: Counter[str], host: str) -> Iterator[None]:
    """`host` counted in `counter` while the block runs."""
    counter[host] += 1
    try:
        yield
    finally:
        counter[host] -= 1
        if not counter[host]:
            del counter[host]


@dataclass(frozen=True)
class Wait:
    host: str
    reason: WaitReason
    until: float  # Unix time


class Deliverer:
    def __init__(
        self,
        settings: Settings,
        outbox: Outbox,
        attempt: Attempt,
        breakers: Breakers,
        metrics: Metrics,
        on_end: Outcome,
        on_progress: Progress,
    ) -> None:
        self._settings = settings
        self._outbox = outbox
        self._attempt = attempt
        self._breakers = breakers
        self._metrics = metrics
        self._on_end = on_end
        self._on_progress = on_progress
        self._gate = asyncio.Semaphore(settings.callback_concurrency)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._sending: Counter[str] = Counter()  # by host
        self._queued: Counter[str] = Counter()  # by host: due, waiting for a sending slot
        self._waits: dict[str, Wait] = {}  # by delivery id
        self._stopping = False

    @property
    def sending(self) -> int:
        """Deliveries under way and not waiting for their next attempt: being sent, due and
        waiting for a sending slot, or recording how an attempt went."""
        return len(self._tasks) - len(self._waits)

    @property
    def waiting(self) -> int:
        """Deliveries waiting for their next attempt (back-off, Retry-After, an open breaker).
        Each is in the outbox with its next attempt's time: a stop loses none of them."""
        return len(self._waits)

    def hosts(self) -> dict[str, dict[str, Any]]:
        """Per host: its breaker, the deliveries being sent, those due but waiting for one of
        the BRIDGE_CALLBACK_CONCURRENCY sending slots, and those waiting for their next attempt,
        by why, with the earliest next attempt (`/admin/status`)."""
        shown: dict[str, dict[str, Any]] = {}

        def entry(host: str) -> dict[str, Any]:
            if host not in shown:
                shown[host] = {
                    "breaker": self._breakers.for_host(host).state,
                    "sending": self._sending[host],
                    "queued": self._queued[host],
                    "waiting": {"backoff": 0, "retry_after": 0, "breaker_open": 0},
                    "next_attempt_at": None,
                }
            return shown[host]

        for host in (*self._sending, *self._queued):
            entry(host)
        for wait in self._waits.values():
            row = entry(wait.host)
            row["waiting"][wait.reason] += 1
            first = row["next_attempt_at"]
            row["next_attempt_at"] = wait.until if first is None else min(first, wait.until)
        return shown

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
        """Let the attempts being made finish within `bound_s`; no new one starts. Deliveries
        waiting for their next attempt stop at once: they are in the outbox, for the next start
        (embedded) or another instance (Redis) to send."""
        self._stopping = True
        await stop_tasks([self._tasks[delivery_id] for delivery_id in self._waits])
        tasks = list(self._tasks.values())
        if tasks:
            await asyncio.wait(tasks, timeout=bound_s)
        await stop_tasks(tasks)
        with contextlib.suppress(Exception):
            await self._outbox.flush()

    async def _deliver(self, delivery: Delivery) -> None:
        host = host_of(delivery.url)
        breaker = self._breakers.for_host(host)
        max_attempts = self._settings.callback_max_attempts
        waited = False
        while True:
            if self._stopping:  # in the outbox, with how far it got: sent after the stop
                return
            if wait_s := breaker.wait_s():
                await self._wait(delivery, breaker, "breaker_open", wait_s, f"{host} is failing")
                waited = True
                continue
            if waited:  # what showed the wait is told it is over: the attempt goes now
                await self._progress(delivery)
                waited = False
            delivery = delivery.model_copy(update={"attempts": delivery.attempts + 1})
            try:
                with _counted(self._queued, host):
                    await self._gate.acquire()
                try:
                    with _counted(self._sending, host):
                        await self._attempt(delivery)
                finally:
                    self._gate.release()
            except GiveUp as exc:
                self._count(delivery, exc.outcome)
                breaker.succeeded()  # the host answered, or was never called: not its failure
                await self._end(delivery, False, str(exc))
                return
            except Retry as exc:
                self._count(delivery, exc.outcome)
                if exc.host_failed:
                    breaker.failed()
                else:
                    breaker.succeeded()  # it answered: up, this resource is just not ready
                if delivery.attempts >= max_attempts:
                    times = "attempt" if delivery.attempts == 1 else "attempts"
                    reason = f"{exc.reason} (after {delivery.attempts} {times})"
                    await self._end(delivery, False, reason)
                    return
                cap = self._settings.callback_retry_max_s
                backoff = retry_delay(delivery.attempts, self._settings.retry_base_s, cap)
                after = min(exc.after_s or 0.0, cap)
                self._metrics.webhook_retries.labels(delivery.kind).inc()
                delivery = delivery.model_copy(update={"last_error": exc.reason})
                if after > backoff:
                    await self._wait(delivery, None, "retry_after", after, exc.reason)
                else:
                    await self._wait(delivery, None, "backoff", backoff, exc.reason)
                waited = True
            else:
                self._count(delivery, "delivered")
                breaker.succeeded()
                await self._end(delivery, True, None)
                return

    async def _wait(
        self,
        delivery: Delivery,
        breaker: Breaker | None,
        reason: WaitReason,
        seconds: float,
        why: str,
    ) -> None:
        """Wait `seconds` before the next attempt — less only when waiting for the host's
        breaker and it changes. The outbox and the job show until when, and why."""
        until = time.time() + seconds
        waiting = delivery.model_copy(update={"next_attempt_at": until, "waiting_for": reason})
        self._outbox.put(waiting)
        self._waits[delivery.id] = Wait(host_of(delivery.url), reason, until)
        try:
            log.info(
                "%s %s to %s: %s; next try in %.3f s",
                delivery.kind,
                delivery.id,
                redact_url(delivery.url),
                why,
                seconds,
                extra={"job_id": delivery.job_id, "trace_id": delivery.trace_id},
            )
            await self._progress(waiting)
            if self._stopping:  # recorded with its next attempt's time: sent after the stop
                return
            if breaker is None:
                await asyncio.sleep(seconds)
            else:
                await breaker.until_changed(seconds)
        finally:
            self._waits.pop(delivery.id, None)

    async def _progress(self, delivery: Delivery) -> None:
        try:
            await self._on_progress(delivery)
        except Exception:
            log.exception("recording the progress of delivery %s", delivery.id)

    def _count(self, delivery: Delivery, outcome: AttemptOutcome) -> None:
        self._metrics.webhook_attempts.labels(delivery.kind, outcome).inc()

    async def _end(self, delivery: Delivery, delivered: bool, reason: str | None) -> None:
        """Record the outcome (the job's callback state, its event) first, then take the delivery
        out of the outbox: a crash between the two sends it again rather than lose the event."""
        try:
            await self._on_end(delivery, delivered, reason)
        except Exception:
            log.exception("after delivery %s", delivery.id)
        if delivered:
            self._outbox.done(delivery.id)
            self._metrics.webhooks.labels(delivery.kind, "delivered").inc()
            return
        dead = delivery.model_copy(
            update={
                "state": "dead",
                "last_error": reason,
                "dead_at": time.time(),
                "next_attempt_at": None,
                "waiting_for": None,
            }
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
