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

    @property
    def depth(self) -> int: ...

    def oldest_wait_s(self) -> float: ...
