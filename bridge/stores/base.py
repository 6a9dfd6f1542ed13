"""What the daemon needs of a job store, whatever keeps the data."""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import orjson

from bridge.jobs import JobRecord, JobStatus
from bridge.workflow_limit import WorkflowLimit

Data = Literal["request", "result", "report"]


def with_report(job: JobRecord, report: bytes | None) -> JobRecord:
    """The job as callers see it: with the report kept beside it, if any."""
    return job if report is None else job.model_copy(update={"reported": orjson.loads(report)})


class JobStore(Protocol):
    async def save(
        self,
        job: JobRecord,
        *,
        durable: bool = False,
        request: bytes | None = None,
        result: bytes | None = None,
    ) -> None:
        """Record the job's latest state, and with it a background job's request or result.
        With `durable`, return only once it is on disk; without, the write may be batched with
        others (a crash can cost the last moments)."""

    async def flush(self) -> None:
        """Return once everything saved so far is on disk."""

    async def save_report(self, job_id: str, report: bytes) -> None:
        """Keep, durably, what n8n reported of the workflow the job started (JSON): beside the
        record, so a worker saving the job meanwhile cannot write it away."""

    async def get(self, job_id: str) -> JobRecord | None:
        """The job, with its report (`reported`) if n8n sent one."""

    async def get_data(self, job_id: str, which: Data) -> bytes | None:
        """A background job's request (as it came), result (`{"items", "errors"}` JSON) or
        report (what n8n reported, JSON)."""

    async def claim_idempotency_key(self, key: str, job_id: str) -> JobRecord | None:
        """Reserve a background job's idempotency key for `job_id`, which is saved next; the
        job accepted with this key before, if any (then nothing is reserved)."""

    async def release_idempotency_key(self, key: str, job_id: str) -> None:
        """Give up a reservation of `claim_idempotency_key` whose job was not accepted."""

    def withdraw(self, job: JobRecord) -> None:
        """Take back a new job's writes that have not been committed (its durable save failed
        and its caller was told so): it must not be accepted later behind the caller's back."""

    async def list_for_workflow(
        self,
        workflow_id: str,
        *,
        limit: int,
        cursor: str | None = None,
        execution_id: str | None = None,
    ) -> tuple[list[JobRecord], str | None]:
        """Jobs of a workflow (and execution), newest first, with their reports, and the cursor
        of the next page (None: last page). A cursor this store did not hand out: ValueError."""

    async def list_jobs(
        self, filters: JobFilter, *, limit: int, cursor: str | None = None
    ) -> tuple[list[JobRecord], str | None]:
        """Jobs of every workflow that pass `filters`, newest first (created_at, then job_id,
        descending), with their reports, and the cursor of the next page (None: last page).
        A page may hold fewer than `limit` jobs and still have a next cursor: a store may stop
        after a bounded amount of work (Redis: `redis_listing.SCAN_BUDGET` index entries).
        A cursor this store did not hand out: ValueError."""

    async def purge_expired(self, now: float) -> int:
        """Delete finished jobs past their retention; returns how many went."""

    async def ping(self) -> None:
        """Raise if the store cannot serve requests."""

    def unavailable(self) -> str | None:
        """Why writes cannot be committed right now (None: as far as is known, they can)."""


@dataclass(frozen=True, slots=True)
class JobFilter:
    """What `list_jobs` keeps; every field given must hold (None: any). `statuses`: any of
    them (empty: any); created_at in [since, until); `workflows`: only jobs whose workflow a
    limited credential reaches."""

    statuses: frozenset[JobStatus] = frozenset()
    processing_type: str | None = None
    queue: str | None = None
    workflow_id: str | None = None
    execution_id: str | None = None
    since: float | None = None
    until: float | None = None
    workflows: WorkflowLimit | None = None

    def wanted_statuses(self) -> frozenset[JobStatus]:
        """The statuses to keep; empty when every status is (no filter)."""
        return frozenset() if self.statuses >= set(JobStatus) else self.statuses

    def keeps(self, job: JobRecord) -> bool:
        """Whether `job` passes every filter: the one test both stores' answers must pass."""
        statuses = self.wanted_statuses()
        return (
            (not statuses or job.status in statuses)
            and self.processing_type in (None, job.processing_type)
            and self.queue in (None, job.queue)
            and self.workflow_id in (None, job.workflow_id)
            and self.execution_id in (None, job.execution_id)
            and (self.since is None or job.created_at >= self.since)
            and (self.until is None or job.created_at < self.until)
            and (self.workflows is None or self.workflows.allows(job.workflow_id))
        )


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    state: Literal["sending", "sent"]
    result: dict[str, Any] | None


class Ledger(Protocol):
    """Idempotency keys of side effects (e-mails sent): each is done at most once, across
    retries and restarts."""

    async def lookup(self, keys: Sequence[str]) -> dict[str, LedgerEntry]:
        """What the ledger knows of these keys (the unknown ones are left out); claims nothing."""

    async def claim(self, key: str) -> LedgerEntry | None:
        """Claim `key`, durably, before doing the side effect: None when this caller now owns it,
        else the entry already there ("sent" with its result, or "sending": started before and
        never settled — its outcome is unknown)."""

    async def settle(self, key: str, result: dict[str, Any]) -> None:
        """The side effect is done: record its result. It may be written a moment later (the
        claim already guards against doing it twice)."""

    async def release(self, key: str) -> None:
        """The side effect surely did not happen: forget the claim so a retry may do it."""


class Store(JobStore, Ledger, Protocol):
    """A backend keeps both: the embedded SQLite file, or Redis."""


_JOB_ID = re.compile("[0-9a-f]{32}").fullmatch
# A dead letter's id in a cursor (`cb_`/`job_` and a job id, `evt_<event id>_<subscription id>`):
# only its place among the letters made at the same time is read from it, so any id of this
# form is a place to start (a cursor is where a page starts, not a credential).
LETTER_KEY = re.compile("[0-9a-z_]{1,64}").fullmatch


def encode_cursor(created_at: float, key: str) -> str:
    """A page cursor: the last row's (created_at, key) — a job's id (`list_for_workflow`,
    `list_jobs`) or a dead letter's (`/admin/dead-letters`)."""
    return base64.urlsafe_b64encode(orjson.dumps([created_at, key])).decode().rstrip("=")


def decode_cursor(cursor: str, valid_key: Callable[[str], object] = _JOB_ID) -> tuple[float, str]:
    """The (created_at, key) of `encode_cursor`: a finite number and a key `valid_key` takes
    (a job id unless told), or ValueError."""
    try:
        created_at, key = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, TypeError, orjson.JSONDecodeError):
        created_at = key = None
    if (
        type(created_at) not in (int, float)
        or not math.isfinite(created_at)
        or not isinstance(key, str)
        or not valid_key(key)
    ):
        raise ValueError("not a cursor this API handed out")
    return float(created_at), key
