"""What the worker pool needs of a queue, whatever keeps it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

MAX_PRIORITY = 9


@dataclass(slots=True)
class Entry:
    """A job waiting in a queue; the job itself (items, parameters) stays in the job store."""

    job_id: str
    priority: int
    enqueued_at: float = field(default_factory=time.monotonic)
    ref: str | None = None  # the backend's handle (a Redis stream entry's id)
    deliveries: int = 1  # how many times it was handed out; more than 1: its last run was cut
    cancel_requested: bool = False  # its job was asked to cancel before it was handed out


class QueueFull(Exception):
    def __init__(self, queue: str, depth: int) -> None:
        super().__init__(f"queue {queue!r} is full ({depth} jobs waiting)")
        self.queue = queue
        self.depth = depth


class JobQueue(Protocol):
    name: str
    max_depth: int

    def put(self, entry: Entry, *, force: bool = False) -> None:
        """Add a job; `QueueFull` past max_depth unless `force` (a job already accepted, such
        as a retry or one taken up again at start-up, is never refused)."""

    async def get(self) -> Entry:
        """The next job: highest priority first, FIFO within a priority, waiting time raising
        a job's priority so none starves."""

    def ack(self, entry: Entry) -> None:
        """The job of an entry from `get` is settled (its outcome, or its retry, is saved)."""

    def abandon(self, entry: Entry) -> None:
        """An entry from `get` whose job could not be settled (the store failed): a shared
        queue stops renewing it, so another instance takes it over after the claim idle time;
        an in-process queue's job is taken up at the next start."""

    def later(self, entry: Entry, delay_s: float) -> None:
        """Add a job again after `delay_s` (a retry); never refused."""

    def release(self, entry: Entry) -> bool:
        """Give back an entry from `get` whose job was cut short by a stop, for another
        instance to run now; False when the backend keeps no queue beyond this process (the job
        is taken up again at the next start)."""

    async def withhold(self, job_id: str, priority: int) -> Entry | None:
        """A cancel of the job: its entry, if it waits in this queue (or for a retry), taken
        out of line and handed to the caller as if by `get`; None if it does not wait here. A
        shared queue also records the request, so that whichever instance holds the job or
        takes it from now on finds it (`cancel_requested`) and cancels it instead of running it."""

    async def cancel_requests(self, job_ids: list[str]) -> set[str]:
        """Which of these jobs, taken from this queue, another instance has been asked to
        cancel since (none for a queue that lives in this process)."""

    def unstarted(self) -> list[Entry]:
        """Entries this process took from a shared queue but has not started (a stop hands
        them back); none for a queue that lives in this process."""

    async def refresh(self) -> None:
        """Update `depth` and `oldest_wait_s` (a shared queue caches them)."""

    @property
    def depth(self) -> int: ...

    def oldest_wait_s(self) -> float: ...
