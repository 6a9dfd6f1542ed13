"""The embedded event log, webhook subscriptions, outbox (deliveries and dead letters) and the
record of incoming webhook-ids, on the embedded database (`sqlite_db`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from bridge.events import Event, EventType
from bridge.stores.batching import Batch
from bridge.stores.sqlite_db import Database, Table
from bridge.subscriptions import Subscription
from bridge.webhooks import Delivery

TABLES = (
    Table(
        "events",
        "INSERT INTO events (id, type, workflow_id, job_id, at, body) VALUES (?, ?, ?, ?, ?, ?)",
        lambda event: (
            event.id,
            event.type,
            event.workflow_id,
            event.job_id,
            event.at,
            event.model_dump_json().encode(),
        ),
    ),
    Table(
        "deliveries",
        "INSERT INTO deliveries (id, state, created_at, record) VALUES (?, ?, ?, ?)"
        # created_at too: a dead letter replayed is made again (`admin.replay_dead`), and the
        # listing pages by this column, its cursor by the record's.
        " ON CONFLICT (id) DO UPDATE SET"
        " state = excluded.state, created_at = excluded.created_at, record = excluded.record",
        lambda delivery: (
            delivery.id,
            delivery.state,
            delivery.created_at,
            delivery.model_dump_json().encode(),
        ),
        "DELETE FROM deliveries WHERE id = ?",
    ),
)


class SqliteEventLog:
    """Events with increasing ids, kept for `retention_s` and at most `max_events`. An event
    gets its id when appended and reaches listeners once its batch is committed, as on Redis."""

    def __init__(self, db: Database, retention_s: float, max_events: int) -> None:
        self._db = db
        self._retention_s = retention_s
        self._max_events = max_events
        self._last_id = 0

    async def open(self) -> None:
        row = await self._db.fetch_one("SELECT max(id) FROM events")
        self._last_id = int(row[0] or 0)

    @property
    def last_id(self) -> int:
        return self._last_id

    async def newest_id(self) -> int:
        return self._last_id  # one instance: every id it gave is or will be committed in order

    def append(self, type: EventType, fields: dict[str, Any]) -> str:
        self._last_id += 1
        # The bus builds `fields` from typed records; validating them again costs more than the
        # rest of publishing an event.
        event = Event.model_construct(id=self._last_id, type=type, **fields)
        self._db.put("events", str(event.id), event)
        return str(event.id)

    def withdraw(self, key: str) -> None:
        self._db.withdraw("events", key)

    def start(self, deliver: Callable[[Event, bool], None], wanted: Callable[[bool], bool]) -> None:
        """Hand every committed event to `deliver` (all are published here), in id order."""

        def committed(batch: Batch) -> None:
            events = batch.get("events")
            if events and wanted(True):
                for event in events.values():
                    deliver(event, True)

        self._db.committed.append(committed)

    async def since(
        self,
        after: int,
        *,
        types: Sequence[str] = (),
        workflow_id: str | None = None,
        limit: int = 500,
    ) -> list[Event]:
        await self._db.flush()
        query = "SELECT body FROM events WHERE id > ?"
        args: list[Any] = [after]
        if types:
            query += f" AND type IN ({','.join('?' * len(types))})"
            args += list(types)
        if workflow_id is not None:
            query += " AND workflow_id = ?"
            args.append(workflow_id)
        query += " ORDER BY id LIMIT ?"
        args.append(limit)
        return [Event.model_validate_json(row[0]) for row in await self._db.fetch_all(query, args)]

    async def of_job(self, job_id: str, limit: int) -> list[Event]:
        """A job's newest `limit` events, oldest first."""
        await self._db.flush()
        rows = await self._db.fetch_all(
            "SELECT body FROM events WHERE job_id = ? ORDER BY id DESC LIMIT ?", [job_id, limit]
        )
        return [Event.model_validate_json(row[0]) for row in reversed(rows)]

    async def purge(self, now: float) -> int:
        """Events older than the retention, and the oldest beyond the cap."""
        old = await self._db.delete_in_chunks(
            "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE at < ? LIMIT ?)",
            now - self._retention_s,
        )
        return old + await self._db.delete_in_chunks(
            "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE id <= ? LIMIT ?)",
            self._last_id - self._max_events,
        )


