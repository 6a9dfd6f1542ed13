"""The last 15 minutes in memory (bridge/history.py) and their charts (bridge/console/charts.py)."""

from __future__ import annotations

import asyncio
import math
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from bridge.console.charts import sparkline
from bridge.history import MAX_QUEUES, OTHER, SAMPLES, History
from bridge.keys import HISTORY, METRICS, WORKERS
from tests.conftest import ClientFactory
from tests.plugins import sample
from tests.test_worker import EXECUTE, job
from tests.webhook_target import Target

SVG = "{http://www.w3.org/2000/svg}"
Series = dict[str, list[tuple[float, float]]]


def total(series: Series, name: str) -> float:
    return sum(value for _, value in series.get(name, []))


async def until(history: History, holds: Callable[[Series], bool], bound_s: float = 20) -> Series:
    """The history's series once `holds` is true of them (bounded by the clock: a loaded
    machine runs slowly)."""
    deadline = time.monotonic() + bound_s
    while time.monotonic() < deadline:
        series = history.series()
        if holds(series):
            return series
        await asyncio.sleep(0.05)
    raise AssertionError(f"not seen within {bound_s} s: {history.series()}")


def sampling(client: TestClient) -> History:
    """A history of the app's workers sampled every 50 ms (the app's own samples every 10 s)."""
    history = History(client.app[WORKERS], client.app[METRICS], interval_s=0.05)
    history.start()
    return history


async def submit(client: TestClient, auth: dict[str, str], body: dict[str, object]) -> None:
    response = await client.post(EXECUTE, json=body, headers=auth)
    assert response.status == 202, await response.text()


async def test_samples_show_the_backlog_and_what_ended(
    make_client: ClientFactory, auth: dict[str, str], target: Target
) -> None:
    client = await make_client(queues=[{"name": "default", "concurrency": 1}])
    history = sampling(client)
    target.by_path = {"/gone": [404]}
    sample.GATE.clear()
    sample.ENTERED.clear()
    try:
        await submit(client, auth, job("blocking"))
        await asyncio.to_thread(sample.ENTERED.wait, 10)
        for _ in range(2):
            await submit(client, auth, job("echo"))
        backlog = await until(history, lambda s: s["depth:default"][-1][1] == 2)
        assert backlog["in_flight"][-1][1] == 1
        await until(history, lambda s: s["oldest_wait_s"][-1][1] > 0)
    finally:
        sample.GATE.set()
    await submit(client, auth, job("crash"))
    ran = await client.post(EXECUTE, json=job("echo", mode="sync"), headers=auth)
    assert ran.status == 200  # sync requests are jobs too
    await submit(client, auth, job("echo", callback_url=target.url("/ok")))
    await submit(client, auth, job("echo", callback_url=target.url("/gone")))
    expected = {"completed": 6, "failed": 1, "callbacks_delivered": 1, "callbacks_failed": 1}
    await until(history, lambda s: all(total(s, k) >= n for k, n in expected.items()))
    await asyncio.sleep(0.3)  # a few samples more: nothing counted twice
    series = history.series()
    await history.stop()
    assert {k: total(series, k) for k in expected} == expected
    assert series["depth:default"][-1][1] == 0 and series["in_flight"][-1][1] == 0
    assert history.per_minute("completed") == 6


async def test_each_instance_counts_the_jobs_it_ran(
    make_client: ClientFactory, backend: str, tmp_path: Path, auth: dict[str, str]
) -> None:
    """On Redis, where instances share the queues and the events, the jobs are counted once:
    each by the instance that ran it."""
    first = await make_client(data_dir=tmp_path / "first")
    second = await make_client(data_dir=tmp_path / "second") if backend == "redis" else first
    histories = [sampling(first)] + ([sampling(second)] if second is not first else [])
    for n, client in enumerate([first, second] * 5):
        await submit(client, auth, job("sleep", parameters={"seconds": 0.02}, workflow_id=f"w{n}"))
    deadline = time.monotonic() + 20
    while sum(total(h.series(), "completed") for h in histories) < 10:
        assert time.monotonic() < deadline, [h.series()["completed"] for h in histories]
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)
    assert sum(total(h.series(), "completed") for h in histories) == 10
    for history in histories:
        await history.stop()


