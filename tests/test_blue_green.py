"""The blue-green switch, live: a real HAProxy (the shipped config on loopback), two real bridge
daemons — blue and green — on one real Redis, and clients sending sync and background requests
through HAProxy the whole time, while scripts/blue-green-switch.sh moves the traffic.

- A switch under load fails no request, and background jobs accepted before it all complete
  after blue has stopped.
- A new colour that turns unhealthy while watched is rolled back within 5 s, still with no
  failed request.
- A switch interrupted half-way is finished by the next one.
- Negative control: the same flip without draining (the old colour stopped the moment traffic
  moves) does show failed requests, so the load would see them if the switch caused any.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.daemon import ROOT, Daemon
from tests.haproxy_server import HAProxy
from tests.smtp_server import free_port

SCRIPT = ROOT / "scripts" / "blue-green-switch.sh"
API_KEY = "blue-green-test-key-0123456789"
AUTH = {"X-API-Key": API_KEY}
EXECUTE = "/api/v1/workflow/execute"
CLIENTS = 8


def colour_env(tmp_path: Path, colour: str, redis_url: str) -> dict[str, str]:
    return {
        "BRIDGE_COLOR": colour,
        "BRIDGE_DATA_DIR": str(tmp_path / colour),
        "BRIDGE_REDIS_URL": redis_url,
        "BRIDGE_API_KEYS": API_KEY,
        "BRIDGE_API_KEY_SCOPES": "execute,status,admin",
        "BRIDGE_PROCESSORS": "tests.plugins.sample",
        "BRIDGE_QUEUES": '[{"name": "default", "concurrency": 4}]',
        "BRIDGE_ACCESS_LOG": "false",
    }


@dataclass
class Stack:
    blue: Daemon
    green: Daemon
    haproxy: HAProxy
    tmp_path: Path

    def daemon(self, colour: str) -> Daemon:
        return self.blue if colour == "blue" else self.green


@pytest.fixture
async def stack(tmp_path: Path, redis_url: str) -> AsyncIterator[Stack]:
    async with running_stack(tmp_path, redis_url) as stack:
        yield stack


@contextlib.asynccontextmanager
async def running_stack(tmp_path: Path, redis_url: str, **env: str) -> AsyncIterator[Stack]:
    """Blue live behind HAProxy, green in maint; `env` added to both colours'."""
    blue, green = await asyncio.gather(
        Daemon({**colour_env(tmp_path, "blue", redis_url), **env}).start(),
        Daemon({**colour_env(tmp_path, "green", redis_url), **env}).start(),
    )
    haproxy = HAProxy(
        tmp_path / "haproxy",
        blue=blue.url.removeprefix("http://"),
        green=green.url.removeprefix("http://"),
    )
    try:
        await haproxy.start()
        await until(lambda s: s["blue"]["status"] == "UP", haproxy)
        yield Stack(blue, green, haproxy, tmp_path)
    finally:
        await haproxy.stop()
        await asyncio.gather(blue.kill(), green.kill())


async def until(check: Any, haproxy: HAProxy, timeout: float = 15) -> dict[str, dict[str, str]]:
    """Wait until `check(servers)` holds for HAProxy's view of the servers."""
    deadline = time.monotonic() + timeout
    while True:
        servers = await haproxy.servers()
        if check(servers):
            return servers
        if time.monotonic() > deadline:
            raise AssertionError(f"HAProxy never got there: {servers}")
        await asyncio.sleep(0.1)


@dataclass
class Load:
    """Clients calling through HAProxy as n8n would: sync runs (some taking 0.2 s, so requests
    are in flight at every moment of a switch) and background submissions with idempotency keys.
    Every answer that is not 2xx, and every connection error, is a failure."""

    url: str
    ok: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> Load:
        self._session = aiohttp.ClientSession(self.url, headers=AUTH)
        self._tasks = [asyncio.create_task(self._client(n)) for n in range(CLIENTS)]
        return self

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        await self._session.close()

    @property
    def sent(self) -> int:
        return sum(self.ok.values()) + len(self.failures)

    async def _client(self, n: int) -> None:
        for i in itertools.count():
            if self._stop.is_set():
                return
            kind, body = self._request(n, i)
            try:
                async with self._session.post(EXECUTE, json=body) as answer:
                    text = await answer.text()
                    if 200 <= answer.status < 300:
                        self.ok[kind] += 1
                    else:
                        self.failures.append(f"{kind}: HTTP {answer.status} {text[:200]}")
            except aiohttp.ClientError as exc:
                self.failures.append(f"{kind}: {type(exc).__name__}: {exc}")

    @staticmethod
    def _request(n: int, i: int) -> tuple[str, dict[str, Any]]:
        item = [{"json": {"client": n, "i": i}}]
        match i % 3:
            case 0:
                return "sync-slow", {
                    "processing_type": "sleep",
                    "mode": "sync",
                    "parameters": {"seconds": 0.2},
                    "items": item,
                }
            case 1:
                return "sync", {"processing_type": "echo", "mode": "sync", "items": item}
            case _:
                return "async", {
                    "processing_type": "echo",
                    "mode": "async",
                    "idempotency_key": f"load-{n}-{i}-{time.monotonic_ns()}",
                    "items": item,
                }


