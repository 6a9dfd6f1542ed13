"""The console's overview: this instance's state, its charts, its live part, its budget."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient

from bench.console_pages import run as run_bench
from bridge.settings import Settings
from tests.conftest import token
from tests.console.signin import sign_in
from tests.test_worker import after_callback, job
from tests.webhook_target import Target


@pytest.fixture
def admin_token(settings: Settings) -> str:
    return token(settings, "admin")


async def test_the_overview_shows_callback_hosts_and_their_breakers(
    client: TestClient, settings: Settings, admin_token: str, target: Target
) -> None:
    auth = {"Authorization": f"Bearer {admin_token}"}
    answer = await client.post(
        "/api/v1/workflow/execute", json=job("echo", callback_url=target.url()), headers=auth
    )
    await after_callback(client, auth, (await answer.json())["job_id"], "delivered")
    await sign_in(client, admin_token)
    overview = await client.get("/admin/ui/")
    assert overview.status == 200
    html = await overview.text()
    assert f"127.0.0.1:{target.url().split(':')[2].split('/')[0]}" in html
    assert "Callback hosts and breakers" in html


async def test_the_partial_header_renders_only_the_live_part(
    client: TestClient, admin_token: str
) -> None:
    await sign_in(client, admin_token)
    whole = await (await client.get("/admin/ui/")).text()
    part = await (await client.get("/admin/ui/", headers={"X-Console-Partial": "1"})).text()
    assert "<html" in whole and '<div id="live">' in whole
    assert "<html" not in part and "Queues" in part


async def test_the_overview_fits_its_budget(client: TestClient, admin_token: str) -> None:
    """Issue 20's budget: the overview's HTML and the assets it loads, at most 150 kB."""
    await sign_in(client, admin_token)
    html = await (await client.get("/admin/ui/")).read()
    total = len(html)
    for asset in ("console.css", "console.js"):
        total += len(await (await client.get(f"/admin/ui/static/{asset}")).read())
    assert total <= 150_000, total


async def test_the_overview_charts_the_last_fifteen_minutes(
    client: TestClient, admin_token: str
) -> None:
    await sign_in(client, admin_token)
    html = await (await client.get("/admin/ui/")).text()
    assert "Last 15 minutes" in html
    for caption in ("jobs completed here", "jobs failed here", "queue default: depth"):
        assert f'aria-label="{caption}' in html, caption


async def test_the_pages_benchmark_runs_at_a_tiny_size() -> None:
    rows = await run_bench(["embedded", "redis"], 1200, 2)
    assert {row.backend for row in rows} == {"embedded", "redis"}
    pages = [row for row in rows if not row.page.endswith((".css", ".js"))]
    assert len(pages) == 2 * 11 and all(row.ms and row.size for row in pages)
