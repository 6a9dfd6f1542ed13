"""The in-process queue: one FIFO per priority level, with aging.

A job's effective priority is its priority plus one level per `aging_s` seconds waited, so a
steady stream of high-priority jobs delays a low-priority one by at most (9 - p) * aging_s.
Taking a job compares only the heads of the ten FIFOs, each its level's oldest.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

from bridge.queues.base import MAX_PRIORITY, Entry, QueueFull


class MemoryQueue:
    def __init__(self, name: str, max_depth: int, aging_s: float) -> None:
        self.name = name
        self.max_depth = max_depth
        self._aging_s = aging_s
        self._levels: list[deque[Entry]] = [deque() for _ in range(MAX_PRIORITY + 1)]
        self._depth = 0
        self._ready = asyncio.Event()
        self._later: dict[str, tuple[asyncio.TimerHandle, Entry]] = {}  # retries, by job id

    @property
    def depth(self) -> int:
        return self._depth

    def put(self, entry: Entry, *, force: bool = False) -> None:
        if not force and self._depth >= self.max_depth:
            raise QueueFull(self.name, self._depth)
        self._levels[min(max(entry.priority, 0), MAX_PRIORITY)].append(entry)
        self._depth += 1
        self._ready.set()

    async def get(self) -> Entry:
        while not self._depth:
            self._ready.clear()
            await self._ready.wait()
        now = time.monotonic()
        best: deque[Entry] | None = None
        best_score = float("-inf")
        for level, fifo in enumerate(self._levels):
            if fifo:
                score = level + (now - fifo[0].enqueued_at) / self._aging_s
                if score > best_score:  # ties go to the higher level (checked later)
                    best, best_score = fifo, score
                elif score == best_score:
                    best = fifo
        assert best is not None  # depth > 0
        self._depth -= 1
        return best.popleft()

    def oldest_wait_s(self) -> float:
        now = time.monotonic()
        heads = [fifo[0].enqueued_at for fifo in self._levels if fifo]
        return now - min(heads) if heads else 0.0

    def ack(self, entry: Entry) -> None:
        pass  # nothing outside this process holds the entry

    def abandon(self, entry: Entry) -> None:
        pass  # the store still has the job as queued or running: the next start takes it up

    def later(self, entry: Entry, delay_s: float) -> None:
        fresh = Entry(entry.job_id, entry.priority)

        def due() -> None:
            del self._later[fresh.job_id]
            self.put(fresh, force=True)

        self._later[fresh.job_id] = (asyncio.get_running_loop().call_later(delay_s, due), fresh)

    async def withhold(self, job_id: str, priority: int) -> Entry | None:
        waiting = self._later.pop(job_id, None)
        if waiting is not None:
            waiting[0].cancel()
            return waiting[1]
        fifo = self._levels[min(max(priority, 0), MAX_PRIORITY)]
        for entry in fifo:
            if entry.job_id == job_id:
                fifo.remove(entry)
                self._depth -= 1
                return entry
        return None

    async def cancel_requests(self, job_ids: list[str]) -> set[str]:
        return set()  # every cancel of this queue's jobs is made in this process

    def release(self, entry: Entry) -> bool:
        return False

    def unstarted(self) -> list[Entry]:
        return []

    async def refresh(self) -> None:
        pass  # depth and waits are always current
