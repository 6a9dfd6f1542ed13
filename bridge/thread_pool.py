"""A thread pool whose capacity survives calls that never end.

A Python thread cannot be stopped from outside: a processor that loops past its deadline keeps its
thread, and a fixed pool would lose one thread of capacity per runaway call until it answered
nothing at all. So a caller that stops waiting for a call (its deadline passed) may *abandon* it:
if the call is still running, its thread no longer counts against the pool's size, a new thread
takes its place, and the old one ends when its call returns. At most `max_abandoned` threads are
abandoned at once (each may be burning CPU); past that bound a runaway call keeps its place and
the pool runs with one thread fewer until the call ends.

`abandon` answers what became of the call:
- "cancelled": it was still waiting for a thread, and will not run;
- "ended": it had already ended;
- "abandoned": it runs on, replaced in the pool;
- "kept": it runs on in its place, `max_abandoned` threads being abandoned already.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Literal

log = logging.getLogger(__name__)

Abandoned = Literal["cancelled", "ended", "abandoned", "kept"]


@dataclass(eq=False, slots=True)
class _Call:
    future: Future[Any]
    run: Callable[[], Any]
    label: str
    started: float = 0.0
    abandoned: bool = False
    thread: threading.Thread | None = field(default=None, repr=False)


class ThreadPool:
    def __init__(self, size: int, max_abandoned: int, name: str = "processor") -> None:
        self.size = size
        self.max_abandoned = max_abandoned
        self._name = name
        self._queue: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: set[threading.Thread] = set()  # those counted against `size`
        self._idle = 0
        self._waiting = 0  # calls queued, not yet taken by a thread
        self._running: dict[Future[Any], _Call] = {}
        self._abandoned = 0
        self._started = 0
        self._closed = False

    def run(self, call: Callable[[], Any], label: str) -> Future[Any]:
        """Run `call` on a pool thread; `label` names it in the log if it is abandoned."""
        future: Future[Any] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the thread pool is shut down")
            self._waiting += 1
            self._queue.put(_Call(future, call, label))
            self._grow()
        return future

    def abandon(self, future: Future[Any]) -> Abandoned:
        """Stop counting `future`'s call against the pool if it is still running (see the
        module's docstring)."""
        with self._lock:
            call = self._running.get(future)
            if call is None:
                return "cancelled" if future.cancel() else "ended"
            if call.abandoned:
                return "abandoned"
            if self._abandoned >= self.max_abandoned:
                return "kept"
            call.abandoned = True
            self._abandoned += 1
            if call.thread is not None:
                self._threads.discard(call.thread)
            self._grow()
            return "abandoned"

    @property
    def abandoned(self) -> int:
        """Abandoned threads whose call is still running."""
        return self._abandoned

    def status(self) -> dict[str, int]:
        with self._lock:
            return {
                "workers": self.size,
                "busy": len(self._running) - self._abandoned,
                "queued": self._waiting,
                "abandoned": self._abandoned,
                "max_abandoned": self.max_abandoned,
            }

    def close(self) -> None:
        """Cancel the queued calls and let each thread end after its call."""
        with self._lock:
            self._closed = True
            while True:
                try:
                    call = self._queue.get_nowait()
                except queue.Empty:
                    break
                if call is not None:
                    self._waiting -= 1
                    call.future.cancel()
            for _ in self._threads:
                self._queue.put(None)

    def _grow(self) -> None:
        """Start a thread if a queued call has none to take it (called holding the lock)."""
        if self._closed or self._waiting <= self._idle or len(self._threads) >= self.size:
            return
        self._started += 1
        # Daemon threads: the process need not wait at exit for a call that never ends.
        thread = threading.Thread(
            target=self._work, name=f"{self._name}_{self._started}", daemon=True
        )
        self._threads.add(thread)
        thread.start()

    def _work(self) -> None:
        me = threading.current_thread()
        while True:
            with self._lock:
                self._idle += 1
            call = self._queue.get()
            with self._lock:
                self._idle -= 1
                if call is None:  # shut down
                    self._threads.discard(me)
                    return
                self._waiting -= 1
                if not call.future.set_running_or_notify_cancel():
                    del call  # its caller stopped waiting before it started
                    continue
                call.started = time.monotonic()
                call.thread = me
                self._running[call.future] = call
            _settle(call)
            with self._lock:
                del self._running[call.future]
                if call.abandoned:
                    self._abandoned -= 1
            if call.abandoned:  # another thread has its place
                log.warning(
                    "abandoned call %s ended after %.1f s",
                    call.label,
                    time.monotonic() - call.started,
                    extra={"abandoned": self._abandoned},
                )
                return
            # Not kept while this thread waits for the next call: the call holds its arguments
            # (a whole batch of items), whose memory the next request would otherwise find
            # still taken, and whose freeing it would then wait for.
            del call


def _settle(call: _Call) -> None:
    """Run `call` and give its future the outcome (no reference to the result stays here)."""
    try:
        result = call.run()
    except BaseException as exc:
        call.future.set_exception(exc)
    else:
        call.future.set_result(result)
