"""The thread pool: an abandoned call's thread is replaced, up to the bound."""

from __future__ import annotations

import functools
import threading
import time
import weakref
from collections.abc import Iterator
from concurrent.futures import Future

import pytest

from bridge.thread_pool import ThreadPool


def until_running(future: Future[object]) -> None:
    for _ in range(1000):
        if future.running():
            return
        time.sleep(0.01)
    raise AssertionError("the call never started")


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    """Calls that wait on it run until the test ends."""
    event = threading.Event()
    yield event
    event.set()


def test_an_abandoned_call_gives_its_place_to_a_new_thread(gate: threading.Event) -> None:
    pool = ThreadPool(size=1, max_abandoned=1)
    stuck = pool.run(lambda: gate.wait(30), "stuck")
    until_running(stuck)
    waiting = pool.run(lambda: "served", "waiting")
    assert not waiting.done()
    assert pool.abandon(stuck) == "abandoned"
    assert waiting.result(timeout=10) == "served"
    assert pool.status() == {
        "workers": 1,
        "busy": 0,
        "queued": 0,
        "abandoned": 1,
        "max_abandoned": 1,
    }
    gate.set()
    assert stuck.result(timeout=10) is True
    pool.close()


def test_past_the_bound_a_runaway_call_keeps_its_thread(gate: threading.Event) -> None:
    pool = ThreadPool(size=1, max_abandoned=1)
    first = pool.run(lambda: gate.wait(30), "first")
    until_running(first)
    assert pool.abandon(first) == "abandoned"
    second = pool.run(lambda: gate.wait(30), "second")
    until_running(second)
    assert pool.abandon(second) == "kept"
    third = pool.run(lambda: "served", "third")
    assert not third.done() and pool.status()["queued"] == 1  # the pool has no thread left
    gate.set()
    assert third.result(timeout=10) == "served"
    pool.close()


def test_a_queued_call_is_cancelled_and_an_ended_one_left_alone() -> None:
    pool = ThreadPool(size=1, max_abandoned=1)
    gate = threading.Event()
    running = pool.run(lambda: gate.wait(30), "running")
    until_running(running)
    queued = pool.run(lambda: "never", "queued")
    assert pool.abandon(queued) == "cancelled"
    gate.set()
    assert running.result(timeout=10) is True
    assert pool.abandon(running) == "ended"
    assert queued.cancelled()
    pool.close()


class _Batch:
    """Stands for a call's arguments or its result: a whole batch of items."""


def _answer(batch: _Batch) -> _Batch:
    return _Batch()


def test_an_ended_call_keeps_nothing_of_its_arguments_or_result() -> None:
    # Kept until the thread's next call, a batch's items took memory the next request needed
    # and were freed at the start of its run (measured: ~10 ms of a 10,000-item request).
    pool = ThreadPool(size=1, max_abandoned=1)
    argument = _Batch()
    future = pool.run(functools.partial(_answer, argument), "batch")
    result = future.result(timeout=10)
    gone = [weakref.ref(argument), weakref.ref(result)]
    del argument, result, future
    deadline = time.monotonic() + 10
    while any(ref() is not None for ref in gone) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [ref() for ref in gone] == [None, None]
    pool.close()
