"""What the daemon needs of a job store, whatever keeps the data."""

from __future__ import annotations

from typing import Protocol

from bridge.jobs import JobRecord


class JobStore(Protocol):
    async def save(self, job: JobRecord, *, durable: bool = False) -> None:
        """Record the job's latest state. With `durable`, return only once it is on disk;
        without, the write may be batched with others (a crash can cost the last moments)."""

    async def get(self, job_id: str) -> JobRecord | None: ...

    async def list_for_workflow(
        self, workflow_id: str, *, limit: int, cursor: str | None = None
    ) -> tuple[list[JobRecord], str | None]:
        """Jobs of a workflow, newest first, and the cursor of the next page (None: last page).
        A cursor that this store did not hand out raises ValueError."""

    async def purge_expired(self, now: float) -> int:
        """Delete finished jobs past their retention; returns how many went."""

    async def ping(self) -> None:
        """Raise if the store cannot serve requests."""
