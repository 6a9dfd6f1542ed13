"""The event bus: typed events, persisted in an ordered log, fanned out to in-process listeners.

`publish` appends the event to the log (ids increase): it is written with the next group commit,
together with whatever the publisher saves next — so a job's event is committed with the step that
lets the job's next step run, and comes before that step's event. Once written, the log hands the
event to the bus (`deliver`, in id order), which puts it in every listener's bounded buffer without
waiting: a slow listener never slows a publisher. Nobody sees an event that was not committed, and
an event withdrawn before its commit (its job was refused) is never seen. An event is encoded once
as a Server-Sent Events frame, and every listener holds that same frame. The embedded log gives
the event its id at once; the shared (Redis) log gives it one when it is written, and every
instance gets every event — whichever instance published it — from the log; the hooks run only
where the event was published. A listener's buffer is bounded by events
(LISTENER_BUFFER) and by bytes; one that would go past either has fallen behind: the bus lets
it go at once (its buffer emptied, the events counted in `bridge_events_dropped_total`) and tells
it, so a Server-Sent Events stream ends and its client resumes from the log with `Last-Event-ID` —
nothing is lost to a client that reconnects.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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
LISTENER_BYTES = 1024 * 1024  # BRIDGE_SSE_BUFFER_BYTES's default


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

    async def newest_id(self) -> int:
        """The id of the newest event committed, by any instance."""

    def append(self, type: EventType, fields: dict[str, Any]) -> str:
        """Record the event, written with the next group commit; a key that `withdraw` takes."""

    def withdraw(self, key: str) -> None:
        """Take back an appended event that has not been committed yet."""

    def start(self, deliver: Callable[[Event, bool], None], wanted: Callable[[bool], bool]) -> None:
        """From now on, hand every committed event to `deliver(event, published_here)`, in id
        order — when `wanted(published_here)`."""

    async def since(
        self,
        after: int,
        *,
        types: Sequence[str] = (),
        workflow_id: str | None = None,
        limit: int = 500,
    ) -> list[Event]:
        """Events after id `after`, oldest first, filtered."""


def frame_of(event: Event) -> bytes:
    """The event as a Server-Sent Events frame."""
    return f"id: {event.id}\nevent: {event.type}\ndata: {event.model_dump_json()}\n\n".encode()


@dataclass(frozen=True, slots=True)
class Framed:
    """An event as a listener holds it: its id, and its frame (shared by every listener)."""

    id: int
    frame: bytes


class Listener:
    """One in-process consumer of events with a buffer bounded by events and by bytes. `ended`
    is set when it fell behind (it is let go, its buffer emptied, and `on_behind` is called) or
    the bridge is shutting down: it should stop listening."""

    def __init__(
        self,
        accepts: Callable[[Event], bool],
        size: int = LISTENER_BUFFER,
        max_bytes: int = LISTENER_BYTES,
    ) -> None:
        self.accepts = accepts
        self.queue: asyncio.Queue[Framed] = asyncio.Queue(size)
        self.max_bytes = max_bytes
        self.pending_bytes = 0
        self.ended = asyncio.Event()
        # A stream's writer may be stuck on a client that reads nothing: this cuts it off.
        self.on_behind: Callable[[], None] = lambda: None

    def offer(self, framed: Framed) -> bool:
        """Into the buffer; False when it would go past a bound."""
        if self.pending_bytes + len(framed.frame) > self.max_bytes or self.queue.full():
            return False
        self.queue.put_nowait(framed)
        self.pending_bytes += len(framed.frame)
        return True

    def fell_behind(self) -> int:
        """Empty the buffer (the client resumes from the log), end; how many were dropped."""
        dropped = self.queue.qsize()
        self.queue = asyncio.Queue(self.queue.maxsize)
        self.pending_bytes = 0
        self.ended.set()
        self.on_behind()
        return dropped

    def _taken(self, framed: Framed) -> Framed:
        self.pending_bytes -= len(framed.frame)
        return framed

    async def next(self, wait_s: float) -> Framed | None:
        """The next event; None when `wait_s` passed or the listener ended first."""
        if not self.queue.empty():
            return self._taken(self.queue.get_nowait())
        getting = asyncio.ensure_future(self.queue.get())
        ending = asyncio.ensure_future(self.ended.wait())
        done, _ = await asyncio.wait(
            {getting, ending}, timeout=wait_s, return_when=asyncio.FIRST_COMPLETED
        )
        ending.cancel()
        if getting in done:
            return self._taken(getting.result())
        getting.cancel()
        return None


class EventBus:
    def __init__(self, events: EventLog, metrics: Metrics) -> None:
        self._log = events
        self._metrics = metrics
        self._listeners: set[Listener] = set()
        self.hooks: list[Callable[[Event], None]] = []  # called for every event, in order
        self.hooks_wanted: Callable[[], bool] = lambda: bool(self.hooks)

    def publish(self, type: EventType, **fields: Any) -> str:
        """Into the log, with the next commit; a key for `withdraw`."""
        return self._log.append(type, {"at": time.time(), **fields})

    def withdraw(self, key: str) -> None:
        """Take back a published event before its commit: nobody will see it."""
        self._log.withdraw(key)

    def interested(self, published_here: bool) -> bool:
        """Whether an event would reach anyone: a listener, or (published here) a hook."""
        return bool(self._listeners) or (published_here and self.hooks_wanted())

    def deliver(self, event: Event, published_here: bool) -> None:
        """A recorded event, with its id: to the hooks (if published here) and the listeners."""
        if published_here:
            for hook in self.hooks:
                hook(event)
        framed: Framed | None = None
        for listener in tuple(self._listeners):
            if not listener.accepts(event):
                continue
            framed = framed or Framed(event.id, frame_of(event))
            if not listener.offer(framed):
                self._listeners.discard(listener)
                self._metrics.events_dropped.inc(listener.fell_behind() + 1)

    def listen(self, accepts: Callable[[Event], bool], max_bytes: int = LISTENER_BYTES) -> Listener:
        listener = Listener(accepts, max_bytes=max_bytes)
        self._listeners.add(listener)
        return listener

    @property
    def listeners(self) -> frozenset[Listener]:
        return frozenset(self._listeners)

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
        self,
        after: int,
        *,
        types: Sequence[str] = (),
        workflow_id: str | None = None,
        limit: int = 500,
    ) -> list[Event]:
        return await self._log.since(after, types=types, workflow_id=workflow_id, limit=limit)


def matches(types: Sequence[str], workflow_id: str | None) -> Callable[[Event], bool]:
    wanted = frozenset(types)

    def accepts(event: Event) -> bool:
        return (not wanted or event.type in wanted) and (
            workflow_id is None or event.workflow_id == workflow_id
        )

    return accepts
