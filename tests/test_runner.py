"""The runner's thread pool against work that does not end: a real daemon keeps answering ordinary
requests while twice its pool's size of hostile requests run past their deadlines."""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from pathlib import Path
from typing import Any

import aiohttp

from tests.daemon import Daemon

API_KEY = "runner-api-key-0123456789abcdef"
AUTH = {"X-API-Key": API_KEY}
EXECUTE = "/api/v1/workflow/execute"
THREADS = 3
HOSTILE_TIMEOUT_S = 1.0

# Requests that would hold a worker thread long past their deadline. Each kind is sent in turn
# until there are twice the pool's size of them; add a kind here to hold it to the same bound.
HOSTILE: list[dict[str, Any]] = [
    # A user's plain processor that loops, ignoring ctx.deadline: its thread cannot be stopped.
    {"processing_type": "spin", "parameters": {"seconds": 600}},
    # Templates: the sandbox ends them at the deadline, whatever they loop over.
    {
        "processing_type": "template_render",
        "parameters": {
            "template": "{% set s = 'x' * 99999 %}"
            "{% for i in range(99999) %}{{ s|wordwrap(1)|length }}{% endfor %}"
        },
    },
    {
        "processing_type": "template_render",
        "parameters": {
            "template": "{% for i in range(99999) %}{% for j in range(99999) %}"
            "{% set k = i * j %}{% endfor %}{% endfor %}"
        },
    },
    # Schemas: a backtracking pattern (matched with a timeout, the GIL released), and millions
    # of keyword checks on one item (each checks the deadline).
    {
        "processing_type": "validation",
        "parameters": {"schema": {"properties": {"s": {"pattern": "^(a|aa)+$"}}}},
        "items": [{"json": {"s": "a" * 5000 + "b"}}],
    },
    {
        "processing_type": "validation",
        "parameters": {
            "schema": {
                "properties": {
                    "n": {
                        "items": {
                            "anyOf": [
                                *({"type": "string", "minLength": i} for i in range(99)),
                                {"type": "integer"},
                            ]
                        }
                    }
                }
            }
        },
        "items": [{"json": {"n": list(range(100_000))}}],
    },
]
ORDINARY = {
    "processing_type": "template_render",
    "parameters": {"template": "Hello {{ name }}"},
    "items": [{"json": {"name": "Ada"}}],
}


async def post(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> tuple[int, float]:
    """The answer's status and how long it took."""
    started = time.monotonic()
    async with session.post(url + EXECUTE, json=body, headers=AUTH) as response:
        answer = await response.json()
        if body is ORDINARY and response.status == 200:
            assert answer["items"][0]["json"]["rendered"] == "Hello Ada", answer
        return response.status, time.monotonic() - started


async def test_runaway_work_does_not_take_the_thread_pool(tmp_path: Path) -> None:
    env = {
        "BRIDGE_DATA_DIR": str(tmp_path / "data"),
        "BRIDGE_API_KEYS": API_KEY,
        "BRIDGE_API_KEY_SCOPES": "execute,status,admin",
        "BRIDGE_PROCESSORS": "tests.plugins.sample",
        "BRIDGE_THREAD_WORKERS": str(THREADS),
        "BRIDGE_ACCESS_LOG": "false",
    }
    # Each request gives up well before the runaway work would end by itself.
    timeout = aiohttp.ClientTimeout(total=HOSTILE_TIMEOUT_S + 20)
    async with Daemon(env) as daemon, aiohttp.ClientSession(timeout=timeout) as session:
        status, normal_s = await post(session, daemon.url, ORDINARY)
        assert status == 200
        # The first half takes every thread; the second half waits, then gets the threads the
        # first half leaves at its deadline (or the replacements of those that do not end).
        timeouts = [HOSTILE_TIMEOUT_S] * THREADS + [2 * HOSTILE_TIMEOUT_S] * THREADS
        bodies = [
            {"items": [{"json": {}}], **kind, "timeout_s": timeout_s}
            for kind, timeout_s in zip(itertools.cycle(HOSTILE), timeouts, strict=False)
        ]
        hostile = [asyncio.create_task(post(session, daemon.url, body)) for body in bodies]
        await asyncio.sleep(0.2)
        # Sent while the pool is taken: it waits for the hostile ones' deadlines, not past them.
        status, during_s = await post(session, daemon.url, ORDINARY)
        assert status == 200
        assert during_s < max(timeouts) + 8, f"{during_s:.1f} s"
        for (status, took_s), timeout_s in zip(
            await asyncio.gather(*hostile), timeouts, strict=True
        ):
            assert status == 504
            assert took_s < timeout_s + 8, f"{took_s:.1f} s"
        # The runaway user processors still run; ordinary work answers in its usual time
        # (generous: this 2-core machine is shared, and those threads take turns at the GIL).
        for _ in range(5):
            status, after_s = await post(session, daemon.url, ORDINARY)
            assert status == 200
            assert after_s < max(3.0, 20 * normal_s), f"{after_s:.2f} s, normally {normal_s:.3f}"
        async with session.get(daemon.url + "/admin/status", headers=AUTH) as response:
            threads = (await response.json())["threads"]
        # The spinning ones were replaced; the templates and schemas ended at their deadline.
        could_overrun = sum(1 for b in bodies if b["processing_type"] == "spin")
        assert 1 <= threads["abandoned"] <= could_overrun, threads
        assert threads["workers"] == THREADS
        async with session.get(daemon.url + "/metrics") as response:
            metrics = await response.text()
        gauge = re.search(r"^bridge_thread_pool_abandoned (\S+)$", metrics, re.M)
        assert gauge is not None and 1 <= float(gauge[1]) <= could_overrun, metrics
        abandoned = [r for r in daemon.records() if r.get("msg", "").startswith("abandoned")]
        assert abandoned and abandoned[0]["processor"] == "spin", abandoned
