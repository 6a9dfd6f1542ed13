"""Faults that are not the bridge's own, each with the count of jobs accepted, completed,
dead-lettered and lost printed (lost must be 0):

- the disk under the SQLite database fills up (a real daemon whose file-size limit is lowered
  with prlimit, as a full disk would refuse writes), then has room again.

Elsewhere: SIGKILL mid-batch, on both backends (tests/test_backend_conformance.py) and of one
of two Redis instances (tests/test_redis_instances.py); Redis stopped and restarted (tests/test_redis.py); the
callback target down, then up (tests/test_worker.py); an SMTP server dropping connections
(tests/processors/test_email_send.py).
"""

from __future__ import annotations

import asyncio
import resource
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

from tests.daemon import Daemon
from tests.test_events import read_until

API_KEY = "faults-api-key-0123456789abcdef"
AUTH = {"X-API-Key": API_KEY}
EXECUTE = "/api/v1/workflow/execute"


def env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "BRIDGE_DATA_DIR": str(tmp_path / "data"),
        "BRIDGE_API_KEYS": API_KEY,
        "BRIDGE_API_KEY_SCOPES": "execute,status,admin",
        "BRIDGE_PROCESSORS": "tests.plugins.sample",
        "BRIDGE_ACCESS_LOG": "false",
        **extra,
    }


def job(n: int, **extra: Any) -> dict[str, Any]:
    return {
        "processing_type": "sleep",
        "mode": "async",
        "workflow_id": "wf-faults",
        "idempotency_key": f"fault-{n}",
        "parameters": {"seconds": 0.01},
        "items": [{"json": {"n": n, "padding": "x" * 20_000}}],
        **extra,
    }


async def statuses(session: aiohttp.ClientSession, url: str, ids: list[str]) -> Counter[str]:
    counted: Counter[str] = Counter()
    for job_id in ids:
        async with session.get(f"{url}/api/v1/workflow/status/{job_id}") as answer:
            counted[(await answer.json())["status"]] += 1
    return counted


async def until_settled(
    session: aiohttp.ClientSession, url: str, ids: list[str], timeout: float = 60
) -> Counter[str]:
    deadline = time.monotonic() + timeout
    while True:
        counted = await statuses(session, url, ids)
        if counted["completed"] + counted["failed"] == len(ids) or time.monotonic() > deadline:
            return counted
        await asyncio.sleep(0.2)


def ended(events: list[dict[str, Any]]) -> set[str]:
    return {e["data"]["job_id"] for e in events if e["event"] == "workflow.completed"}


def largest_file(directory: Path) -> int:
    return max(path.stat().st_size for path in directory.rglob("*") if path.is_file())


async def test_a_full_disk_refuses_new_jobs_clearly_and_corrupts_nothing(tmp_path: Path) -> None:
    daemon = await Daemon(env(tmp_path)).start()
    assert daemon.process is not None
    pid = daemon.process.pid
    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    accepted: list[str] = []
    refusals: list[dict[str, Any]] = []
    try:
        async with (
            aiohttp.ClientSession(headers=AUTH) as session,
            session.get(f"{daemon.url}/api/v1/events?workflow_id=wf-faults") as stream,
        ):
            # No file of the daemon may grow past its size now + 300 KiB: the disk is "full".
            limit = largest_file(tmp_path / "data") + 300 * 1024
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (limit, hard))
            for n in range(200):
                async with session.post(f"{daemon.url}{EXECUTE}", json=job(n)) as answer:
                    if answer.status == 202:
                        accepted.append((await answer.json())["job_id"])
                    else:
                        assert answer.status == 503, await answer.text()
                        assert answer.headers["Retry-After"]
                        refusals.append((await answer.json())["error"])
                if len(refusals) >= 5:
                    break
            assert refusals, "the disk never filled up"
            assert "is the disk under" in refusals[0]["message"]
            assert "was not accepted" in refusals[0]["message"]
            async with session.get(f"{daemon.url}/ready") as ready:
                assert ready.status == 503 and "full" in (await ready.text())
            sync = {"processing_type": "echo", "items": [{"json": {"still": "working"}}]}
            async with session.post(f"{daemon.url}{EXECUTE}", json=sync) as answer:
                assert answer.status == 200  # sync requests need no disk

            resource.prlimit(pid, resource.RLIMIT_FSIZE, (hard, hard))  # room again
            for n in range(1000, 1005):  # the bridge comes back by itself
                for _ in range(100):
                    async with session.post(f"{daemon.url}{EXECUTE}", json=job(n)) as answer:
                        if answer.status == 202:
                            accepted.append((await answer.json())["job_id"])
                            break
                    await asyncio.sleep(0.1)
            counted = await until_settled(session, daemon.url, accepted)
            # Events reach streams once committed: those of the refused jobs never did.
            seen = await read_until(stream, lambda events: set(accepted) <= ended(events))
            assert {e["data"]["job_id"] for e in seen} == set(accepted)
            async with session.get(f"{daemon.url}/admin/status") as answer:
                dead = (await answer.json())["dead_letters"]
    finally:
        daemon.signal()
        await daemon.wait()
    lost = len(accepted) - counted["completed"] - counted["failed"]
    print(
        f"\ndisk full: accepted {len(accepted)}, refused while full {len(refusals)}, "
        f"completed {counted['completed']}, failed {counted['failed']}, "
        f"dead-lettered {dead}, lost {lost}"
    )
    assert counted["completed"] == len(accepted) and lost == 0
    with sqlite3.connect(tmp_path / "data" / "bridge.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
