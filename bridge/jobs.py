"""The job record and its state machine.

    queued ──► running ──► completed
       │          ├──────► failed
       └──────────┴──────► cancelled

A sync job is created `running` and finishes within its request; it is recorded all the same, so
its status can be looked up like any other job's until the retention time passes.
"""

from __future__ import annotations

import time
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_STORED_ERRORS = 100


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in FINISHED


FINISHED = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})
TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING, JobStatus.CANCELLED}),
    JobStatus.RUNNING: frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED}),
    JobStatus.COMPLETED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELLED: frozenset(),
}


class IllegalTransition(Exception):
    pass


class ItemErrorModel(BaseModel):
    index: int = Field(description="position of the input item in the request")
    code: str
    message: str


class JobError(BaseModel):
    """Why a whole job failed (per-item problems are in `errors`)."""

    code: str
    message: str
    retryable: bool = False


class JobRecord(BaseModel):
    """One job, as stored and as `GET /api/v1/workflow/status/{job_id}` shows it."""

    model_config = ConfigDict(extra="forbid")

    job_id: str
    status: JobStatus
    mode: Literal["sync", "async"]
    processing_type: str
    workflow_id: str | None = None
    execution_id: str | None = None
    node: str | None = None
    priority: int = 5
    attempts: int = 0
    trace_id: str | None = None
    created_at: float = Field(description="Unix time, seconds")
    started_at: float | None = None
    finished_at: float | None = None
    duration_ms: float | None = None
    item_count: int = 0
    output_count: int | None = None
    error_count: int = 0
    errors: list[ItemErrorModel] = Field(
        default_factory=list, description=f"per-item errors, the first {MAX_STORED_ERRORS}"
    )
    error: JobError | None = None

    def advance(self, status: JobStatus, **changes: Any) -> JobRecord:
        """The record in its next state; an illegal move raises `IllegalTransition`."""
        if status not in TRANSITIONS[self.status]:
            raise IllegalTransition(f"job {self.job_id}: {self.status} → {status} is not allowed")
        now = time.time()
        update: dict[str, Any] = {"status": status, **changes}
        if status == JobStatus.RUNNING:
            update.setdefault("started_at", now)
            update["attempts"] = self.attempts + 1
        if status.finished:
            update.setdefault("finished_at", now)
            started = update.get("started_at", self.started_at)
            if started is not None:
                update.setdefault("duration_ms", round((update["finished_at"] - started) * 1000, 3))
        return self.model_copy(update=update)
