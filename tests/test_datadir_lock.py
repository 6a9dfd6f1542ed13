"""One writer per data directory: a second embedded instance on the same BRIDGE_DATA_DIR refuses
to start, naming the directory and the holder's pid; the lock is the OS's, so a crash frees it."""

from __future__ import annotations

import signal
from pathlib import Path

import aiohttp

from tests.daemon import Daemon
from tests.test_cli import daemon_env, run_cli


async def test_a_second_instance_on_a_data_dir_refuses_to_start(tmp_path: Path) -> None:
    env = daemon_env(tmp_path, 5)
    first = await Daemon(env).start()
    try:
        assert first.process is not None
        second = run_cli("serve", env={**env, "BRIDGE_PORT": "0"})
        assert second.returncode == 2, second.stdout + second.stderr
        assert second.stderr.count("\n") == 1, second.stderr
        assert second.stderr.startswith("n8n-bridge: error: BRIDGE_DATA_DIR: ")
        assert str(tmp_path) in second.stderr
        assert f"pid {first.process.pid}" in second.stderr
        async with aiohttp.ClientSession() as session, session.get(first.url + "/health") as ok:
            assert ok.status == 200  # the first one went on, untouched
    finally:
        first.signal(signal.SIGKILL)  # a crash: the OS lets go of the lock
        await first.wait()
    async with Daemon(env) as again:
        assert again.process is not None and again.process.returncode is None
        async with aiohttp.ClientSession() as session, session.get(again.url + "/health") as ok:
            assert ok.status == 200
