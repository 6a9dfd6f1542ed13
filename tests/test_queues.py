"""The in-process queue, the router, circuit breakers and retry timing."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp.test_utils import TestClient

from bridge.breaker import Breaker
from bridge.keys import EVENTS, WORKERS
from bridge.queues.base import Entry, QueueFull
from bridge.queues.memory import MemoryQueue
from bridge.retry import retry_after, retry_delay
from bridge.router import QueueConfig, Router, RouteRule
from tests.conftest import ClientFactory
from tests.plugins import sample
from tests.test_worker import job

EXECUTE = "/api/v1/workflow/execute"


async def drain(queue: MemoryQueue) -> list[str]:
    return [(await queue.get()).job_id for _ in range(queue.depth)]


async def test_higher_priority_first_and_fifo_within_a_priority() -> None:
    queue = MemoryQueue("q", max_depth=10, aging_s=3600)
    for job_id, priority in [("a", 1), ("b", 5), ("c", 1), ("d", 9), ("e", 5)]:
        queue.put(Entry(job_id, priority))
    assert await drain(queue) == ["d", "b", "e", "a", "c"]


async def test_waiting_raises_priority_so_nothing_starves() -> None:
    queue = MemoryQueue("q", max_depth=10, aging_s=1.0)
    now = time.monotonic()
    queue.put(Entry("old-low", 0, enqueued_at=now - 10))  # waited 10 s: effectively 10
    queue.put(Entry("new-high", 9, enqueued_at=now))
    assert await drain(queue) == ["old-low", "new-high"]


async def test_full_queue_refuses_unless_forced() -> None:
    queue = MemoryQueue("q", max_depth=1, aging_s=1)
    queue.put(Entry("a", 5))
    with pytest.raises(QueueFull, match="queue 'q' is full"):
        queue.put(Entry("b", 5))
    queue.put(Entry("retry", 5), force=True)
    assert queue.depth == 2


async def test_a_waiting_consumer_gets_the_next_job() -> None:
    queue = MemoryQueue("q", max_depth=10, aging_s=1)
    getter = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    queue.put(Entry("a", 5))
    assert (await asyncio.wait_for(getter, 1)).job_id == "a"


def test_rules_match_in_order() -> None:
    from bridge.router import JobTraits

    rules = (
        RouteRule(queue="mail", processing_type="email_send"),
        RouteRule(queue="bulk", min_items=1000),
        RouteRule(queue="vip", workflow_id=["wf-vip"], min_priority=8),
    )
    router = Router((QueueConfig(name="default"),), rules, {})
    assert router.queue_for(JobTraits("email_send", None, 5, 5000, 10)) == "mail"
    assert router.queue_for(JobTraits("echo", None, 5, 5000, 10)) == "bulk"
    assert router.queue_for(JobTraits("echo", "wf-vip", 9, 1, 10)) == "vip"
    assert router.queue_for(JobTraits("echo", "wf-vip", 5, 1, 10)) == "default"


@pytest.mark.parametrize(
    ("queues", "routes", "message"),
    [
        ('[{"name": "a"}, {"name": "a"}]', "[]", "queue names must be unique"),
        ("[]", '[{"queue": "nope"}]', "route to unknown queue 'nope'"),
        ('[{"name": "a", "overflow_to": "b"}]', "[]", "overflows to unknown queue 'b'"),
        (
            '[{"name": "a", "overflow_to": "b"}, {"name": "b", "overflow_to": "a"}]',
            "[]",
            "round in a circle",
        ),
    ],
)
def test_queue_config_mistakes_stop_start_up(queues: str, routes: str, message: str) -> None:
    from bridge.settings import ConfigError, load_settings

    with pytest.raises(ConfigError, match=message):
        load_settings(environ={"BRIDGE_QUEUES": queues, "BRIDGE_ROUTES": routes})


async def test_queue_threshold_is_published_once_each_way(
    make_client: ClientFactory, auth: dict[str, str]
) -> None:
    client: TestClient = await make_client(
        queues=[{"name": "default", "concurrency": 1, "depth_alert": 2}]
    )
    workers = client.app[WORKERS]
    sample.GATE.clear()
    sample.ENTERED.clear()
    try:
        await client.post(EXECUTE, json=job("blocking"), headers=auth)
        await asyncio.to_thread(sample.ENTERED.wait, 10)
        for _ in range(2):
            await client.post(EXECUTE, json=job("echo"), headers=auth)
        workers.check_thresholds()
        workers.check_thresholds()  # still above: not published again
    finally:
        sample.GATE.set()
    for _ in range(200):
        if workers.queued == 0:
            break
        await asyncio.sleep(0.02)
    workers.check_thresholds()
    events = await client.app[EVENTS].since(0, types=["queue.threshold"])
    assert [e.data["state"] for e in events] == ["above", "below"]
    assert events[0].data["depth"] == 2 and events[0].data["queue"] == "default"
    metrics = await (await client.get("/metrics")).text()
    assert 'bridge_queue_depth{queue="default"} 0.0' in metrics


def test_breaker_opens_after_failures_and_probes_once() -> None:
    breaker = Breaker(failures_to_open=2, reset_s=0.05)
    assert breaker.wait_s() == 0
    breaker.failed()
    assert breaker.state == "closed"
    breaker.failed()
    assert breaker.state == "open" and breaker.wait_s() > 0
    time.sleep(0.06)
    assert breaker.wait_s() == 0  # the probe
    assert breaker.wait_s() > 0  # nobody else while it is out
    breaker.failed()
    assert breaker.state == "open"
    time.sleep(0.06)
    assert breaker.wait_s() == 0
    breaker.succeeded()
    assert breaker.state == "closed"


def test_retry_timing() -> None:
    delays = [retry_delay(n, 1.0, 30.0) for n in range(1, 12) for _ in range(20)]
    assert all(0 <= d <= 30.0 for d in delays)
    assert max(retry_delay(1, 1.0, 30.0) for _ in range(50)) <= 1.0
    assert retry_after("7") == 7.0
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    assert retry_after("soon") is None and retry_after(None) is None


async def test_what_waits_for_a_breaker_wakes_when_it_changes_and_only_then() -> None:
    """Waiters on an open breaker wake when a probe closes it, or when a probe fails (to wait
    for the next); a success while it is closed wakes nothing — a delivery's own back-off is
    not a breaker wait. A probe that never reports is given up after `reset_s`."""
    clock = [0.0]
    breaker = Breaker(failures_to_open=1, reset_s=30, clock=lambda: clock[0])
    breaker.failed()
    waiting = [asyncio.create_task(breaker.until_changed(60)) for _ in range(3)]
    await asyncio.sleep(0.01)
    clock[0] = 30.0
    assert breaker.wait_s() == 0  # the probe
    assert breaker.wait_s() == 30  # the others wait for it
    breaker.failed()  # the probe failed: the breaker opens again, the waiters wait anew
    await asyncio.wait_for(asyncio.gather(*waiting), 1)
    assert breaker.state == "open" and breaker.wait_s() == 30

    waiting = [asyncio.create_task(breaker.until_changed(60)) for _ in range(3)]
    await asyncio.sleep(0.01)
    clock[0] = 60.0
    assert breaker.wait_s() == 0  # the next probe…
    clock[0] = 90.0
    assert breaker.wait_s() == 0  # …never reported: another is let through
    breaker.succeeded()
    await asyncio.wait_for(asyncio.gather(*waiting), 1)
    assert breaker.state == "closed"

    untouched = asyncio.create_task(breaker.until_changed(0.2))
    await asyncio.sleep(0.01)
    breaker.succeeded()  # closed already: not a change
    await asyncio.sleep(0.05)
    assert not untouched.done()
    await untouched
