"""Two real bridge daemons on one real redis-server, sending real e-mail to a real SMTP server:
one is SIGKILLed in the middle of the batch; the other takes over its jobs, every job ends, and
no message leaves twice (each has an idempotency key)."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from tests import smtp_server
from tests.daemon import Daemon
from tests.smtp_server import Sink
from tests.test_recovery import headers

JOBS = 40
ITEMS = 5
SECRET = "a-test-secret-that-is-long-enough-0123456789"


@pytest.fixture
def slow_sink() -> Iterator[Sink]:
    sink = Sink(delay_s=0.02)
    controller = smtp_server.start(sink)
    sink.port = controller.port  # type: ignore[attr-defined]
    yield sink
    controller.stop()


def env(tmp_path: Path, name: str, redis_url: str, sink: Sink) -> dict[str, str]:
    return {
        "BRIDGE_DATA_DIR": str(tmp_path / name),
        "BRIDGE_REDIS_URL": redis_url,
        "BRIDGE_REDIS_CLAIM_IDLE_S": "2",
        "BRIDGE_JWT_SECRET": SECRET,
        "BRIDGE_QUEUES": '[{"name": "default", "concurrency": 4}]',
        "BRIDGE_SMTP_HOST": "127.0.0.1",
        "BRIDGE_SMTP_PORT": str(sink.port),  # type: ignore[attr-defined]
        "BRIDGE_SMTP_TLS": "none",
        "BRIDGE_SMTP_FROM": "News <news@example.com>",
        "BRIDGE_SMTP_CONNECTIONS": "2",
    }


def mail_job(n: int) -> dict[str, Any]:
    return {
        "processing_type": "email_send",
        "mode": "async",
        "workflow_id": "wf-mail",
        "idempotency_key": f"batch-{n}",
        "items": [
            {
                "json": {
                    "to": f"person{n}-{i}@example.org",
                    "subject": "Hello",
                    "text": "Hi",
                    "idempotency_key": f"mail-{n}-{i}",
                    "headers": {"X-Key": f"mail-{n}-{i}"},
                }
            }
            for i in range(ITEMS)
        ],
    }


def consumer_of(daemon: Daemon) -> str:
    said = [r["msg"] for r in daemon.records() if "this instance is consumer" in r.get("msg", "")]
    return said[0].rpartition(" ")[2].strip("'")


async def consumers(redis_url: str) -> set[str]:
    """Every consumer name in the groups of the default queue's streams."""
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        names = set()
        for level in range(10):
            for consumer in await client.xinfo_consumers(f"bridge:q:default:{level}", "bridge"):
                names.add(consumer["name"])
        return names
    finally:
        await client.aclose()


@pytest.mark.slow
async def test_sigkill_of_one_instance_mid_batch(
    tmp_path: Path, redis_url: str, slow_sink: Sink
) -> None:
    auth = headers(tmp_path)
    a = await Daemon(env(tmp_path, "a", redis_url, slow_sink)).start()
    b = await Daemon(env(tmp_path, "b", redis_url, slow_sink)).start()
    try:
        async with aiohttp.ClientSession() as session:
            accepted = []
            for n in range(JOBS):
                daemon = a if n % 2 else b
                async with session.post(
                    f"{daemon.url}/api/v1/workflow/execute", json=mail_job(n), headers=auth
                ) as response:
                    assert response.status == 202, await response.text()
                    accepted.append((await response.json())["job_id"])
            while len(slow_sink.messages) < JOBS * ITEMS // 5:
                await asyncio.sleep(0.01)
            a.signal(signal.SIGKILL)
            assert await a.wait() == -signal.SIGKILL
            sent_before_kill = len(slow_sink.messages)
            statuses: dict[str, dict[str, Any]] = {}
            deadline = asyncio.get_running_loop().time() + 120
            while len(statuses) < len(accepted):
                assert asyncio.get_running_loop().time() < deadline, f"{len(statuses)} ended"
                for job_id in accepted:
                    if job_id in statuses:
                        continue
                    async with session.get(
                        f"{b.url}/api/v1/workflow/status/{job_id}", headers=auth
                    ) as response:
                        status = await response.json()
                    if status["status"] in ("completed", "failed", "cancelled"):
                        statuses[job_id] = status
                await asyncio.sleep(0.2)
            taken_over = [r for r in b.records() if "taken over from" in r.get("msg", "")]
            gone = consumer_of(a)
            for _ in range(100):  # deleted from the groups once nothing it held is left
                if gone not in await consumers(redis_url):
                    break
                await asyncio.sleep(0.1)
            assert gone not in await consumers(redis_url), "the dead consumer stayed"
            assert consumer_of(b) in await consumers(redis_url)
    finally:
        await a.kill()
        await b.kill()
    keys = Counter(message["X-Key"] for message in slow_sink.messages)
    unknown = sum(s["error_count"] for s in statuses.values())
    completed = sum(s["status"] == "completed" for s in statuses.values())
    print(
        f"\njobs accepted {JOBS}, completed {completed}, lost {JOBS - completed}; "
        f"messages {JOBS * ITEMS}: sent before the kill {sent_before_kill}, "
        f"sent in all {len(keys)}, sent twice {sum(c > 1 for c in keys.values())}, "
        f"outcome unknown (reported, not resent) {unknown}, jobs taken over {len(taken_over)}"
    )
    assert all(s["status"] == "completed" for s in statuses.values())
    assert max(keys.values()) == 1, "a message left twice"
    # A message whose send was under way at the kill may have left or not: it is reported as
    # unknown (an item error), never sent again. Every other message left exactly once.
    assert JOBS * ITEMS - len(keys) <= unknown
    assert taken_over, "b never took over a job of a"
    assert sent_before_kill < JOBS * ITEMS, "the kill came too late to test anything"
