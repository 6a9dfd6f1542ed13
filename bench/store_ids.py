"""Benchmark: the SQLite job store's cost per job as the table grows, time-ordered ids (what the
bridge uses) against random ids. CPU time of the process (both threads) per saved job.

    bash bench/run.sh store_ids [--jobs 150000]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bridge.ids import new_id
from bridge.jobs import JobRecord, JobStatus
from bridge.stores import sqlite
from bridge.stores.sqlite_db import Database
from bridge.stores.sqlite_schema import MIGRATIONS

BATCH = 100  # about what one flush carries at 2,000 requests/s
RETENTION = {"sync": 86400.0, "async": 86400.0}


def random_id() -> str:
    return f"{random.getrandbits(128):032x}"


async def measure(make_id: Callable[[], str], jobs: int, directory: Path) -> list[float]:
    db = Database(directory / f"{make_id.__name__}.sqlite3", sqlite.tables(RETENTION))
    await db.open()
    store = sqlite.SqliteJobStore(db, RETENTION)
    costs = []
    try:
        for start in range(0, jobs, BATCH * 100):
            cpu = time.process_time()
            for _ in range(start, min(start + BATCH * 100, jobs), BATCH):
                now = time.time()
                for _ in range(BATCH):
                    record = JobRecord(
                        job_id=make_id(),
                        status=JobStatus.RUNNING,
                        mode="sync",
                        processing_type="echo",
                        created_at=now,
                        started_at=now,
                        item_count=1,
                    )
                    await store.save(record.advance(JobStatus.COMPLETED, output_count=1))
                await store.flush()
            costs.append((time.process_time() - cpu) / (BATCH * 100) * 1e6)
    finally:
        await db.close()
    return costs


def measure_raw(make_id: Callable[[], str], jobs: int, directory: Path) -> list[float]:
    """The same inserts on bare sqlite3 with the store's schema: the index effect alone."""
    db = sqlite3.connect(directory / f"raw-{make_id.__name__}.sqlite3")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    for migration in MIGRATIONS:
        db.executescript(migration)
    record = b"x" * 380  # about a finished sync job's JSON
    costs = []
    for start in range(0, jobs, BATCH * 100):
        cpu = time.process_time()
        for _ in range(start, min(start + BATCH * 100, jobs), BATCH):
            now = time.time()
            rows = [
                (make_id(), None, None, None, "completed", now, now + 86400, record, "echo", None)
                for _ in range(BATCH)
            ]
            db.executemany(sqlite.tables(RETENTION)[0].write, rows)
            db.commit()
        costs.append((time.process_time() - cpu) / (BATCH * 100) * 1e6)
    db.close()
    return costs


def table(title: str, ordered: list[float], scattered: list[float]) -> None:
    print(f"\n{title}\n")
    print("| jobs in table | time-ordered ids (bridge) µs | random ids µs |")
    print("|---|---|---|")
    for index, (a, b) in enumerate(zip(ordered, scattered, strict=True)):
        if index % 3 == 0 or index == len(ordered) - 1:
            print(f"| {index * BATCH * 100:,} | {a:.1f} | {b:.1f} |")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=150_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        ordered = await measure(new_id, args.jobs, Path(directory))
        scattered = await measure(random_id, args.jobs, Path(directory))
        raw_ordered = measure_raw(new_id, args.jobs, Path(directory))
        raw_scattered = measure_raw(random_id, args.jobs, Path(directory))
    table(f"SqliteJobStore: CPU µs per saved job, batches of {BATCH}", ordered, scattered)
    table(
        f"bare sqlite3, same schema: CPU µs per row, batches of {BATCH}", raw_ordered, raw_scattered
    )


if __name__ == "__main__":
    asyncio.run(main())
