"""The queue router: rules map a background job to a named queue.

Rules (BRIDGE_ROUTES, a JSON list) are tried in order; the first whose every given condition holds
wins, and a job no rule takes goes to the queue named `default`. Queues (BRIDGE_QUEUES) have a
concurrency, a maximum depth and optionally an overflow queue that takes jobs while they are full.
A job that finds its queue (and the overflow) full is refused — 429 with Retry-After — never
accepted and dropped. With neither setting, one `default` queue serves everything.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, model_validator

from bridge.queues.base import JobQueue, QueueFull

DEFAULT_QUEUE = "default"


class QueueConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    concurrency: int = Field(4, ge=1, le=1000, description="jobs of this queue run at once")
    max_depth: int = Field(10_000, ge=1, description="jobs waiting; past it: 429")
    depth_alert: int | None = Field(
        None, ge=1, description="publish queue.threshold at this depth (default: 80 % of max)"
    )
    wait_alert_s: float = Field(60.0, gt=0, description="publish queue.threshold past this wait")
    overflow_to: str | None = Field(None, description="a queue that takes jobs while this is full")

    @property
    def depth_threshold(self) -> int:
        return self.depth_alert or max(1, self.max_depth * 8 // 10)


class RouteRule(BaseModel):
    """Conditions on a job; those left out always hold."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    queue: str
    processing_type: tuple[str, ...] | None = None
    workflow_id: tuple[str, ...] | None = None
    min_priority: int | None = Field(None, ge=0, le=9)
    max_priority: int | None = Field(None, ge=0, le=9)
    min_items: int | None = Field(None, ge=0)
    max_items: int | None = Field(None, ge=0)
    min_bytes: int | None = Field(None, ge=0, description="request body size")
    max_bytes: int | None = Field(None, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _one_or_many(cls, data: object) -> object:
        if isinstance(data, dict):
            for key in ("processing_type", "workflow_id"):
                if isinstance(data.get(key), str):
                    data = {**data, key: (data[key],)}
        return data

    def matches(self, job: JobTraits) -> bool:
        return (
            (self.processing_type is None or job.processing_type in self.processing_type)
            and (self.workflow_id is None or job.workflow_id in self.workflow_id)
            and _within(job.priority, self.min_priority, self.max_priority)
            and _within(job.item_count, self.min_items, self.max_items)
            and _within(job.size_bytes, self.min_bytes, self.max_bytes)
        )


def _within(value: int, low: int | None, high: int | None) -> bool:
    return (low is None or value >= low) and (high is None or value <= high)


@dataclass(frozen=True, slots=True)
class JobTraits:
    processing_type: str
    workflow_id: str | None
    priority: int
    item_count: int
    size_bytes: int


def check_config(queues: tuple[QueueConfig, ...], routes: tuple[RouteRule, ...]) -> None:
    """Raise ValueError naming the problem: unknown queue names, overflow cycles, duplicates."""
    names = [queue.name for queue in queues]
    if len(names) != len(set(names)):
        raise ValueError("queue names must be unique")
    known = set(names) | {DEFAULT_QUEUE}
    for rule in routes:
        if rule.queue not in known:
            raise ValueError(f"route to unknown queue {rule.queue!r} (queues: {sorted(known)})")
    overflow = {queue.name: queue.overflow_to for queue in queues if queue.overflow_to}
    for name, target in overflow.items():
        if target not in known:
            raise ValueError(f"queue {name!r} overflows to unknown queue {target!r}")
        seen = {name}
        step: str | None = target
        while step is not None:
            if step in seen:
                raise ValueError(f"queue {name!r}: overflow goes round in a circle")
            seen.add(step)
            step = overflow.get(step)


def with_default(queues: tuple[QueueConfig, ...]) -> tuple[QueueConfig, ...]:
    if any(queue.name == DEFAULT_QUEUE for queue in queues):
        return queues
    return (QueueConfig(name=DEFAULT_QUEUE), *queues)


class Router:
    def __init__(
        self,
        configs: tuple[QueueConfig, ...],
        routes: tuple[RouteRule, ...],
        queues: Mapping[str, JobQueue],
    ) -> None:
        self._configs = {config.name: config for config in configs}
        self._routes = routes
        self._queues = queues

    def queue_for(self, job: JobTraits) -> str:
        """The queue the rules choose, before any overflow."""
        return next((rule.queue for rule in self._routes if rule.matches(job)), DEFAULT_QUEUE)

    def admit(self, name: str, reserved: Callable[[str], int]) -> str:
        """The queue that takes a new job meant for `name`: it, or its overflow when it is full
        (counting `reserved(queue)` jobs being accepted right now). Raises QueueFull (of the
        first queue) when none has room."""
        first = name
        while True:
            queue = self._queues[name]
            if queue.depth + reserved(name) < queue.max_depth:
                return name
            overflow = self._configs[name].overflow_to
            if overflow is None:
                raise QueueFull(first, self._queues[first].depth)
            name = overflow
