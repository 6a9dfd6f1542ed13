"""A real daemon stopped in the middle of background work: nothing accepted is lost; the helpers
that start one. (SIGKILL mid-batch, on both backends: test_backend_conformance.)"""

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
