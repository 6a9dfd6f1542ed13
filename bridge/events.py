"""The event bus: typed events, persisted in an ordered log, fanned out to in-process listeners.

`publish` appends the event to the log (ids increase), and the bus hands it to every listener's
bounded buffer without waiting: a slow listener never slows a publisher. The embedded log gives the
event its id at once; the shared (Redis) log gives it one when it is written, and every instance
gets every event — whichever instance published it — from the log (`deliver`); the hooks run only
where the event was published. A listener whose buffer is full
loses the event from its buffer (counted in `bridge_events_dropped`) and is told it overflowed, so
a Server-Sent Events stream ends and its client resumes from the log with `Last-Event-ID` —
nothing is lost to a client that reconnects.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field

from bridge.metrics import Metrics

log = logging.getLogger(__name__)

EventType = Literal[
    "workflow.queued",
    "workflow.started",
    "workflow.completed",
    "workflow.failed",
    "workflow.cancelled",
    "callback.delivered",
    "callback.failed",
    "queue.threshold",
    "backend.down",
    "backend.up",
]
EVENT_TYPES: tuple[str, ...] = EventType.__args__  # type: ignore[attr-defined]
LISTENER_BUFFER = 1000


class Event(BaseModel):
    id: int = Field(description="position in the event log; Last-Event-ID resumes after it")
    type: EventType
    at: float = Field(description="Unix time, seconds")
    job_id: str | None = None
    workflow_id: str | None = None
    execution_id: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)


class EventLog(Protocol):
    @property
    def last_id(self) -> int: ...

    def append(self, type: EventType, fields: dict[str, Any]) -> Event | None:
        """Record the event (written with the next group commit); the event with its id, or
        None when the id comes later (the shared log delivers it then)."""

    async def since(
        self,
        after: int,
        *,
        types: Sequence[str] = (),
        workflow_id: str | None = None,
        limit: int = 500,
    ) -> list[Event]:
        """Events after id `after`, oldest first, filtered."""


class Listener:
    """One in-process consumer of events with a bounded buffer. `ended` is set when it fell
    behind (its buffer overflowed) or the bridge is shutting down: it should stop listening."""

    def __init__(self, accepts: Callable[[Event], bool], size: int = LISTENER_BUFFER) -> None:
        self.accepts = accepts
        self.queue: asyncio.Queue[Event] = asyncio.Queue(size)
        self.ended = asyncio.Event()

    async def next(self, wait_s: float) -> Event | None:
        """The next event; None when `wait_s` passed or the listener ended first."""
        if not self.queue.empty():
            return self.queue.get_nowait()
        getting = asyncio.ensure_future(self.queue.get())
        ending = asyncio.ensure_future(self.ended.wait())
        done, _ = await asyncio.wait(
            {getting, ending}, timeout=wait_s, return_when=asyncio.FIRST_COMPLETED
        )
        ending.cancel()
        if getting in done:
            return getting.result()
        getting.cancel()
        return None


class EventBus:
    def __init__(self, events: EventLog, metrics: Metrics) -> None:
        self._log = events
        self._metrics = metrics
        self._listeners: set[Listener] = set()
        self.hooks: list[Callable[[Event], None]] = []  # called for every event, in order
        self.hooks_wanted: Callable[[], bool] = lambda: bool(self.hooks)

    def publish(self, type: EventType, **fields: Any) -> None:
        event = self._log.append(type, {"at": time.time(), **fields})
        if event is not None:
            self.deliver(event, published_here=True)

    def interested(self, published_here: bool) -> bool:
        """Whether an event would reach anyone: a listener, or (published here) a hook."""
        return bool(self._listeners) or (published_here and self.hooks_wanted())

    def deliver(self, event: Event, published_here: bool) -> None:
        """A recorded event, with its id: to the hooks (if published here) and the listeners."""
        if published_here:
            for hook in self.hooks:
                hook(event)
        for listener in tuple(self._listeners):
            if not listener.accepts(event):
                continue
            try:
                listener.queue.put_nowait(event)
            except asyncio.QueueFull:
                self._metrics.events_dropped.inc()
                listener.ended.set()

    def listen(self, accepts: Callable[[Event], bool]) -> Listener:
        listener = Listener(accepts)
        self._listeners.add(listener)
        return listener

    @property
    def last_id(self) -> int:
        return self._log.last_id

    def close(self) -> None:
        """Shutting down: every listener ends (SSE clients resume elsewhere from the log)."""
        for listener in self._listeners:
            listener.ended.set()

    def forget(self, listener: Listener) -> None:
        self._listeners.discard(listener)

    async def since(
        self, after: int, *, types: Sequence[str] = (), workflow_id: str | None = None
    ) -> list[Event]:
        return await self._log.since(after, types=types, workflow_id=workflow_id)


def matches(types: Sequence[str], workflow_id: str | None) -> Callable[[Event], bool]:
    wanted = frozenset(types)

    def accepts(event: Event) -> bool:
        return (not wanted or event.type in wanted) and (
            workflow_id is None or event.workflow_id == workflow_id
        )

    return accepts
