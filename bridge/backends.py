"""Where the daemon keeps its state: the embedded backend (one SQLite file, in-process queues) or
the Redis backend (queues on Redis Streams, status, idempotency keys, dead letters, subscriptions
and the event log shared by every instance). Both give the same stores behind the same protocols;
they differ in how a restart or a stop is taken up (see `worker`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

from bridge.aio import stop_tasks
from bridge.callbacks import Deliverer, Outbox
from bridge.events import Event, EventBus, EventLog
from bridge.lifecycle import Lifecycle
from bridge.metrics import Metrics
from bridge.queues.base import JobQueue
from bridge.queues.memory import MemoryQueue
from bridge.queues.redis_streams import KINDS as QUEUE_KINDS
from bridge.queues.redis_streams import StreamKeeper, StreamQueue
from bridge.redact import redact_url
from bridge.settings import Settings
from bridge.stores import redis as redis_store
from bridge.stores import redis_backfill, redis_log, sqlite, sqlite_log
from bridge.stores.base import Store
from bridge.stores.redis_db import RedisDb, consumer_name
from bridge.stores.sqlite_db import Database
from bridge.subscriptions import Subscription, SubscriptionStore
from bridge.webhooks import Delivery

if TYPE_CHECKING:
    from bridge.subscriptions import Subscriptions
    from bridge.worker import WorkerPool

log = logging.getLogger(__name__)

DB_FILE = "bridge.sqlite3"
SUBSCRIPTIONS_RELOAD_S = 2.0


class EventStore(EventLog, Protocol):
    async def of_job(self, job_id: str, limit: int) -> list[Event]:
        """A job's newest `limit` events, oldest first (at most 200 are kept per job on
        Redis: `redis_log.JOB_EVENTS`)."""

    async def purge(self, now: float) -> int: ...


class DeadLetterStore(Outbox, Protocol):
    async def dead_letters(
        self, limit: int, older_than: tuple[float, str] | None = None
    ) -> list[Delivery]:
        """Up to `limit` dead letters, newest first by (created_at, id) — created_at: when the
        letter was made, or last replayed — those after `older_than` in that order (the
        (created_at, id) of the previous page's last)."""

    async def get(self, delivery_id: str) -> Delivery | None: ...

    async def count_dead(self) -> int: ...

    async def first_time(self, webhook_id: str) -> bool: ...

    async def purge(self, now: float) -> int: ...


class Backend(Protocol):
    name: str
    shared: bool  # several instances may use it at once
    store: Store
    events: EventStore
    outbox: DeadLetterStore
    subscriptions: SubscriptionStore

    def new_queue(self, name: str, max_depth: int, aging_s: float) -> JobQueue: ...

    def describe(self) -> dict[str, object]:
        """What /admin/status shows of the backend."""

    async def open(self) -> None: ...

    async def start(
        self, bus: EventBus, workers: WorkerPool, subs: Subscriptions, deliverer: Deliverer
    ) -> None:
        """Take up what is left (embedded: the last run's unfinished jobs; Redis: deliveries of
        instances that stopped) and start the backend's own tasks."""

    async def stop(self) -> None:
        """Stop the backend's own tasks (the workers have stopped)."""

    async def close(self) -> None: ...


def retention(settings: Settings) -> dict[str, float]:
    return {"async": settings.job_retention_s, "sync": settings.sync_job_retention_s}


class Embedded:
    name = "embedded"
    shared = False

    def __init__(self, settings: Settings) -> None:
        self.db = Database(
            settings.data_dir / DB_FILE, (*sqlite.tables(retention(settings)), *sqlite_log.TABLES)
        )
        sqlite_store = sqlite.SqliteJobStore(self.db, retention(settings))
        self.store: Store = sqlite_store
        self._unfinished = sqlite_store.unfinished
        self._event_log = sqlite_log.SqliteEventLog(
            self.db, settings.events_retention_s, settings.events_max
        )
        self.events: EventStore = self._event_log
        self.outbox: DeadLetterStore = sqlite_log.SqliteOutbox(
            self.db, settings.dead_letter_retention_s
        )
        self.subscriptions: SubscriptionStore = sqlite_log.SqliteSubscriptions(self.db)

    def new_queue(self, name: str, max_depth: int, aging_s: float) -> JobQueue:
        return MemoryQueue(name, max_depth, aging_s)

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "store": "sqlite", "queues": "memory", "path": str(self.db.path)}

    async def open(self) -> None:
        await self.db.open()
        await self._event_log.open()

    async def start(
        self, bus: EventBus, workers: WorkerPool, subs: Subscriptions, deliverer: Deliverer
    ) -> None:
        # Before the resume: the events it publishes (jobs failed as dead) reach subscribers.
        self._event_log.start(bus.deliver, bus.interested)
        await workers.resume(await self._unfinished())
        await deliverer.resume()

    async def stop(self) -> None:
        pass

    async def close(self) -> None:
        await self.db.close()


