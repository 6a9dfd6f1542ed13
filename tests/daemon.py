"""A real `n8n-bridge serve` process for tests: started on a free port, its JSON log collected."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
LISTENING = re.compile(r"listening on (http://[\w.:\[\]-]+)")


class Daemon:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.process: asyncio.subprocess.Process | None = None
        self.lines: list[str] = []
        self.url = ""
        self._reader: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def start(self, timeout: float = 30) -> Daemon:
        env = {**os.environ, "BRIDGE_PORT": "0", "PYTHONPATH": str(ROOT), **self.env}
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bridge",
            "serve",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
            cwd=ROOT,
        )
        self._reader = asyncio.create_task(self._read())
        waiter = asyncio.create_task(self._ready.wait())
        exited = asyncio.create_task(self.process.wait())
        await asyncio.wait({waiter, exited}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        exited.cancel()
        if not self._ready.is_set():
            await self.kill()
            raise RuntimeError("bridge did not start:\n" + "\n".join(self.lines[-30:]))
        return self

    async def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        async for raw in self.process.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            self.lines.append(line)
            match = LISTENING.search(line)
            if match and not self._ready.is_set():
                self.url = match[1]
                self._ready.set()

    def records(self) -> list[dict[str, Any]]:
        """The JSON log lines so far."""
        found = []
        for line in self.lines:
            try:
                found.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                continue
        return found

    def signal(self, signum: int = signal.SIGTERM) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    async def wait(self, timeout: float = 60) -> int:
        assert self.process is not None
        code = await asyncio.wait_for(self.process.wait(), timeout)
        if self._reader is not None:
            await self._reader
        return code

    async def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        if self._reader is not None:
            await self._reader

    async def __aenter__(self) -> Daemon:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.kill()