class SqliteSubscriptions:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def add(self, subscription: Subscription) -> None:
        await self._db.execute(
            "INSERT INTO subscriptions (id, record, created_at) VALUES (?, ?, ?)",
            (subscription.id, subscription.model_dump_json().encode(), subscription.created_at),
        )

    async def all(self) -> list[Subscription]:
        rows = await self._db.fetch_all("SELECT record FROM subscriptions ORDER BY created_at")
        return [Subscription.model_validate_json(row[0]) for row in rows]

    async def remove(self, subscription_id: str) -> bool:
        return (
            await self._db.execute("DELETE FROM subscriptions WHERE id = ?", (subscription_id,))
            == 1
        )


class SqliteOutbox:
    """Deliveries until they are done; dead letters until replayed or expired."""

    def __init__(self, db: Database, dead_retention_s: float) -> None:
        self._db = db
        self._dead_retention_s = dead_retention_s

    def put(self, delivery: Delivery) -> None:
        self._db.put("deliveries", delivery.id, delivery)

    def done(self, delivery_id: str) -> None:
        self._db.remove("deliveries", delivery_id)

    async def flush(self) -> None:
        await self._db.flush()

    async def pending(self) -> list[Delivery]:
        await self._db.flush()
        rows = await self._db.fetch_all(
            "SELECT record FROM deliveries WHERE state = 'pending' ORDER BY created_at"
        )
        return [Delivery.model_validate_json(row[0]) for row in rows]

    async def dead_letters(
        self, limit: int, older_than: tuple[float, str] | None = None
    ) -> list[Delivery]:
        """Dead letters, newest first by (created_at, id); `older_than`: the (created_at, id) of
        the previous page's last."""
        await self._db.flush()
        query = "SELECT record FROM deliveries WHERE state = 'dead'"
        args: list[Any] = []
        if older_than is not None:
            query += " AND (created_at, id) < (?, ?)"
            args += older_than
        query += " ORDER BY created_at DESC, id DESC LIMIT ?"
        args.append(limit)
        return [
            Delivery.model_validate_json(row[0]) for row in await self._db.fetch_all(query, args)
        ]

    async def get(self, delivery_id: str) -> Delivery | None:
        found, delivery = self._db.pending("deliveries", delivery_id)
        if found:
            return delivery  # type: ignore[no-any-return]
        row = await self._db.fetch_one("SELECT record FROM deliveries WHERE id = ?", (delivery_id,))
        return Delivery.model_validate_json(row[0]) if row else None

    async def count_dead(self) -> int:
        await self._db.flush()
        row = await self._db.fetch_one("SELECT count(*) FROM deliveries WHERE state = 'dead'")
        return int(row[0])

    async def first_time(self, webhook_id: str) -> bool:
        """Record an incoming webhook-id; False when it was seen before."""
        return (
            await self._db.execute(
                "INSERT INTO inbound (webhook_id, received_at) VALUES (?, ?)"
                " ON CONFLICT (webhook_id) DO NOTHING",
                (webhook_id, time.time()),
            )
            == 1
        )

    async def purge(self, now: float) -> int:
        """Dead letters past their retention, and incoming webhook-ids as old."""
        cutoff = now - self._dead_retention_s
        dead = await self._db.delete_in_chunks(
            "DELETE FROM deliveries WHERE rowid IN (SELECT rowid FROM deliveries"
            " WHERE state = 'dead' AND created_at < ? LIMIT ?)",
            cutoff,
        )
        return dead + await self._db.delete_in_chunks(
            "DELETE FROM inbound WHERE rowid IN (SELECT rowid FROM inbound"
            " WHERE received_at < ? LIMIT ?)",
            cutoff,
        )
