"""Stopping tasks for sure, and waiting between retries of a backend.

A cancellation can be lost: on Python 3.11, one that lands while a task is inside
`asyncio.timeout()` as that timeout expires may be swallowed (CPython gh-102780, fixed in 3.12),
and redis-py enters `asyncio.timeout(0)` to check each pooled connection before a command. A
background loop whose cancellation was lost would run on and hold the shutdown, so `stop_tasks`
repeats the request until the tasks have ended.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

RETRY_S = 0.1


def backoff_s(failures: int, first_s: float = 0.1, cap_s: float = 5.0) -> float:
    """How long a loop that talks to a backend waits after its `failures`-th failure in a row:
    doubling from `first_s`, at most `cap_s`."""
    return float(min(first_s * 2 ** (failures - 1), cap_s))


async def stop_tasks(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel the tasks and return once every one has ended (their errors are dropped)."""
    tasks = list(tasks)
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=RETRY_S)
    for task in tasks:
        if not task.cancelled():
            task.exception()  # retrieved: no "never retrieved" warning