class Switch:
    """scripts/blue-green-switch.sh as an operator runs it, its log read as it comes."""

    def __init__(self, stack: Stack, *args: str, watch_s: float) -> None:
        self.args = args
        self.env = {
            **os.environ,
            "HAPROXY_ADMIN_SOCKET": str(stack.haproxy.socket),
            "BLUE_URL": stack.blue.url,
            "GREEN_URL": stack.green.url,
            "BRIDGE_ADMIN_API_KEY": API_KEY,
            "SWITCH_WATCH_S": str(watch_s),
            "SWITCH_DRAIN_TIMEOUT_S": "60",
            "SWITCH_LOCK_FILE": str(stack.tmp_path / "switch.lock"),
        }
        self.lines: list[str] = []
        self._seen: dict[str, asyncio.Event] = {}

    async def start(self) -> Switch:
        self.process = await asyncio.create_subprocess_exec(
            "bash",
            str(SCRIPT),
            *self.args,
            env=self.env,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # its own process group, as in a terminal
            # Ctrl-C as in a terminal: a shell started with SIGINT ignored (a CI runner or a
            # `cmd &` without job control hands that down) cannot trap it at all.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self.process.stderr is not None
        async for raw in self.process.stderr:
            line = raw.decode().rstrip()
            self.lines.append(line)
            for text, event in self._seen.items():
                if text in line:
                    event.set()

    async def seen(self, text: str, timeout: float = 60) -> None:
        event = self._seen.setdefault(text, asyncio.Event())
        if any(text in line for line in self.lines):
            return
        await asyncio.wait_for(event.wait(), timeout)

    async def wait(self, timeout: float = 120) -> int:
        code = await asyncio.wait_for(self.process.wait(), timeout)
        await self._reader
        return code

    @property
    def log(self) -> str:
        return "\n".join(self.lines)


async def run_switch(stack: Stack, *args: str, watch_s: float = 3) -> tuple[int, str]:
    switch = await Switch(stack, *args, watch_s=watch_s).start()
    return await switch.wait(), switch.log


async def submit_jobs(url: str, count: int) -> list[str]:
    async with aiohttp.ClientSession(url, headers=AUTH) as session:
        ids = []
        for n in range(count):
            body = {
                "processing_type": "sleep",
                "mode": "async",
                "idempotency_key": f"before-switch-{n}",
                "parameters": {"seconds": 0.4},
                "items": [{"json": {"n": n}}],
            }
            async with session.post(EXECUTE, json=body) as answer:
                assert answer.status == 202, await answer.text()
                ids.append((await answer.json())["job_id"])
        return ids


async def final_statuses(url: str, ids: list[str], timeout: float = 60) -> Counter[str]:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession(url, headers=AUTH) as session:
        while True:
            statuses: Counter[str] = Counter()
            for job_id in ids:
                async with session.get(f"/api/v1/workflow/status/{job_id}") as answer:
                    statuses[(await answer.json())["status"]] += 1
            if statuses["completed"] + statuses["failed"] == len(ids):
                return statuses
            if time.monotonic() > deadline:
                return statuses
            await asyncio.sleep(0.2)


async def test_switch_under_load_fails_no_request_and_loses_no_job(stack: Stack) -> None:
    jobs = await submit_jobs(stack.haproxy.url, 24)  # blue runs 4 at a time: most still queued
    load = Load(stack.haproxy.url).start()
    await asyncio.sleep(1)
    code, log = await run_switch(stack, "switch", "green")
    await asyncio.sleep(0.5)
    await load.stop()

    assert code == 0, log
    for step in ["step 1:", "step 2:", "step 3:", "step 4:", "step 5:", "step 6:", "step 7:"]:
        assert step in log, log
    servers = await stack.haproxy.servers()
    assert (servers["green"]["status"], servers["blue"]["status"]) == ("UP", "MAINT")
    assert int(servers["blue"]["stot"]) > 0 and int(servers["green"]["stot"]) > 0
    assert load.failures == [], load.failures[:5]
    assert load.sent > 100 and set(load.ok) == {"sync-slow", "sync", "async"}
    assert "green" in (stack.haproxy.run_dir / "server-state").read_text()

    # Blue goes away as `docker compose down` stops it; green finishes what was queued.
    stack.blue.signal(signal.SIGTERM)
    assert await stack.blue.wait() == 0
    statuses = await final_statuses(stack.haproxy.url, jobs)
    print(f"jobs accepted before the switch: {len(jobs)}, {dict(statuses)}; load: {load.ok}")
    assert statuses == Counter(completed=len(jobs))

    # The operator's way back: `rollback` makes blue live again (here: blue was stopped, so the
    # health gate refuses and nothing changes).
    code, log = await run_switch(stack, "rollback")
    assert code == 2 and "blue is not reachable" in log, log
    servers = await stack.haproxy.servers()
    assert (servers["green"]["status"], servers["blue"]["status"]) == ("UP", "MAINT")


async def test_unhealthy_new_colour_is_rolled_back_within_5_s(stack: Stack) -> None:
    load = Load(stack.haproxy.url).start()
    await asyncio.sleep(0.5)
    switch = await Switch(stack, "switch", "green", watch_s=20).start()
    await switch.seen("step 6: watching green")
    async with (
        aiohttp.ClientSession(stack.green.url, headers=AUTH) as session,
        session.post("/admin/drain") as answer,  # green's /ready turns 503
    ):
        assert answer.status == 200
    broken = time.monotonic()
    code = await switch.wait()
    rolled_back_in = time.monotonic() - broken
    await asyncio.sleep(0.5)
    await load.stop()

    print(f"rolled back {rolled_back_in:.2f} s after green turned unhealthy; load: {load.ok}")
    assert code == 4, switch.log
    assert "ROLLBACK: green is not healthy" in switch.log
    assert rolled_back_in < 5, switch.log
    servers = await stack.haproxy.servers()
    assert (servers["blue"]["status"], servers["green"]["status"]) == ("UP", "MAINT")
    assert load.failures == [], load.failures[:5]
    assert load.sent > 50
    async with (
        aiohttp.ClientSession(stack.haproxy.url) as session,
        session.get("/health") as answer,
    ):
        assert (await answer.json())["color"] == "blue"

    # Green fixed, the operator's `rollback` undoes the rollback: green (drained by it) is
    # asked to serve again, gated, checked, and made live.
    code, log = await run_switch(stack, "rollback", watch_s=1)
    assert code == 0 and "rollback: back to green" in log, log
    servers = await stack.haproxy.servers()
    assert (servers["green"]["status"], servers["blue"]["status"]) == ("UP", "MAINT")


async def test_a_switch_stopped_half_way_is_finished_by_the_next(stack: Stack) -> None:
    """Interrupted right after the flip (green live, blue draining): running the switch again
    must finish it — never take the colour that serves out of rotation."""
    switch = await Switch(stack, "switch", "green", watch_s=20).start()
    await switch.seen("step 3:")
    # Ctrl-C: the terminal signals the whole group. (SIGINT to bash alone, while it waits for
    # a curl or sleep that does not die of it, is taken as handled by the child and ignored.)
    os.killpg(switch.process.pid, signal.SIGINT)
    assert await switch.wait() == 130, switch.log
    assert "INTERRUPTED" in switch.log
    load = Load(stack.haproxy.url).start()
    code, log = await run_switch(stack, "switch", "green", watch_s=1)
    await load.stop()
    assert code == 0 and "finishing the switch" in log, log
    servers = await stack.haproxy.servers()
    assert (servers["green"]["status"], servers["blue"]["status"]) == ("UP", "MAINT")
    assert load.failures == [], load.failures[:5]


async def test_a_callback_to_a_dead_url_does_not_hold_the_switch(
    tmp_path: Path, redis_url: str
) -> None:
    """One n8n resume URL is gone: blue's callback to it waits for its next attempt, for
    minutes. It is in blue's outbox, so the switch ends (0, not 5 at the drain bound); once blue
    has stopped, green takes the callback over and sends it."""
    port = free_port()  # nothing listens there until the receiver below comes back
    slow_retries = {
        "BRIDGE_RETRY_BASE_S": "600",
        "BRIDGE_BREAKER_FAILURES": "1",
        "BRIDGE_BREAKER_RESET_S": "600",
        "BRIDGE_REDIS_CLAIM_IDLE_S": "1",
    }
    async with running_stack(tmp_path, redis_url, **slow_retries) as stack:
        body = {
            "processing_type": "echo",
            "mode": "async",
            "callback_url": f"http://127.0.0.1:{port}/webhook-waiting/7",
            "items": [{"json": {}}],
        }
        async with aiohttp.ClientSession(headers=AUTH) as session:
            # Green, in maint, is left drained as a switch leaves it: blue runs the job.
            async with session.post(f"{stack.green.url}/admin/drain") as answer:
                assert answer.status == 200
            async with session.post(f"{stack.haproxy.url}{EXECUTE}", json=body) as answer:
                assert answer.status == 202, await answer.text()
                job_id = (await answer.json())["job_id"]
            for _ in range(200):
                async with session.get(f"{stack.blue.url}/admin/status") as answer:
                    deliveries = (await answer.json())["deliveries"]
                if deliveries.get("waiting") == 1:
                    break
                await asyncio.sleep(0.05)
            assert deliveries["waiting"] == 1, deliveries

            code, log = await run_switch(stack, "switch", "green", watch_s=1)
            assert code == 0, log
            assert "blue keeps 1 webhook(s) waiting for a retry until it stops" in log, log

            received: list[str] = []

            async def resume(request: web.Request) -> web.Response:
                received.append(request.headers["webhook-id"])
                return web.json_response({"message": "Workflow was started"})

            receiver = web.Application()
            receiver.router.add_post("/webhook-waiting/7", resume)
            server = TestServer(receiver, host="127.0.0.1", port=port)
            await server.start_server()
            try:
                stack.blue.signal(signal.SIGTERM)
                assert await stack.blue.wait() == 0
                for _ in range(300):
                    async with session.get(
                        f"{stack.haproxy.url}/api/v1/workflow/status/{job_id}"
                    ) as answer:
                        callback = (await answer.json())["callback"]
                    if callback["state"] == "delivered":
                        break
                    await asyncio.sleep(0.1)
            finally:
                await server.close()
        assert callback["state"] == "delivered" and callback["attempts"] == 2, callback
        assert len(received) == 1


async def test_negative_control_a_flip_without_draining_fails_requests(stack: Stack) -> None:
    load = Load(stack.haproxy.url).start()
    await asyncio.sleep(1)
    await stack.haproxy.command(
        "set server bridge/green state ready; set server bridge/blue state maint"
    )
    await stack.blue.kill()  # stopped the moment traffic moves, as `docker kill` would
    await asyncio.sleep(1)
    await load.stop()

    print(f"without draining: {len(load.failures)} failed of {load.sent}: {load.failures[:3]}")
    assert load.failures, "the load saw no failure: it could not see a bad switch either"
    assert load.ok["sync"] > 0  # green served the rest


async def run_script(tmp_path: Path, *args: str) -> tuple[int, str, str]:
    """The script with nothing to reach: a socket and colours that are not there. (exit code,
    stdout, stderr)."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")},
        "HAPROXY_ADMIN_SOCKET": str(tmp_path / "no-such.sock"),
        "BLUE_URL": "http://127.0.0.1:9",
        "GREEN_URL": "http://127.0.0.1:9",
        "SWITCH_LOCK_FILE": str(tmp_path / "switch.lock"),
    }
    process = await asyncio.create_subprocess_exec(
        "bash",
        str(SCRIPT),
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


@pytest.mark.parametrize("flag", ["--help", "-h"])
async def test_help_prints_the_usage_and_touches_nothing(tmp_path: Path, flag: str) -> None:
    code, stdout, stderr = await run_script(tmp_path, flag)
    assert (code, stderr) == (0, "")
    assert stdout.startswith("Blue-green switch of n8n-bridge behind HAProxy")
    assert stdout.endswith("See docs/operations.md (blue-green).\n")  # the whole header
    for text in ("switch <blue|green>", "rollback", "status", "HAPROXY_ADMIN_SOCKET", "Exit codes"):
        assert text in stdout
    assert not (tmp_path / "switch.lock").exists()


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        ((), "no command"),
        (("bogus",), "unknown command 'bogus'"),
        (("switch",), "switch needs a colour: blue or green"),
        (("switch", "purple"), "switch needs a colour: blue or green"),
        (("switch", "green", "now"), "switch needs a colour: blue or green"),
        (("status", "blue"), "status takes no argument"),
        (("rollback", "green"), "rollback takes no argument"),
    ],
)
async def test_a_wrong_call_prints_the_usage_before_looking_at_anything(
    tmp_path: Path, args: tuple[str, ...], reason: str
) -> None:
    """Usage errors exit 1, as the script's table of exit codes says: 2 is a failed health gate."""
    code, stdout, stderr = await run_script(tmp_path, *args)
    assert code == 1
    assert stdout == ""
    assert stderr.startswith(f"usage: {SCRIPT} switch <blue|green> | rollback | status")
    assert reason in stderr and "--help" in stderr
    assert "socket" not in stderr  # it did not get that far
    assert not (tmp_path / "switch.lock").exists()