class Redis:
    name = "redis"
    shared = True

    def __init__(self, settings: Settings, metrics: Metrics, lifecycle: Lifecycle) -> None:
        assert settings.redis_url is not None
        self._lifecycle = lifecycle
        self._settings = settings
        self._metrics = metrics
        self.consumer = consumer_name(settings.color)
        self.db = RedisDb(
            settings.redis_url,
            (
                *redis_store.kinds(retention(settings)),
                *QUEUE_KINDS,
                *redis_log.kinds(self.consumer, settings.events_max, settings.events_retention_s),
            ),
        )
        self.store: Store = redis_store.RedisJobStore(self.db, retention(settings))
        self._event_log = redis_log.RedisEventLog(
            self.db, self.consumer, settings.events_retention_s
        )
        self.events: EventStore = self._event_log
        self._queues: list[StreamQueue] = []
        self.keeper = StreamKeeper(
            self.db, self.consumer, self._queues, settings.redis_claim_idle_s
        )
        self.outbox: DeadLetterStore = redis_log.RedisOutbox(
            self.db, self.consumer, settings.dead_letter_retention_s, self.keeper.alive
        )
        self.subscriptions: SubscriptionStore = redis_log.RedisSubscriptions(self.db)
        self._tasks: list[asyncio.Task[None]] = []

    def new_queue(self, name: str, max_depth: int, aging_s: float) -> JobQueue:
        queue = StreamQueue(name, max_depth, aging_s, self.db, self.consumer)
        queue.paused = lambda: self._lifecycle.draining  # the other colour takes the work
        self._queues.append(queue)
        return queue

    def describe(self) -> dict[str, object]:
        return {
            "name": self.name,
            "store": "redis",
            "queues": "redis-streams",
            "url": redact_url(self.db.url),
            "consumer": self.consumer,
            "up": self.db.up,
            "down_reason": self.db.down_reason,
            "running_on_all_instances": {q.name: q.running for q in self._queues},
        }

    async def open(self) -> None:
        await self.db.open()
        await self._event_log.open()
        log.info("Redis backend: this instance is consumer %r", self.consumer)

    async def start(
        self, bus: EventBus, workers: WorkerPool, subs: Subscriptions, deliverer: Deliverer
    ) -> None:
        await self.keeper.open()

        def changed(up: bool, reason: str | None) -> None:
            self._metrics.backend_up.set(1 if up else 0)
            self._metrics.backend_changes.labels("up" if up else "down").inc()
            # Written to the shared log once Redis takes writes again, in order.
            bus.publish("backend.up" if up else "backend.down", data={"reason": reason})

        self.db.on_change.append(changed)

        async def catch_up(learned: list[Subscription], upto: int) -> None:
            """Another instance's new subscriptions: the events published here since each was
            made, up to where the hooks had got without it."""
            for subscription in learned:
                after = subscription.after_event_id
                for event in await self._event_log.published_here(after, upto):
                    for delivery in subs.deliveries_for(event, among=[subscription]):
                        deliverer.send(delivery)

        async def adopt() -> None:
            """Take over the deliveries of instances that stopped meanwhile — unless draining:
            like the shared queues' jobs, they are for an instance that stays."""
            if not self._lifecycle.draining:
                await deliverer.resume()

        subs.on_learned = catch_up
        self._event_log.start(bus.deliver, bus.interested)
        self.keeper.start()
        await deliverer.resume()
        self._tasks += [
            asyncio.create_task(_every(SUBSCRIPTIONS_RELOAD_S, subs.load), name="subs-reload"),
            asyncio.create_task(
                _every(self._settings.redis_claim_idle_s, adopt), name="adopt-outboxes"
            ),
            asyncio.create_task(
                redis_backfill.backfill(self.db, retention(self._settings)), name="jobs-backfill"
            ),
        ]

    async def stop(self) -> None:
        await stop_tasks(self._tasks)
        await self.keeper.stop()
        await self._event_log.stop()

    async def close(self) -> None:
        await self.db.close()


async def _every(interval_s: float, action: Callable[[], Awaitable[object]]) -> None:
    while True:
        await asyncio.sleep(interval_s)
        try:
            await action()
        except Exception as exc:  # Redis down: the next round tries again
            log.debug("%s failed: %s", getattr(action, "__qualname__", action), exc)


def open_backend(settings: Settings, metrics: Metrics, lifecycle: Lifecycle) -> Embedded | Redis:
    return Redis(settings, metrics, lifecycle) if settings.redis_url else Embedded(settings)