async def test_the_deepest_queues_are_charted_and_memory_is_bounded(
    make_client: ClientFactory, auth: dict[str, str]
) -> None:
    queues = [{"name": f"q{n:02}", "concurrency": 1} for n in range(MAX_QUEUES + 2)]
    last = queues[-1]["name"]
    client = await make_client(queues=queues, routes=[{"queue": last, "workflow_id": "wf-deep"}])
    history = History(client.app[WORKERS], client.app[METRICS])
    sample.GATE.clear()
    sample.ENTERED.clear()
    try:
        await submit(client, auth, job("blocking", workflow_id="wf-deep"))
        await asyncio.to_thread(sample.ENTERED.wait, 10)
        await submit(client, auth, job("echo", workflow_id="wf-deep"))
        taken = history.record()
    finally:
        sample.GATE.set()
    # the last configured queue, the only one with a backlog, is charted; the others summed
    assert taken.depths[last] == 1 and len(taken.depths) == MAX_QUEUES + 1
    assert taken.depths[OTHER] == 0 and sum(taken.depths.values()) == 1
    for _ in range(SAMPLES + 5):
        history.record()
    series = history.series()
    assert {len(points) for points in series.values()} == {SAMPLES}
    assert len(series) == MAX_QUEUES + 1 + 6  # depths, in flight, oldest wait, 4 tallies


async def test_the_app_keeps_a_history_from_start_up(client: TestClient) -> None:
    series = client.app[HISTORY].series()
    assert series["depth:default"][0][1] == 0 and series["completed"][0][1] == 0
    assert abs(series["in_flight"][0][0] - time.time()) < 60
    with pytest.raises(KeyError):
        client.app[HISTORY].per_minute("in_flight")


# ---- sparklines --------------------------------------------------------------------------------


def parsed(svg: str) -> ET.Element:
    """The chart as XML (it must be well formed), with no inline style anywhere (the CSP)."""
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg" and root.get("role") == "img"
    assert all(element.get("style") is None for element in root.iter())
    assert not list(root.iter(f"{SVG}style"))
    title = root.find(f"{SVG}title")
    assert title is not None and title.text == root.get("aria-label")
    return root


def texts(root: ET.Element) -> list[str]:
    return [element.text or "" for element in root.iter(f"{SVG}text")]


def test_a_sparkline_shows_the_latest_value_and_the_max() -> None:
    now = time.time()
    root = parsed(sparkline([(now - 20, 1), (now - 10, 12.5), (now, 3)], label="depth: bulk"))
    assert root.get("aria-label") == "depth: bulk: latest 3, max 12.5"
    assert texts(root) == ["max 12.5", "3"]
    line = root.find(f"{SVG}polyline")
    assert line is not None and line.get("class") == "spark-line"
    xs, ys = zip(
        *(map(float, p.split(",")) for p in (line.get("points") or "").split()), strict=True
    )
    assert list(xs) == sorted(xs) and min(xs) >= 0 and max(xs) <= 240
    assert ys[1] == min(ys) and max(ys) <= 48  # the highest value is drawn highest
    assert root.find(f"{SVG}line[@class='spark-axis']") is not None


def test_a_hostile_label_is_escaped() -> None:
    hostile = '"><script>alert(1)</script><x a="'
    svg = sparkline([(1.0, 1.0)], label=hostile)
    assert "<script" not in svg
    root = parsed(svg)
    assert root.get("aria-label", "").startswith(hostile)
    assert not list(root.iter("script")) and not list(root.iter(f"{SVG}script"))


@pytest.mark.parametrize(
    ("points", "shown"),
    [
        ([], ["no data yet"]),
        ([(5.0, math.nan)], ["no data yet"]),
        ([(5.0, 7.0)], ["max 7", "7"]),
        ([(1.0, 0.0), (2.0, 0.0), (3.0, 0.0)], ["max 0", "0"]),
        ([(1.0, 4.0), (2.0, 4.0)], ["max 4", "4"]),
        ([(1.0, 0.25), (2.0, 1234.5)], ["max 1234", "1234"]),
    ],
)
def test_empty_single_and_flat_series_draw(
    points: list[tuple[float, float]], shown: list[str]
) -> None:
    root = parsed(sparkline(points, width=100, height=30, label="failed"))
    assert texts(root) == shown
    assert root.get("width") == "100" and root.get("viewBox") == "0 0 100 30"
    for line in root.iter(f"{SVG}polyline"):
        for point in (line.get("points") or "").split():
            x, y = map(float, point.split(","))
            assert 0 <= x <= 100 and 0 <= y <= 30
