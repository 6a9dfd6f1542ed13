"""The last 15 minutes of this instance, in memory, for the console's charts (no Prometheus
server needed).

Every SAMPLE_INTERVAL_S a sample is taken: the depth of each queue (the MAX_QUEUES deepest; the
rest summed under OTHER), the jobs running here, the longest wait of a queued job, and what ended
since the last sample — jobs completed and failed, callbacks delivered and failed. Depths and waits
are the queues' (on Redis, shared by the instances); the rest is this instance's own: the counts
are read from its Prometheus counters (jobs it ran, callbacks it sent: none is counted twice where
instances share queues and events), so the hot paths pay nothing. SAMPLES samples are kept;
memory is bounded whatever the number of queues.

Series, by name (`History.series()`):
    depth:<queue>, depth:(other)   jobs waiting in a queue (a queue name has no parentheses)
    in_flight                      jobs running on this instance
    oldest_wait_s                  the longest wait of a queued job, over the queues
    completed, failed              jobs (sync and background) ended since the last sample
    callbacks_delivered, callbacks_failed   callbacks ended since the last sample (failed: a
                                   dead letter)
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass

from prometheus_client import Counter

from bridge.aio import stop_tasks
from bridge.metrics import Metrics
from bridge.worker import WorkerPool

SAMPLE_INTERVAL_S = 10.0
SAMPLES = 90  # 15 minutes of samples
MAX_QUEUES = 10  # charted one by one; the others are summed
OTHER = "(other)"
TALLIES = ("completed", "failed", "callbacks_delivered", "callbacks_failed")


@dataclass(frozen=True, slots=True)
class Sample:
    at: float  # Unix time
    depths: dict[str, int]  # at most MAX_QUEUES queues, and OTHER
    values: dict[str, float]  # in_flight, oldest_wait_s and the TALLIES since the last sample


def _total(counter: Counter, **labels: str | frozenset[str]) -> float:
    """The sum of a counter's series whose labels match (a value, or one of a set)."""
    total = 0.0
    for family in counter.collect():
        for sample in family.samples:
            if sample.name.endswith("_total") and all(
                sample.labels.get(key) in (wanted if isinstance(wanted, frozenset) else {wanted})
                for key, wanted in labels.items()
            ):
                total += sample.value
    return total


class History:
    """Samples of this instance's queues and outcomes, the last SAMPLES of them."""

    def __init__(
        self, workers: WorkerPool, metrics: Metrics, interval_s: float = SAMPLE_INTERVAL_S
    ) -> None:
        self._workers = workers
        self._metrics = metrics
        self.interval_s = interval_s
        self._samples: deque[Sample] = deque(maxlen=SAMPLES)
        self._last = self._tallies()
        self._task: asyncio.Task[None] | None = None

    def _tallies(self) -> dict[str, float]:
        """Totals since start-up; a sample keeps the difference from the last ones."""
        jobs, webhooks = self._metrics.jobs, self._metrics.webhooks
        return {
            "completed": _total(jobs, status="completed"),
            "failed": _total(jobs, status="failed"),
            "callbacks_delivered": _total(webhooks, kind="callback", outcome="delivered"),
            "callbacks_failed": _total(webhooks, kind="callback", outcome="dead_letter"),
        }

    def record(self) -> Sample:
        """Take a sample now."""
        status = self._workers.status()
        # Deepest first; equal depths keep the configured order (the default queue first).
        deepest = sorted(status, key=lambda name: -status[name]["depth"])
        depths = {name: int(status[name]["depth"]) for name in deepest[:MAX_QUEUES]}
        if len(deepest) > MAX_QUEUES:
            depths[OTHER] = sum(int(status[name]["depth"]) for name in deepest[MAX_QUEUES:])
        tallies = self._tallies()
        values = {
            "in_flight": float(self._workers.in_flight),
            "oldest_wait_s": max((q["oldest_wait_s"] for q in status.values()), default=0.0),
            **{name: tallies[name] - self._last[name] for name in TALLIES},
        }
        self._last = tallies
        sample = Sample(time.time(), depths, values)
        self._samples.append(sample)
        return sample

    def series(self) -> dict[str, list[tuple[float, float]]]:
        """Every series by name (see the module docstring): (Unix time, value), oldest first. A
        queue's series has a point only for the samples in which it was charted."""
        series: dict[str, list[tuple[float, float]]] = {}
        for sample in self._samples:
            for name, depth in sample.depths.items():
                series.setdefault(f"depth:{name}", []).append((sample.at, float(depth)))
            for name, value in sample.values.items():
                series.setdefault(name, []).append((sample.at, value))
        return series

    def per_minute(self, name: str) -> float:
        """One of the TALLIES over the samples of the last minute: e.g. jobs completed a minute."""
        if name not in TALLIES:
            raise KeyError(name)
        since = time.time() - 60.0
        return sum(s.values[name] for s in self._samples if s.at > since)

    def start(self) -> None:
        """A first sample now (the charts have a point at once), then one every interval."""
        self.record()
        self._task = asyncio.create_task(self._loop(), name="history")

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            self.record()

    async def stop(self) -> None:
        if self._task is not None:
            await stop_tasks([self._task])
            self._task = None
