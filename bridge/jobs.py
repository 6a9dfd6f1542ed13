"""The job record and its state machine.

    queued ──► running ──► completed
       ▲ │        ├──────► failed
       │ └────────┴──────► cancelled
       └── running (a retryable failure waits for its next attempt; an interrupted run is
                    queued again at start-up)

A sync job is created `running` and finishes within its request; it is recorded all the same, so
its status can be looked up like any other job's until the retention time passes. A background
(`async`) job is created `queued`, durably, before its submission is answered.
"""

from __future__ import annotations

import time
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from bridge.redact import redact_url
from bridge.webhooks import WaitReason

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
    JobStatus.RUNNING: frozenset(
        {JobStatus.QUEUED, JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED}
    ),
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


CallbackState = Literal["none", "pending", "delivered", "failed"]


MAX_CALLBACK_HISTORY = 20


class CallbackAttempt(BaseModel):
    """One attempt to deliver a job's callback, as the job's page shows it."""

    attempt: int = Field(description="its number, from 1 (again from 1 after a replay)")
    at: float = Field(description="when its outcome was known (Unix time)")
    outcome: Literal["delivered", "failed"]
    error: str | None = Field(None, description="why it failed (URLs redacted)")


class Callback(BaseModel):
    """Where a background job's outcome goes, and how far its delivery got."""

    url: str
    method: Literal["POST", "GET", "PUT", "PATCH"] = "POST"
    state: CallbackState = "pending"
    attempts: int = 0
    last_error: str | None = None
    next_attempt_at: float | None = Field(
        None,
        description="while a failed attempt waits to be retried: when the next one is due "
        "(Unix time; earlier only if it waits for the host's breaker and the host recovers)",
    )
    waiting_for: WaitReason | None = Field(
        None,
        description="why it waits: its back-off, the target's Retry-After, or the "
        "host's circuit breaker being open",
    )
    delivered_at: float | None = None
    history: list[CallbackAttempt] = Field(
        default_factory=list,
        description=f"each attempt with its outcome, the last {MAX_CALLBACK_HISTORY}",
    )

    def with_attempt(self, attempt: int, outcome: str, error: str | None) -> list[CallbackAttempt]:
        """The history with one more attempt, the oldest dropped past MAX_CALLBACK_HISTORY."""
        entry = CallbackAttempt(attempt=attempt, at=time.time(), outcome=outcome, error=error)
        return [*self.history, entry][-MAX_CALLBACK_HISTORY:]


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
    queue: str | None = Field(None, description="background jobs: the queue it was routed to")
    idempotency_key: str | None = None
    attempts: int = 0
    max_attempts: int = 1
    interruptions: int = Field(0, description="runs cut short by a stop or crash of the bridge")
    timeout_s: float | None = None
    api: Literal["items", "data"] = Field(
        "items", description="the request's shape: n8n items (execute) or records (hybrid)"
    )
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
    callback: Callback | None = None
    reported: dict[str, Any] | None = Field(
        None, description="what n8n reported of the workflow this job started (callbacks API)"
    )
    retry_at: float | None = Field(None, description="a retry waits until then (Unix time)")

    def shown(self) -> dict[str, Any]:
        """The record as the API shows it: the callback URL redacted (a resume URL's query is
        a capability); the stored record keeps it whole for the delivery."""
        answer = self.model_dump(mode="json")
        if self.callback is not None:
            answer["callback"]["url"] = redact_url(self.callback.url)
        return answer

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
            update.setdefault("retry_at", None)  # a job cancelled while it waited: none comes
            started = update.get("started_at", self.started_at)
            if started is not None:
                update.setdefault("duration_ms", round((update["finished_at"] - started) * 1000, 3))
        return self.model_copy(update=update)
