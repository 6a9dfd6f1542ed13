"""The embedded event log, outbox and inbound webhook-ids on a real SQLite file."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge.stores import sqlite, sqlite_log
from bridge.stores.sqlite_db import Database
from bridge.stores.sqlite_schema import MIGRATIONS
from bridge.webhooks import Delivery


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    retention = {"async": 600.0, "sync": 60.0}
    database = Database(
        tmp_path / "bridge.sqlite3", (*sqlite.tables(retention), *sqlite_log.TABLES)
    )
    await database.open()
    yield database
    await database.close()


async def test_events_are_ordered_filtered_and_survive_a_reopen(
    db: Database, tmp_path: Path
) -> None:
    log = sqlite_log.SqliteEventLog(db, retention_s=3600, max_events=1000)
    await log.open()
    first = log.append("workflow.queued", {"at": time.time(), "workflow_id": "a"})
    log.append("workflow.completed", {"at": time.time(), "workflow_id": "b"})
    third = log.append("workflow.completed", {"at": time.time(), "workflow_id": "a"})
    assert [e.id for e in await log.since(0)] == [1, 2, 3]
    assert [e.id for e in await log.since(int(first), workflow_id="a")] == [int(third)]
    assert [e.id for e in await log.since(0, types=["workflow.queued"])] == [int(first)]
    again = sqlite_log.SqliteEventLog(db, retention_s=3600, max_events=1000)
    await again.open()
    assert again.append("workflow.failed", {"at": time.time()}) == "4"  # ids go on


async def test_events_past_retention_or_the_cap_are_purged(db: Database) -> None:
    log = sqlite_log.SqliteEventLog(db, retention_s=60, max_events=3)
    await log.open()
    log.append("workflow.queued", {"at": time.time() - 120})  # too old
    for _ in range(5):
        log.append("workflow.queued", {"at": time.time()})
    await db.flush()
    assert await log.purge(time.time()) == 3  # one too old, two beyond the cap
    assert [e.id for e in await log.since(0)] == [4, 5, 6]


async def test_outbox_keeps_pending_and_dead_until_done_or_expired(db: Database) -> None:
    outbox = sqlite_log.SqliteOutbox(db, dead_retention_s=60)
    pending = Delivery(id="cb_1", kind="callback", url="http://x/1")
    old_dead = Delivery(
        id="cb_2", kind="callback", url="http://x/2", state="dead", created_at=time.time() - 120
    )
    dead = Delivery(id="cb_3", kind="callback", url="http://x/3", state="dead")
    for delivery in (pending, old_dead, dead):
        outbox.put(delivery)
    assert [d.id for d in await outbox.pending()] == ["cb_1"]
    assert [d.id for d in await outbox.dead_letters(10)] == ["cb_3", "cb_2"]
    assert await outbox.count_dead() == 2
    outbox.done("cb_1")
    assert await outbox.pending() == []
    assert await outbox.purge(time.time()) == 1
    assert [d.id for d in await outbox.dead_letters(10)] == ["cb_3"]


async def test_a_version_6_database_lists_replayed_dead_letters_by_their_replay(
    tmp_path: Path,
) -> None:
    """A version before 7 wrote a replayed letter's new created_at to its record only, the
    column keeping the first: migration 7 sets the column from the record, so the listing's
    order and its cursor (the record's created_at, id) agree."""
    path = tmp_path / "bridge.sqlite3"
    first, replayed = 1_800_000_000.0, 1_800_000_100.0
    letters = [
        Delivery(id=f"cb_{n}", kind="callback", url="http://x/", state="dead", created_at=at)
        for n, at in ((1, replayed), (2, first + 50), (3, first + 10))
    ]
    with sqlite3.connect(path) as old:
        for migration in MIGRATIONS[:6]:
            old.executescript(migration)
        old.execute("PRAGMA user_version=6")
        for letter in letters:  # cb_1 as version 6 left it: made at `first`, replayed, dead again
            column = first if letter.id == "cb_1" else letter.created_at
            old.execute(
                "INSERT INTO deliveries (id, state, created_at, record) VALUES (?, ?, ?, ?)",
                (letter.id, "dead", column, letter.model_dump_json().encode()),
            )
    db = Database(path, sqlite_log.TABLES)
    await db.open()
    try:
        outbox = sqlite_log.SqliteOutbox(db, dead_retention_s=60)
        assert [d.id for d in await outbox.dead_letters(10)] == ["cb_1", "cb_2", "cb_3"]
        assert [d.id for d in await outbox.dead_letters(10, (replayed, "cb_1"))] == ["cb_2", "cb_3"]
        assert await outbox.purge(replayed + 30) == 2  # retention counts from the replay too
    finally:
        await db.close()


async def test_an_incoming_webhook_id_counts_once(db: Database) -> None:
    outbox = sqlite_log.SqliteOutbox(db, dead_retention_s=60)
    assert await outbox.first_time("msg_1") is True
    assert await outbox.first_time("msg_1") is False
    assert await outbox.purge(time.time() + 120) == 1  # ids are kept as long as dead letters
    assert await outbox.first_time("msg_1") is True
