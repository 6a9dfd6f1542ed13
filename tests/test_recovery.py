"""A real daemon killed in the middle of background work: nothing accepted is lost."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import aiohttp

from bridge.auth import mint_token
from bridge.settings import Settings
from tests.conftest import PLUGINS, SECRET
from tests.daemon import Daemon
from tests.webhook_target import Target

JOBS = 1000
CALLBACK_SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "BRIDGE_DATA_DIR": str(tmp_path),
        "BRIDGE_JWT_SECRET": SECRET,
        "BRIDGE_PROCESSORS": PLUGINS,
        "BRIDGE_CALLBACK_SECRET": CALLBACK_SECRET,
        "BRIDGE_QUEUES": '[{"name": "default", "concurrency": 4}]',
        "BRIDGE_RETRY_BASE_S": "0.05",
        "BRIDGE_SHUTDOWN_TIMEOUT_S": "2",
        **extra,
    }


def headers(tmp_path: Path) -> dict[str, str]:
    settings = Settings.model_validate({"jwt_secret": SECRET, "data_dir": tmp_path})
    return {"Authorization": f"Bearer {mint_token(settings, ['execute', 'status'], 600)}"}


async def submit(
    session: aiohttp.ClientSession, daemon: Daemon, auth: dict[str, str], n: int, hook: str
) -> str:
    body: dict[str, Any] = {
        "processing_type": "sleep",
        "mode": "async",
        "items": [{"json": {"n": n}}],
        "parameters": {"seconds": 0.2},
        "workflow_id": "wf-recovery",
        "idempotency_key": f"recovery-{n}",
        "callback_url": hook,
    }
    async with session.post(
        f"{daemon.url}/api/v1/workflow/execute", json=body, headers=auth
    ) as response:
        assert response.status == 202, await response.text()
        return str((await response.json())["job_id"])


async def test_sigkill_mid_batch_loses_no_accepted_job(tmp_path: Path, target: Target) -> None:
    auth = headers(tmp_path)
    accepted: list[str] = []
    async with aiohttp.ClientSession() as session:
        first = await Daemon(env(tmp_path)).start()

        numbers = iter(range(JOBS))

        async def submit_all() -> None:
            for n in numbers:  # shared by the submitters: each number once
                accepted.append(await submit(session, first, auth, n, target.url()))

        # The kill lands while jobs are still being submitted, however fast the machine is:
        # two submitters outpace the four workers (0.2 s a job, 20 a second) many times over.
        submitting = asyncio.gather(*(submit_all() for _ in range(2)))
        try:
            # Mid-batch: some callbacks in, hundreds of jobs accepted and not yet run.
            while len(accepted) < 300 or len(target.received) < 5:
                assert not submitting.done(), "every job was submitted before the kill"
                await asyncio.sleep(0.01)
            submitting.cancel()  # a job accepted but not recorded here is simply not checked
            await asyncio.gather(submitting, return_exceptions=True)
            first.signal(signal.SIGKILL)
            assert await first.wait() == -signal.SIGKILL
        finally:
            await first.kill()
        before_restart = {r.headers["webhook-id"] for r in target.received}
        assert len(before_restart) < len(accepted) // 2, "the kill came too late to test anything"
        # More workers after the restart, only to finish the rest sooner.
        queues = '[{"name": "default", "concurrency": 32}]'
        second = await Daemon(env(tmp_path, BRIDGE_QUEUES=queues)).start()
        try:
            deadline = asyncio.get_running_loop().time() + 120
            # (a job whose submission was cut by the cancel may also have been accepted)
            while not {f"cb_{job_id}" for job_id in accepted} <= {
                r.headers["webhook-id"] for r in target.received
            }:
                assert asyncio.get_running_loop().time() < deadline, "callbacks missing"
                await asyncio.sleep(0.1)
            statuses = []
            for job_id in accepted:
                async with session.get(
                    f"{second.url}/api/v1/workflow/status/{job_id}", headers=auth
                ) as response:
                    statuses.append((await response.json())["status"])
            resumed = [r for r in second.records() if "resumed background jobs" in r.get("msg", "")]
        finally:
            await second.kill()
    completed = statuses.count("completed")
    repeats = len(target.received) - len({r.headers["webhook-id"] for r in target.received})
    print(
        f"\naccepted {len(accepted)}, completed {completed}, "
        f"callbacks before the kill {len(before_restart)}, repeated callbacks {repeats}, "
        f"lost {len(accepted) - completed}"
    )
    assert completed == len(accepted)
    assert resumed, "the second daemon did not say what it took up"


async def test_sigterm_leaves_queued_jobs_for_the_next_start(
    tmp_path: Path, target: Target
) -> None:
    auth = headers(tmp_path)
    slow = {**env(tmp_path), "BRIDGE_QUEUES": '[{"name": "default", "concurrency": 1}]'}
    async with aiohttp.ClientSession() as session:
        first = await Daemon(slow).start()
        try:
            accepted = [await submit(session, first, auth, n, target.url()) for n in range(40)]
            first.signal(signal.SIGTERM)
            assert await first.wait() == 0
        finally:
            await first.kill()
        done_before = len(target.received)
        assert done_before < len(accepted)
        second = await Daemon(env(tmp_path)).start()
        try:
            await target.wait_for(len(accepted), timeout=60)
        finally:
            await second.kill()
    assert {r.headers["webhook-id"] for r in target.received} == {f"cb_{j}" for j in accepted}


async def test_sigterm_ends_open_event_streams_instead_of_waiting_for_them(
    tmp_path: Path,
) -> None:
    """An SSE stream never ends by itself; shutdown ends it (the client resumes elsewhere) rather
    than waiting out BRIDGE_SHUTDOWN_TIMEOUT_S, here far longer than the daemon is given."""
    daemon = await Daemon(env(tmp_path, BRIDGE_SHUTDOWN_TIMEOUT_S="300")).start()
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(
                f"{daemon.url}/api/v1/events", headers=headers(tmp_path)
            ) as stream:
                assert (await stream.content.readline()).startswith(b"retry:")
                daemon.signal(signal.SIGTERM)
                rest = await asyncio.wait_for(stream.content.read(), 30)  # EOF: the stream ended
            assert b"event:" not in rest
        assert await daemon.wait(timeout=30) == 0
    finally:
        await daemon.kill()
