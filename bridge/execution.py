"""Executing a request: check it, run the processor, record the job, count it.

All checks happen before a job exists, so bad input changes nothing; a job that starts is recorded
whatever its outcome.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bridge.errors import BridgeError, Internal, PayloadTooLarge
from bridge.ids import new_id
from bridge.items import Item, ItemError
from bridge.jobs import (
    MAX_STORED_ERRORS,
    ItemErrorModel,
    JobError,
    JobRecord,
    JobStatus,
)
from bridge.logs import job_id_var, workflow_id_var
from bridge.metrics import Metrics
from bridge.processors.registry import Context, ProcessorSpec, Registry
from bridge.runner import Runner
from bridge.services import Services
from bridge.settings import Settings
from bridge.stores.base import JobStore

RUNNING_RECORD_AFTER_S = 1.0
# Body bytes per item and per binary allowed at most (see check_item_count).
ITEM_BYTES = 64
BINARY_BYTES = 256


@dataclass(frozen=True, slots=True)
class Submission:
    """A checked request: the processor, decoded items, validated parameters and the ids."""

    spec: ProcessorSpec
    items: list[Item]
    params: Any
    workflow_id: str | None
    execution_id: str | None
    node: str | None
    priority: int
    timeout_s: float | None
    idempotency_key: str | None = None


@dataclass(frozen=True, slots=True)
class SyncResult:
    job: JobRecord
    outputs: list[tuple[int, Item]]  # (input index, output item)
    errors: list[ItemError]


class Execution:
    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        runner: Runner,
        store: JobStore,
        metrics: Metrics,
        services: Services,
    ) -> None:
        self._settings = settings
        self._registry = registry
        self._runner = runner
        self._store = store
        self._metrics = metrics
        self._services = services

    def check_item_count(self, count: int, binaries: int = 0) -> None:
        """BRIDGE_MAX_ITEMS, one item per ITEM_BYTES and one binary per BINARY_BYTES of
        BRIDGE_MAX_BODY_BYTES: each item costs ~1 kB and each binary ~0.7 kB on its way
        through, however little of the body they took."""
        settings = self._settings
        if count > settings.max_items:
            raise PayloadTooLarge(
                f"{count} items is more than BRIDGE_MAX_ITEMS ({settings.max_items})",
                description="send the items in smaller batches (the node's batch size)",
            )
        for what, number, size in (
            ("items", count, ITEM_BYTES),
            ("binaries", binaries, BINARY_BYTES),
        ):
            if number > settings.max_body_bytes // size:
                raise PayloadTooLarge(
                    f"{number} {what} is more than one per {size} bytes of "
                    f"BRIDGE_MAX_BODY_BYTES ({settings.max_body_bytes})",
                    description="send the items in smaller batches (the node's batch size)",
                )

    def spec(self, processing_type: str) -> ProcessorSpec:
        return self._registry.get(processing_type)

    async def run_sync(self, submission: Submission, trace_id: str) -> SyncResult:
        spec = submission.spec
        now = time.time()
        job = JobRecord(
            job_id=new_id(),
            status=JobStatus.RUNNING,
            mode="sync",
            processing_type=spec.name,
            workflow_id=submission.workflow_id,
            execution_id=submission.execution_id,
            node=submission.node,
            priority=submission.priority,
            attempts=1,
            trace_id=trace_id,
            created_at=now,
            started_at=now,
            item_count=len(submission.items),
            idempotency_key=submission.idempotency_key,
        )
        job_id_var.set(job.job_id)
        workflow_id_var.set(job.workflow_id)
        show_running = _ShowRunning(self._store, job)
        ctx = Context.for_job(job, self._settings, self._services)
        timeout_s = self._runner.timeout_for(spec, submission.timeout_s, "sync")
        started = time.perf_counter()
        try:
            outcomes = await self._runner.run(
                spec, submission.items, submission.params, ctx, timeout_s
            )
        except BaseException as exc:
            show_running.stop()
            error = (
                exc if isinstance(exc, BridgeError) else Internal(f"processor run ended: {exc!r}")
            )
            failed = job.advance(
                JobStatus.FAILED,
                error=JobError(code=error.code, message=error.message, retryable=error.retryable),
            )
            # Record the failure even when the request itself is being cancelled.
            await asyncio.shield(self._store.save(failed))
            self._count(spec.name, failed, time.perf_counter() - started, 0, len(submission.items))
            if isinstance(exc, BridgeError):
                exc.headers["X-Job-ID"] = job.job_id
                if exc.details is None or isinstance(exc.details, dict):
                    exc.details = {**(exc.details or {}), "job_id": job.job_id}
            raise
        show_running.stop()
        outputs, errors = split_outcomes(outcomes)
        done = job.advance(
            JobStatus.COMPLETED,
            output_count=len(outputs),
            error_count=len(errors),
            errors=[ItemErrorModel(**e.to_dict()) for e in errors[:MAX_STORED_ERRORS]],
        )
        await self._store.save(done)
        self._count(
            spec.name,
            done,
            time.perf_counter() - started,
            len(submission.items) - len(errors),
            len(errors),
        )
        return SyncResult(done, outputs, errors)

    def _count(self, name: str, job: JobRecord, seconds: float, ok: int, failed: int) -> None:
        self._metrics.observe_job(name, job.mode, job.status.value, seconds, ok, failed)


class _ShowRunning:
    """Most sync jobs end within milliseconds and are recorded once, finished. One still running
    after RUNNING_RECORD_AFTER_S is also recorded as running, so its status shows while the
    request waits — unless it has finished by the time that save runs."""

    def __init__(self, store: JobStore, job: JobRecord) -> None:
        self._store = store
        self._job = job
        self._stopped = False
        self._task: asyncio.Task[None] | None = None
        self._timer = asyncio.get_running_loop().call_later(RUNNING_RECORD_AFTER_S, self._fire)

    def _fire(self) -> None:
        self._task = asyncio.create_task(self._save())

    async def _save(self) -> None:
        if not self._stopped:  # a finished record must never be overwritten by this one
            await self._store.save(self._job)

    def stop(self) -> None:
        self._stopped = True
        self._timer.cancel()


def split_outcomes(
    outcomes: Sequence[list[Item] | ItemError],
) -> tuple[list[tuple[int, Item]], list[ItemError]]:
    outputs: list[tuple[int, Item]] = []
    errors: list[ItemError] = []
    for index, outcome in enumerate(outcomes):
        if isinstance(outcome, ItemError):
            errors.append(outcome)
        else:
            for item in outcome:
                outputs.append((index, item))
    return outputs, errors
