"""Group commit, whatever the backend: writes wait in memory and go out together.

Stores put objects (`put`) or removals (`remove`) under a kind and key into a pending map that a
writer task hands to the backend's `write_batch` in one transaction: at once when a caller needs
durability (`flush` waits for that commit, and every write that came before rides along),
otherwise within FLUSH_INTERVAL_S. An object stays readable from memory (`pending`) until it is
written, so what was saved is visible the moment it was saved. A batch that fails is kept and
tried again (newer writes of the same key win); `withdraw` takes back a write whose caller gave
up on it (a background job answered with 503 must not be accepted later). Once a batch is
committed, each of `committed` is called with it, batch after batch in the order of the writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from bridge.aio import backoff_s, stop_tasks

log = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 0.05
MAX_BATCH = 2000
MAX_RETRY_WAIT_S = 2.0

REMOVED = object()  # a pending removal
Batch = dict[str, dict[str, Any]]  # kind → key → object (or REMOVED)


class GroupCommit:
    def __init__(self, kinds: Iterable[str], write_batch: Callable[[Batch], Awaitable[None]]):
        self._kinds = tuple(kinds)
        self._write_batch = write_batch
        self._pending: Batch = self._empty()
        self._in_flight: Batch = self._empty()
        self._count = 0
        self._waiters: list[asyncio.Future[None]] = []
        self._has_work = asyncio.Event()  # something is pending
        self._urgent = asyncio.Event()  # someone waits for a commit, or the batch is full
        self._writer: asyncio.Task[None] | None = None
        self.failing: Exception | None = None  # why the last batch failed, until one succeeds
        self.committed: list[Callable[[Batch], None]] = []

    def _empty(self) -> Batch:
        return {kind: {} for kind in self._kinds}

    def start(self, name: str) -> None:
        self._writer = asyncio.create_task(self._write_loop(), name=name)

    @property
    def running(self) -> bool:
        return self._writer is not None and not self._writer.done()

    async def stop(self) -> None:
        """Write what is pending (when the backend takes it), then stop the writer."""
        if self._writer is None:
            return
        if self.running and self.failing is None:
            await self.flush()
        unwritten = sum(len(objs) for objs in (*self._pending.values(), *self._in_flight.values()))
        if unwritten:
            log.error(
                "stopping with %d write(s) not committed (%s); they are lost — jobs they "
                "concern run again or show their last committed state",
                unwritten,
                self.failing,
            )
        await stop_tasks([self._writer])
        self._writer = None

    def put(self, kind: str, key: str, obj: Any) -> None:
        self._pending[kind][key] = obj
        self._queued()

    def remove(self, kind: str, key: str) -> None:
        self._pending[kind][key] = REMOVED
        self._queued()

    def withdraw(self, kind: str, key: str) -> None:
        """Forget a write that has not gone out yet."""
        self._pending[kind].pop(key, None)

    def _queued(self) -> None:
        self._count += 1
        self._has_work.set()
        if self._count >= MAX_BATCH:
            self._urgent.set()

    def pending(self, kind: str, key: str) -> tuple[bool, Any]:
        """(True, obj) when a write of `key` is not committed yet (obj None: a removal)."""
        for layer in (self._pending[kind], self._in_flight[kind]):
            if key in layer:
                obj = layer[key]
                return True, None if obj is REMOVED else obj
        return False, None

    def pending_items(self, kind: str) -> list[tuple[str, Any]]:
        """Every write of `kind` not committed yet, newest last (removals as None)."""
        merged = {**self._in_flight[kind], **self._pending[kind]}
        return [(key, None if obj is REMOVED else obj) for key, obj in merged.items()]

    async def flush(self) -> None:
        """Return once everything written so far is committed; raise if the commit failed."""
        if not self.running:
            raise RuntimeError("the writer is not running")
        if not any(self._pending.values()) and not any(self._in_flight.values()):
            return  # nothing to wait for: no empty transaction on every read that flushes
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._has_work.set()
        self._urgent.set()
        await waiter

    async def _write_loop(self) -> None:
        failures = 0
        while True:
            await self._has_work.wait()
            if not self._urgent.is_set():  # gather more writes for a moment
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._urgent.wait(), FLUSH_INTERVAL_S)
            self._has_work.clear()
            self._urgent.clear()
            batch, self._pending = self._pending, self._empty()
            self._in_flight = batch
            self._count = 0
            waiters, self._waiters = self._waiters, []
            try:
                await self._write_batch(batch)
            except Exception as exc:
                if self.failing is None:
                    log.error("write failed, will retry: %s", exc)
                self.failing = exc
                # Keep the writes for the next attempt; anything written since is newer.
                self._pending = {kind: {**batch[kind], **self._pending[kind]} for kind in batch}
                self._count = sum(len(rows) for rows in self._pending.values())
                self._in_flight = self._empty()
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_exception(exc)
                failures += 1
                await asyncio.sleep(backoff_s(failures, FLUSH_INTERVAL_S * 2, MAX_RETRY_WAIT_S))
                self._has_work.set()
            else:
                failures = 0
                if self.failing is not None:
                    log.info("writes go through again")
                self.failing = None
                self._in_flight = self._empty()
                for hook in self.committed:
                    try:
                        hook(batch)
                    except Exception:  # a hook's bug must not stop the writer
                        log.exception("after a commit")
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result(None)
