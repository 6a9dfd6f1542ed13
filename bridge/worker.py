"""Background jobs: accepted durably, routed to a queue, run by that queue's workers, retried,
cancelled, finished with a callback — and taken up again after a restart.

Nothing accepted is lost: a job, its request and its queue entry are committed together before
the 202 goes out (if that commit fails, the caller gets 503 and nothing stays behind); its outcome,
its callback (in the outbox) and the end of its queue entry are committed in one transaction. A
job that was queued or running when its process stopped runs again: at the next start (embedded
queues), or at once on another instance (shared queues) — at-least-once: a run cut short runs
again, and processors with side effects use idempotency keys. A job whose runs keep being cut
short (MAX_INTERRUPTIONS) is failed and kept as a dead letter instead of being retried for ever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from bridge.aio import stop_tasks
from bridge.callbacks import Deliverer
from bridge.errors import BridgeError, Conflict, Internal, NotFound, Overloaded, Unavailable
from bridge.events import EventBus
from bridge.execution import Submission, split_outcomes
from bridge.ids import new_id
from bridge.items import Item, ItemError, encode_outputs
from bridge.jobs import MAX_STORED_ERRORS, Callback, ItemErrorModel, JobError, JobRecord, JobStatus
from bridge.logs import job_id_var, trace_id_var, workflow_id_var
from bridge.metrics import Metrics
from bridge.processors.registry import Context, Registry
from bridge.queues.base import Entry, JobQueue, QueueFull
from bridge.redact import redact_url
from bridge.retry import retry_delay
from bridge.router import JobTraits, Router, with_default
from bridge.runner import Runner
from bridge.services import Services
from bridge.settings import Settings
from bridge.stores.base import JobStore
from bridge.webhooks import Delivery

log = logging.getLogger(__name__)

MAX_INTERRUPTIONS = 3
MONITOR_INTERVAL_S = 1.0
CANCEL_CHECK_S = 0.5  # how often an instance asks whether its running jobs were cancelled elsewhere
CANCEL_WAIT_S = 5.0  # how long a cancel waits for the instance running the job to settle it
CANCEL_POLL_S = 0.1  # …reading the job's record this often meanwhile
STORE_RETRY_AFTER_S = 5
RECENT_WEIGHT = 0.1  # of each new job in a queue's recent wait and run times (a moving average)
# A job accepted here keeps its decoded items for its first run, saving a read and a decode;
# within this budget of request bytes and of jobs (beyond it, and after a restart, the store
# has them). The count matters for small jobs: decoded, one takes ~1.5 KB more than its bytes,
# so a backlog of tiny jobs would otherwise keep ~1 GB within the byte budget (seen in the soak).
DECODED_BUDGET_BYTES = 64 * 1024 * 1024
DECODED_BUDGET_JOBS = 10_000
# …and for this long: on a shared queue another instance may run (or cancel) a job accepted
# here, and its decoded items would otherwise stay, filling the budget for good.
DECODED_KEEP_S = 30.0


def _refuse_cancel(job: JobRecord) -> None:
    """Only a queued or running background job can be cancelled."""
    if job.status.finished:
        raise Conflict(
            f"job {job.job_id} is already {job.status.value}; only queued or running jobs "
            "can be cancelled"
        )
    if job.mode == "sync":
        raise Conflict(f"job {job.job_id} is a sync job; its request is still being answered")


def _cancelled(job: JobRecord | None, job_id: str) -> JobRecord:
    """What a cancel answers: the job cancelled, or still queued or running (the request is
    recorded); 409 if it ended by itself first."""
    if job is None:
        raise NotFound(f"no job {job_id!r}")
    if job.status is not JobStatus.CANCELLED:
        _refuse_cancel(job)
    return job


def _unavailable(reason: str) -> Unavailable:
    return Unavailable(
        f"background jobs cannot be accepted right now: {reason}; the job was not accepted",
        description="try again after Retry-After seconds (sync requests still work)",
        headers={"Retry-After": str(STORE_RETRY_AFTER_S)},
    )


@dataclass(frozen=True, slots=True)
class Running:
    task: asyncio.Task[None]
    entry: Entry
    queue: JobQueue


@dataclass(frozen=True, slots=True)
class Accepted:
    job: JobRecord
    created: bool  # False: an earlier job with the same idempotency key


class WorkerPool:
    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        runner: Runner,
        store: JobStore,
        bus: EventBus,
        deliverer: Deliverer,
        metrics: Metrics,
        services: Services,
        decode: Callable[[JobRecord, bytes], tuple[list[Item], dict[str, Any]]],
        new_queue: Callable[[str, int, float], JobQueue],
    ) -> None:
        self._settings = settings
        self._registry = registry
        self._runner = runner
        self._store = store
        self._bus = bus
        self._deliverer = deliverer
        self._metrics = metrics
        self._services = services
        self._decode = decode  # a stored request → its items and raw parameters
        self.configs = {c.name: c for c in with_default(settings.queues)}
        self.queues = {
            name: new_queue(name, config.max_depth, settings.queue_aging_s)
            for name, config in self.configs.items()
        }
        self._reserved: Counter[str] = Counter()
        self.router = Router(tuple(self.configs.values()), settings.routes, self.queues)
        self._running: dict[str, Running] = {}
        self._processing: dict[str, asyncio.Task[Any]] = {}  # job id → its processor's run
        self._cancelling: set[str] = set()  # running jobs to be cancelled
        self._reserving: dict[str, asyncio.Future[JobRecord]] = {}
        self._accepting: dict[str, asyncio.Future[None]] = {}  # job id → done when committed
        # job id → (record as queued, items, params, request size)
        self._decoded: dict[str, tuple[JobRecord, list[Any], Any, int]] = {}
        self._callbacks: dict[str, JobRecord] = {}  # finished jobs whose callback is under way
        self._decoded_bytes = 0
        self._workers: list[asyncio.Task[None]] = []
        self._alerting: dict[str, bool] = {}
        self._recent: dict[str, dict[str, float]] = {name: {} for name in self.queues}
        self._histograms: dict[tuple[str, str], Any] = {}
        self._stopping = False

    # ---- accepting -------------------------------------------------------------------------

    async def submit(
        self,
        submission: Submission,
        request: bytes,
        api: str,
        callback: Callback | None,
        trace_id: str,
    ) -> Accepted:
        key = submission.idempotency_key
        if key is None:
            return Accepted(await self._create(submission, request, api, callback, trace_id), True)
        if key in self._reserving:  # the same key is being accepted right now
            return Accepted(await asyncio.shield(self._reserving[key]), False)
        reserving = asyncio.get_running_loop().create_future()
        self._reserving[key] = reserving
        try:
            job_id = new_id()
            existing = await self._store.claim_idempotency_key(key, job_id)
            if existing is not None:
                accepted = Accepted(existing, False)
            else:
                try:
                    job = await self._create(submission, request, api, callback, trace_id, job_id)
                except BridgeError:  # refused (429, 503): the key is free for a retry at once
                    with contextlib.suppress(Exception):
                        await self._store.release_idempotency_key(key, job_id)
                    raise
                accepted = Accepted(job, True)
            reserving.set_result(accepted.job)
            return accepted
        except BaseException as exc:
            reserving.set_exception(exc)
            reserving.exception()  # retrieved: waiters, if any, raise it themselves
            raise
        finally:
            del self._reserving[key]

    async def _create(
        self,
        submission: Submission,
        request: bytes,
        api: str,
        callback: Callback | None,
        trace_id: str,
        job_id: str | None = None,
    ) -> JobRecord:
        spec = submission.spec
        traits = JobTraits(
            spec.name,
            submission.workflow_id,
            submission.priority,
            len(submission.items),
            len(request),
        )
        wanted = self.router.queue_for(traits)
        try:
            queue = self.router.admit(wanted, lambda name: self._reserved[name])
        except QueueFull as exc:
            self._metrics.jobs_rejected.labels(exc.queue).inc()
            raise Overloaded(
                f"{exc}: the job was not accepted",
                description="try again after Retry-After seconds, or with fewer jobs at once",
                headers={"Retry-After": str(self._retry_after_s(exc.queue))},
            ) from None
        down = self._store.unavailable()
        if down is not None:
            raise _unavailable(down)
        now = time.time()
        job = JobRecord(
            job_id=job_id or new_id(),
            status=JobStatus.QUEUED,
            mode="async",
            processing_type=spec.name,
            workflow_id=submission.workflow_id,
            execution_id=submission.execution_id,
            node=submission.node,
            priority=submission.priority,
            queue=queue,
            idempotency_key=submission.idempotency_key,
            max_attempts=spec.max_attempts or self._settings.job_max_attempts,
            timeout_s=submission.timeout_s,
            api=api,
            trace_id=trace_id,
            created_at=now,
            item_count=len(submission.items),
            callback=callback,
        )
        fits = (
            self._decoded_bytes + len(request) <= DECODED_BUDGET_BYTES
            and len(self._decoded) < DECODED_BUDGET_JOBS
        )
        if fits and submission.params is not None:
            self._decoded[job.job_id] = (job, submission.items, submission.params, len(request))
            self._decoded_bytes += len(request)
        # The event and the entry first: both are written in the same transaction as the job,
        # so neither the job's entry nor its next event is seen without it and this event. An
        # in-process worker that takes the entry before the commit waits for it (`_run`).
        queued = self._publish("workflow.queued", job, queue=queue)
        self._reserved[queue] += 1
        accepting = self._accepting[job.job_id] = asyncio.get_running_loop().create_future()
        try:
            self.queues[queue].put(Entry(job.job_id, job.priority), force=True)
            await self._store.save(job, durable=True, request=request)
        except Exception as exc:
            self._bus.withdraw(queued)
            self._store.withdraw(job)
            self._forget_decoded(job.job_id)
            log.error("job %s could not be saved: %s", job.job_id, exc)
            raise _unavailable(
                self._store.unavailable() or f"{type(exc).__name__}: {exc}"
            ) from None
        finally:
            self._reserved[queue] -= 1
            del self._accepting[job.job_id]
            accepting.set_result(None)
        log.debug("job %s queued in %r (%d items)", job.job_id, queue, job.item_count)
        return job

    def _retry_after_s(self, queue: str) -> int:
        """A guess at when a slot frees up: the queue's recent run time, at least 1 s."""
        return max(1, min(60, round(self.queues[queue].oldest_wait_s() / 10) or 1))

    # ---- running ---------------------------------------------------------------------------

    def start(self) -> None:
        for name, config in self.configs.items():
            for number in range(config.concurrency):
                self._workers.append(
                    asyncio.create_task(
                        self._work(self.queues[name]), name=f"worker-{name}-{number}"
                    )
                )
        self._workers.append(asyncio.create_task(self._monitor(), name="queue-monitor"))
        self._workers.append(asyncio.create_task(self._watch_cancels(), name="cancel-watch"))

    async def _work(self, queue: JobQueue) -> None:
        while not self._stopping:
            entry = await queue.get()
            if self._stopping:
                if not queue.release(entry):
                    queue.put(entry, force=True)
                return
            self._observe(queue.name, "wait_s", time.monotonic() - entry.enqueued_at)
            task = asyncio.create_task(self._run(entry, queue))
            self._running[entry.job_id] = Running(task, entry, queue)
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                if not task.done():
                    raise
            except Exception:
                log.exception("job %s: unexpected failure in the worker", entry.job_id)
            finally:
                self._running.pop(entry.job_id, None)
                self._cancelling.discard(entry.job_id)

    async def _run(self, entry: Entry, queue: JobQueue) -> None:
        """Run the job of a queue entry — or cancel it, if that was asked for; the entry ends
        once the job is settled (a cut run's entry is handed back by `stop`)."""
        if entry.cancel_requested:
            self._cancelling.add(entry.job_id)
        try:
            accepting = self._accepting.get(entry.job_id)
            if accepting is not None:  # taken before its job's commit: a refused job never runs
                await asyncio.shield(accepting)
            kept = self._forget_decoded(entry.job_id)  # still here: not cancelled, not run yet
            job = kept[0] if kept is not None else await self._store.get(entry.job_id)
            # taken over from an instance that died
            cut = job is not None and job.status is JobStatus.RUNNING and entry.deliveries > 1
            if job is not None and entry.job_id in self._cancelling:
                if job.status is JobStatus.QUEUED or cut:
                    await self._finish(job, JobStatus.CANCELLED)
            else:
                if job is not None and cut:
                    job = await self._interrupted(job)
                if job is not None and job.status is JobStatus.QUEUED:
                    await self._attempt(job, kept, queue)
            # else: gone, or settled already (cancelled while it waited, or its entry was
            # handed out again after its outcome was saved)
        except Exception:
            queue.abandon(entry)  # the store failed: whether the job was settled is unknown
            raise
        queue.ack(entry)

    async def _attempt(
        self, job: JobRecord, kept: tuple[JobRecord, list[Any], Any, int] | None, queue: JobQueue
    ) -> None:
        job_id_var.set(job.job_id)
        trace_id_var.set(job.trace_id)
        workflow_id_var.set(job.workflow_id)
        try:
            spec = self._registry.get(job.processing_type)
            items, params = (kept[1], kept[2]) if kept else await self._request_of(job, spec)
        except BridgeError as exc:
            await self._finish(job.advance(JobStatus.RUNNING), JobStatus.FAILED, error=exc)
            return
        if job.job_id in self._cancelling:  # asked while its request was being read
            await self._finish(job, JobStatus.CANCELLED)
            return
        job = job.advance(JobStatus.RUNNING, retry_at=None)
        await self._store.save(job)
        self._publish("workflow.started", job, attempt=job.attempts)
        ctx = Context.for_job(job, self._settings, self._services)
        timeout_s = self._runner.timeout_for(spec, job.timeout_s, "async")
        started = time.perf_counter()
        # The processor runs in a task of its own: a cancel stops it alone, and this task
        # settles the job — once, whether its processor ended or was stopped.
        run = asyncio.ensure_future(self._runner.run(spec, items, params, ctx, timeout_s))
        self._processing[job.job_id] = run
        if job.job_id in self._cancelling:  # asked while it was being marked running
            run.cancel()
        try:
            outcomes = await run
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if job.job_id not in self._cancelling or (current and current.cancelling()):
                raise  # the bridge is stopping: the job stays `running`, to run again
            await self._finish(job, JobStatus.CANCELLED)
            return
        except BridgeError as exc:
            self._observe(queue.name, "run_s", time.perf_counter() - started)
            if job.job_id in self._cancelling:  # its end may be the cancel's doing: no retry
                await self._finish(job, JobStatus.CANCELLED)
            elif exc.retryable and job.attempts < job.max_attempts:
                await self._retry(job, exc, queue)
            else:
                await self._finish(job, JobStatus.FAILED, error=exc)
            return
        finally:
            del self._processing[job.job_id]
        self._observe(queue.name, "run_s", time.perf_counter() - started)
        outputs, errors = split_outcomes(outcomes)
        await self._finish(job, JobStatus.COMPLETED, outputs=outputs, errors=errors)

    async def _request_of(self, job: JobRecord, spec: Any) -> tuple[list[Any], Any]:
        """The job's items and parameters, read from the store and decoded."""
        request = await self._store.get_data(job.job_id, "request")
        if request is None:
            raise Internal("the job's request is missing from the store")
        items, raw_params = self._decode(job, request)
        return items, spec.parse_params(raw_params)

    def _forget_decoded(self, job_id: str) -> tuple[JobRecord, list[Any], Any, int] | None:
        kept = self._decoded.pop(job_id, None)
        if kept is not None:
            self._decoded_bytes -= kept[3]
        return kept

    def _drop_stale_decoded(self, accepted_before: float) -> None:
        """Forget decoded items of jobs accepted before then (oldest first: kept in order);
        a run that finds none reads the job's request from the store."""
        stale = []
        for job_id, kept in self._decoded.items():
            if kept[0].created_at >= accepted_before:
                break
            stale.append(job_id)
        for job_id in stale:
            self._forget_decoded(job_id)

    def _observe(self, queue: str, what: str, seconds: float) -> None:
        """A job's wait or run time: into the histogram, and the queue's recent average."""
        histogram = self._histograms.get((queue, what))
        if histogram is None:  # labels() costs more than observe(): look each child up once
            family = (
                self._metrics.queue_wait_seconds
                if what == "wait_s"
                else self._metrics.queue_run_seconds
            )
            histogram = self._histograms[(queue, what)] = family.labels(queue)
        histogram.observe(seconds)
        recent = self._recent[queue]
        recent[what] = (
            seconds
            if what not in recent
            else (recent[what] + RECENT_WEIGHT * (seconds - recent[what]))
        )

    async def _retry(self, job: JobRecord, exc: BridgeError, queue: JobQueue) -> None:
        delay = retry_delay(job.attempts, self._settings.retry_base_s, self._settings.retry_max_s)
        waiting = job.advance(
            JobStatus.QUEUED,
            retry_at=time.time() + delay,
            error=JobError(code=exc.code, message=exc.message, retryable=True),
        )
        queue.later(Entry(job.job_id, job.priority), delay)  # committed with the job
        await asyncio.shield(self._store.save(waiting, durable=True))
        self._metrics.job_retries.labels(job.processing_type).inc()
        log.warning(
            "job %s attempt %d/%d failed (%s); retrying in %.1f s",
            job.job_id,
            job.attempts,
            job.max_attempts,
            exc.message,
            delay,
        )

    def _queue_of(self, job: JobRecord) -> JobQueue:
        return self.queues.get(job.queue or "") or self.queues["default"]

    async def _finish(
        self,
        job: JobRecord,
        status: JobStatus,
        *,
        outputs: list[Any] | None = None,
        errors: list[ItemError] | None = None,
        error: BridgeError | None = None,
    ) -> JobRecord:
        self._forget_decoded(job.job_id)  # a job cancelled while it waited must not run
        errors = errors or []
        items, errors = encode_outputs(outputs or [], errors)
        done = job.advance(
            status,
            output_count=len(outputs or []) if status is JobStatus.COMPLETED else None,
            error_count=len(errors),
            errors=[ItemErrorModel(**e.to_dict()) for e in errors[:MAX_STORED_ERRORS]],
            error=JobError(code=error.code, message=error.message, retryable=error.retryable)
            if error is not None
            else (
                JobError(code="cancelled", message="cancelled")
                if status is JobStatus.CANCELLED
                else None
            ),
        )
        result = (
            b'{"items":'
            + items
            + b',"errors":'
            + orjson.dumps([e.to_dict() for e in errors])
            + b"}"
        )
        delivery = self._callback_delivery(done, items, errors) if done.callback else None
        if delivery is not None:
            self._deliverer.record(delivery)
        # The event too is committed with the outcome and the callback, in one transaction: a
        # crash leaves none without the others, and the callback's own event comes after it.
        self._publish(
            f"workflow.{status.value}",
            done,
            duration_ms=done.duration_ms,
            output_count=done.output_count,
            error_count=done.error_count,
            error=done.error.model_dump() if done.error else None,
        )
        await asyncio.shield(self._store.save(done, durable=True, result=result))
        if delivery is not None:
            self._callbacks[done.job_id] = done
            self._deliverer.start(delivery)
        self._metrics.observe_job(
            done.processing_type,
            "async",
            status.value,
            (done.duration_ms or 0) / 1000,
            done.item_count - len(errors),
            len(errors),
        )
        return done

    def _callback_delivery(self, job: JobRecord, items: bytes, errors: list[ItemError]) -> Delivery:
        assert job.callback is not None
        # Built from the job's own, already valid fields: no validation needed.
        return Delivery.model_construct(
            id=f"cb_{job.job_id}",
            kind="callback",
            url=job.callback.url,
            method=job.callback.method,
            job_id=job.job_id,
            workflow_id=job.workflow_id,
            trace_id=job.trace_id,
            created_at=time.time(),  # given: a default factory costs pydantic a signature() here
            body={
                "job_id": job.job_id,
                "workflow_id": job.workflow_id,
                "execution_id": job.execution_id,
                "status": job.status.value,
                "items": orjson.loads(items),
                "errors": [e.to_dict() for e in errors],
                "error": job.error.model_dump() if job.error else None,
                "duration_ms": job.duration_ms,
                "item_count": job.item_count,
                "trace_id": job.trace_id,
                "callback_url": job.callback.url,
            },
        )

    async def callback_progress(self, delivery: Delivery) -> None:
        """Show on the job how its callback's delivery goes: pending, the attempts so far, the
        last error, and — while it waits — when it is tried next and why."""
        if delivery.kind != "callback" or delivery.job_id is None:
            return
        job = self._callbacks.get(delivery.job_id) or await self._store.get(delivery.job_id)
        if job is None or job.callback is None:
            return
        history = job.callback.history
        if delivery.attempts > job.callback.attempts:  # an attempt failed since: keep it
            history = job.callback.with_attempt(delivery.attempts, "failed", delivery.last_error)
        state = job.callback.model_copy(
            update={
                "state": "pending",
                "attempts": delivery.attempts,
                "last_error": delivery.last_error,
                "next_attempt_at": delivery.next_attempt_at,
                "waiting_for": delivery.waiting_for,
                "history": history,
            }
        )
        job = job.model_copy(update={"callback": state})
        if delivery.job_id in self._callbacks:
            self._callbacks[delivery.job_id] = job
        await self._store.save(job)

    async def callback_ended(self, delivery: Delivery, delivered: bool, reason: str | None) -> None:
        """Record how a job's callback went on the job, and publish it."""
        if delivery.kind != "callback" or delivery.job_id is None:
            return
        job = self._callbacks.pop(delivery.job_id, None) or await self._store.get(delivery.job_id)
        if job is not None and job.callback is not None:
            outcome = "delivered" if delivered else "failed"
            state = job.callback.model_copy(
                update={
                    "state": outcome,
                    "attempts": delivery.attempts,
                    "last_error": reason,
                    "next_attempt_at": None,
                    "waiting_for": None,
                    "delivered_at": time.time() if delivered else None,
                    "history": job.callback.with_attempt(delivery.attempts, outcome, reason),
                }
            )
            await self._store.save(job.model_copy(update={"callback": state}))
        self._bus.publish(
            "callback.delivered" if delivered else "callback.failed",
            job_id=delivery.job_id,
            workflow_id=delivery.workflow_id,
            execution_id=job.execution_id if job else None,
            data={"url": redact_url(delivery.url), "attempts": delivery.attempts, "reason": reason},
        )

    def _publish(self, type: Any, job: JobRecord, **data: Any) -> str:
        return self._bus.publish(
            type,
            job_id=job.job_id,
            workflow_id=job.workflow_id,
            execution_id=job.execution_id,
            data={"processing_type": job.processing_type, **data},
        )

    # ---- cancelling, retrying by hand --------------------------------------------------------

    async def cancel(self, job_id: str) -> JobRecord:
        """Cancel a background job wherever it is: taken out of its queue and cancelled here if
        it waits, stopped here if it runs here, else stopped by the instance that runs it (a
        shared queue). The job as cancelled; or, if the instance running it has not settled it
        within CANCEL_WAIT_S, as it is (still queued or running: the request stays recorded)."""
        job = await self._store.get(job_id)
        if job is None:
            raise NotFound(f"no job {job_id!r}")
        _refuse_cancel(job)
        queue = self._queue_of(job)
        entry = await queue.withhold(job_id, job.priority)
        if entry is not None:  # it waited: nobody else can take it now
            current = await self._store.get(job_id)  # as of now (a retry may have moved it)
            if current is not None and not current.status.finished:
                current = await self._finish(current, JobStatus.CANCELLED)
            queue.ack(entry)  # (an entry of a job settled already ends all the same)
            return _cancelled(current, job_id)
        running = self._running.get(job_id)
        if running is not None:
            while not running.task.done():  # again, should a cancellation be lost (`aio`)
                self._request_stop(job_id)
                await asyncio.wait([running.task], timeout=CANCEL_POLL_S)
            found = await self._store.get(job_id)
        else:  # it runs on another instance, which stops it (`_watch_cancels`)
            deadline = time.monotonic() + CANCEL_WAIT_S
            found = await self._store.get(job_id)
            while found is not None and not found.status.finished and time.monotonic() < deadline:
                await asyncio.sleep(CANCEL_POLL_S)
                found = await self._store.get(job_id)
        return _cancelled(found, job_id)

    def _request_stop(self, job_id: str) -> None:
        """Have a job running here cancelled: its processor stopped, or never started."""
        self._cancelling.add(job_id)
        run = self._processing.get(job_id)
        if run is not None and not run.cancelling():
            run.cancel()

    async def _watch_cancels(self) -> None:
        """Stop the jobs running here that were cancelled through another instance: one
        question per queue with running jobs every CANCEL_CHECK_S; none while nothing runs."""
        while True:
            await asyncio.sleep(CANCEL_CHECK_S)
            by_queue: dict[str, list[str]] = {}
            for job_id, run in self._running.items():
                by_queue.setdefault(run.queue.name, []).append(job_id)
            for name, job_ids in by_queue.items():
                try:
                    requested = await self.queues[name].cancel_requests(job_ids)
                except Exception as exc:  # a shared queue's backend is down: ask next round
                    log.debug("cancel requests of queue %r not read: %s", name, exc)
                    continue
                for job_id in requested:
                    if job_id in self._running:
                        self._request_stop(job_id)

    async def retry(self, job_id: str, trace_id: str) -> JobRecord:
        """A new job with the same request as a failed or cancelled one (admin)."""
        job = await self._store.get(job_id)
        if job is None or job.mode != "async":
            raise NotFound(f"no background job {job_id!r}")
        if job.status not in (JobStatus.FAILED, JobStatus.CANCELLED):
            raise Conflict(
                f"job {job_id} is {job.status.value}; only failed or cancelled jobs are retried"
            )
        request = await self._store.get_data(job_id, "request")
        if request is None:
            raise Conflict(f"job {job_id}'s request is no longer kept")
        spec = self._registry.get(job.processing_type)
        items, _ = self._decode(job, request)
        submission = Submission(
            spec=spec,
            items=items,
            params=None,
            workflow_id=job.workflow_id,
            execution_id=job.execution_id,
            node=job.node,
            priority=job.priority,
            timeout_s=job.timeout_s,
        )
        callback = (
            job.callback.model_copy(
                update={"state": "pending", "attempts": 0, "last_error": None, "delivered_at": None}
            )
            if job.callback
            else None
        )
        return await self._create(submission, request, job.api, callback, trace_id)

    # ---- restart, stop, status ---------------------------------------------------------------

    async def resume(self, unfinished: list[JobRecord]) -> dict[str, int]:
        """Take up what the last run of this process left (embedded queues; shared ones keep
        their entries): queue again what waited or ran; fail sync jobs whose requests died with
        the process."""
        counts: Counter[str] = Counter()
        for job in unfinished:
            if job.mode == "sync":
                failed = (
                    job.advance(JobStatus.RUNNING) if job.status is JobStatus.QUEUED else job
                ).advance(
                    JobStatus.FAILED,
                    error=JobError(
                        code="interrupted", message="the bridge stopped while this sync job ran"
                    ),
                )
                await self._store.save(failed)
                counts["sync_failed"] += 1
                continue
            if job.status is JobStatus.RUNNING:
                interrupted = await self._interrupted(job)
                if interrupted is None:
                    counts["dead"] += 1
                    continue
                job = interrupted
                counts["rerun"] += 1
            else:
                counts["queued"] += 1
            delay = max((job.retry_at or 0) - time.time(), 0.0)
            entry = Entry(job.job_id, job.priority)
            if delay:
                self._queue_of(job).later(entry, delay)
            else:
                self._queue_of(job).put(entry, force=True)
        await self._store.flush()
        if counts:
            log.info("resumed background jobs: %s", dict(counts))
        return dict(counts)

    async def _interrupted(self, job: JobRecord) -> JobRecord | None:
        """A job whose run was cut short (its process stopped): queued again, or after
        MAX_INTERRUPTIONS failed as a dead letter (None)."""
        job = job.model_copy(update={"interruptions": job.interruptions + 1})
        if job.interruptions >= MAX_INTERRUPTIONS:
            await self._dead_job(job)
            return None
        job = job.advance(JobStatus.QUEUED)
        await self._store.save(job)
        return job

    async def _dead_job(self, job: JobRecord) -> None:
        error = Internal(
            f"the bridge stopped {job.interruptions} times while this job ran; kept as a dead "
            "letter (replay it from /admin/dead-letters)"
        )
        self._deliverer.record(
            Delivery(
                id=f"job_{job.job_id}",
                kind="job",
                state="dead",
                url="",
                job_id=job.job_id,
                workflow_id=job.workflow_id,
                trace_id=job.trace_id,
                last_error=error.message,
                dead_at=time.time(),
            )
        )
        await self._finish(job, JobStatus.FAILED, error=error)

    async def stop(self, bound_s: float) -> None:
        """Stop taking jobs; give running ones `bound_s` to finish. The others are handed back
        to a shared queue for another instance to run now, or stay recorded as running and run
        again at the next start."""
        self._stopping = True
        running = list(self._running.values())
        if running:
            log.info("waiting up to %.0f s for %d running job(s)", bound_s, len(running))
            await asyncio.wait([r.task for r in running], timeout=bound_s)
        await stop_tasks([*self._workers, *(r.task for r in running)])
        self._workers.clear()
        handed = 0
        for run in running:
            if run.task.cancelled():
                handed += await self._hand_back(run.entry, run.queue)
        for queue in self.queues.values():
            for entry in queue.unstarted():
                handed += queue.release(entry)
        if handed:
            log.info("handed %d unfinished job(s) back to the shared queues", handed)

    async def _hand_back(self, entry: Entry, queue: JobQueue) -> bool:
        """A run cut short by the stop: queued again, for another instance to run now (with
        the release, in one batch), or failed if its runs keep being cut."""
        job = await self._store.get(entry.job_id)
        if job is None or job.status is not JobStatus.RUNNING or not queue.release(entry):
            return False
        await self._interrupted(job)
        return True

    @property
    def in_flight(self) -> int:
        return len(self._running)

    @property
    def queued(self) -> int:
        return sum(queue.depth for queue in self.queues.values())

    def status(self) -> dict[str, Any]:
        in_flight = Counter(run.queue.name for run in self._running.values())
        return {
            name: {
                "depth": queue.depth,
                "max_depth": queue.max_depth,
                "in_flight": in_flight[name],
                "concurrency": self.configs[name].concurrency,
                "oldest_wait_s": round(queue.oldest_wait_s(), 3),
                "recent_wait_s": round(self._recent[name].get("wait_s", 0.0), 3),
                "recent_run_s": round(self._recent[name].get("run_s", 0.0), 3),
                "overflow_to": self.configs[name].overflow_to,
            }
            for name, queue in self.queues.items()
        }

    async def _monitor(self) -> None:
        while True:
            self._drop_stale_decoded(time.time() - DECODED_KEEP_S)
            for queue in self.queues.values():
                try:
                    await queue.refresh()
                except Exception as exc:  # a shared queue's backend is down: keep the last
                    log.debug("queue %r not refreshed: %s", queue.name, exc)
            self.check_thresholds()
            await asyncio.sleep(MONITOR_INTERVAL_S)

    def check_thresholds(self) -> None:
        """Update the queue gauges; publish `queue.threshold` when a queue crosses its depth or
        wait limit, and again when it is back under (with a margin, so it does not flap)."""
        in_flight = Counter(run.queue.name for run in self._running.values())
        for name, queue in self.queues.items():
            config = self.configs[name]
            depth, wait = queue.depth, queue.oldest_wait_s()
            self._metrics.queue_depth.labels(name).set(depth)
            self._metrics.queue_in_flight.labels(name).set(in_flight[name])
            self._metrics.queue_oldest_wait.labels(name).set(wait)
            above = depth >= config.depth_threshold or wait >= config.wait_alert_s
            below = depth < config.depth_threshold * 0.9 and wait < config.wait_alert_s * 0.9
            alerting = self._alerting.get(name, False)
            if (above and not alerting) or (below and alerting):
                self._alerting[name] = above
                self._bus.publish(
                    "queue.threshold",
                    data={
                        "queue": name,
                        "state": "above" if above else "below",
                        "depth": depth,
                        "depth_threshold": config.depth_threshold,
                        "oldest_wait_s": round(wait, 3),
                        "wait_threshold_s": config.wait_alert_s,
                    },
                )
                log.log(
                    logging.WARNING if above else logging.INFO,
                    "queue %r %s its threshold (depth %d, oldest wait %.1f s)",
                    name,
                    "passed" if above else "is back under",
                    depth,
                    wait,
                )
