"""Stored URLs are shown redacted everywhere — status, events, dead letters, breakers, logs,
error texts — while the bridge itself still calls the complete URL.

Each test gives the bridge a URL with a password in its userinfo and a capability in its query
(an n8n 2.x resume URL's `?signature=`) and looks for either where that URL is shown.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from bridge.settings import Settings
from tests.conftest import SECRET, ClientFactory, token
from tests.daemon import Daemon
from tests.test_admin import dead_letters
from tests.test_events import read_events
from tests.test_worker import after_callback, job
from tests.webhook_target import Target

EXECUTE = "/api/v1/workflow/execute"
PASSWORD = "hunter2-password"
SIGNATURE = "s3cr3t-signature"
SECRETS = (PASSWORD, SIGNATURE)


def secret_url(target: Target, path: str = "/webhook-waiting/7") -> str:
    """The target's URL with a password and a resume signature."""
    plain = target.url(path)
    return plain.replace("http://", f"http://n8n:{PASSWORD}@") + f"?signature={SIGNATURE}"


def shown(target: Target, path: str = "/webhook-waiting/7") -> str:
    return target.url(path).replace("http://", "http://***@") + "?***"


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, text


def admin(settings: Settings) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(settings, 'admin')}"}


async def submit(client: TestClient, auth: dict[str, str], url: str, **extra: Any) -> str:
    response = await client.post(EXECUTE, json=job("echo", callback_url=url, **extra), headers=auth)
    assert response.status == 202, await response.text()
    return str((await response.json())["job_id"])


async def test_job_status_shows_the_callback_url_redacted_and_calls_it_complete(
    client: TestClient, auth: dict[str, str], target: Target
) -> None:
    job_id = await submit(client, auth, secret_url(target))
    done = await after_callback(client, auth, job_id, "delivered")
    assert done["callback"]["url"] == shown(target)
    [call] = target.received  # the stored URL is complete: the delivery carries both
    assert call.query["signature"] == SIGNATURE
    assert call.headers["Authorization"].startswith("Basic ")
    answer = await client.get(f"/api/v1/workflow/status/{job_id}", headers=auth)
    assert_no_secret(await answer.text())


async def test_path_parameters_are_shown_redacted_and_sent_complete(
    client: TestClient, auth: dict[str, str], target: Target
) -> None:
    url = target.url(f"/cbpath;signature={SIGNATURE}")
    job_id = await submit(client, auth, url)
    done = await after_callback(client, auth, job_id, "delivered")
    assert done["callback"]["url"] == target.url("/cbpath;***")
    [call] = target.received
    assert call.path == f"/cbpath;signature={SIGNATURE}"
    answer = await client.get(f"/api/v1/workflow/status/{job_id}", headers=auth)
    assert_no_secret(await answer.text())


async def test_encoded_path_parameters_are_shown_redacted(
    client: TestClient, auth: dict[str, str], target: Target
) -> None:
    url = target.url("/") + f"cb%3Bsignature={SIGNATURE}/x%3bsig={SIGNATURE}"
    job_id = await submit(client, auth, url)
    done = await after_callback(client, auth, job_id, "delivered")
    assert done["callback"]["url"] == target.url("/") + "cb%3B***/x%3b***"
    answer = await client.get(f"/api/v1/workflow/status/{job_id}", headers=auth)
    assert_no_secret(await answer.text())


async def test_jobs_of_a_workflow_show_callback_urls_redacted(
    client: TestClient, auth: dict[str, str], target: Target
) -> None:
    await submit(client, auth, secret_url(target), workflow_id="wf-listed")
    page = await client.get("/api/v1/status/wf-listed", headers=auth)
    text = await page.text()
    assert shown(target) in text
    assert_no_secret(text)


async def test_a_cancelled_job_shows_its_callback_url_redacted(
    client: TestClient, auth: dict[str, str], target: Target
) -> None:
    body = job("sleep", parameters={"seconds": 30}, callback_url=secret_url(target))
    job_id = (await (await client.post(EXECUTE, json=body, headers=auth)).json())["job_id"]
    cancelled = await client.delete(f"/api/v1/workflow/{job_id}", headers=auth)
    assert cancelled.status == 200
    assert (await cancelled.json())["callback"]["url"] == shown(target)
    assert_no_secret(await cancelled.text())


async def test_callback_events_carry_the_url_redacted(
    make_client: ClientFactory, auth: dict[str, str], target: Target
) -> None:
    client = await make_client(retry_base_s=0.01, callback_max_attempts=1)
    target.script = [500]
    url = "/api/v1/events?type=callback.failed,callback.delivered"
    async with client.get(url, headers=auth) as stream:
        await submit(client, auth, secret_url(target))
        await submit(client, auth, secret_url(target, "/ok"))
        events = await read_events(stream, 2)
    assert {e["event"] for e in events} == {"callback.failed", "callback.delivered"}
    assert {e["data"]["data"]["url"] for e in events} == {shown(target), shown(target, "/ok")}
    for event in events:
        assert_no_secret(str(event))


async def test_event_webhooks_carry_callback_urls_redacted(
    client: TestClient, settings: Settings, auth: dict[str, str], target: Target
) -> None:
    subscription = {"url": target.url("/events"), "events": ["callback.delivered"]}
    created = await client.post("/api/v1/subscriptions", json=subscription, headers=admin(settings))
    assert created.status == 201
    await submit(client, auth, secret_url(target))
    received = await target.wait_for(2)
    [event] = [r for r in received if r.path == "/events"]
    assert shown(target) in event.body.decode()
    assert_no_secret(event.body.decode())


async def test_subscriptions_show_their_url_redacted(
    client: TestClient, settings: Settings, target: Target
) -> None:
    subscription = {"url": secret_url(target, "/events"), "events": ["workflow.completed"]}
    created = await client.post("/api/v1/subscriptions", json=subscription, headers=admin(settings))
    assert created.status == 201
    location = created.headers["Location"]
    fetched = await client.get(location, headers=admin(settings))
    listed = await client.get("/api/v1/subscriptions", headers=admin(settings))
    for answer in (created, fetched, listed):
        text = await answer.text()
        assert shown(target, "/events") in text
        assert_no_secret(text)


async def test_dead_letters_show_urls_and_errors_redacted(
    make_client: ClientFactory, settings: Settings, auth: dict[str, str], target: Target
) -> None:
    client = await make_client(retry_base_s=0.01, callback_max_attempts=2)
    target.script = [500, 500]
    await submit(client, auth, secret_url(target))
    [letter] = await dead_letters(client, settings, 1)
    assert letter["url"] == shown(target)
    assert_no_secret(str(letter))


async def test_breakers_are_keyed_by_host_without_userinfo(
    make_client: ClientFactory, settings: Settings, auth: dict[str, str], target: Target
) -> None:
    client = await make_client(retry_base_s=0.01, callback_max_attempts=1)
    target.script = [500]
    job_id = await submit(client, auth, secret_url(target))
    await after_callback(client, auth, job_id, "failed")
    status = await (await client.get("/admin/status", headers=admin(settings))).json()
    host = target.url("/").removeprefix("http://").rstrip("/")
    assert list(status["breakers"]) == [host]


@pytest.mark.slow
async def test_a_daemon_logging_at_debug_shows_no_url_secrets(
    tmp_path: Path, target: Target
) -> None:
    """A real daemon at BRIDGE_LOG_LEVEL=DEBUG: a callback that fails, is retried and becomes a
    dead letter, and a refused callback URL — every line of its log, libraries' included."""
    target.script = [500, 500]
    env = {
        "BRIDGE_DATA_DIR": str(tmp_path),
        "BRIDGE_JWT_SECRET": SECRET,
        "BRIDGE_LOG_LEVEL": "DEBUG",
        "BRIDGE_RETRY_BASE_S": "0.01",
        "BRIDGE_CALLBACK_MAX_ATTEMPTS": "2",
    }
    settings = Settings.model_validate({"jwt_secret": SECRET, "data_dir": tmp_path})
    headers = {"Authorization": f"Bearer {token(settings)}"}
    refused = f"http://n8n:{PASSWORD}@169.254.169.254/w?signature={SIGNATURE}"
    async with Daemon(env) as daemon, aiohttp.ClientSession() as session:
        execute = f"{daemon.url}{EXECUTE}"
        async with session.post(execute, json=job("echo", callback_url=refused), headers=headers):
            pass
        async with session.post(
            execute, json=job("echo", callback_url=secret_url(target)), headers=headers
        ) as accepted:
            assert accepted.status == 202
        for _ in range(200):  # the dead letter's warning is the last line about it
            if any("is a dead letter" in line for line in daemon.lines):
                break
            await asyncio.sleep(0.05)
    log = "\n".join(daemon.lines)
    assert "is a dead letter" in log and shown(target) in log  # logged, redacted
    assert_no_secret(log)


async def test_a_connection_error_is_recorded_without_url_secrets(
    make_client: ClientFactory, auth: dict[str, str], unused_tcp_port: int
) -> None:
    client = await make_client(retry_base_s=0.01, callback_max_attempts=1)
    url = f"http://n8n:{PASSWORD}@127.0.0.1:{unused_tcp_port}/w?signature={SIGNATURE}"
    job_id = await submit(client, auth, url)
    done = await after_callback(client, auth, job_id, "failed")
    assert done["callback"]["last_error"]
    assert_no_secret(str(done))


async def test_a_refused_callback_url_is_redacted_in_the_error_and_the_log(
    client: TestClient, auth: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"http://n8n:{PASSWORD}@169.254.169.254/w?signature={SIGNATURE}"
    refused = await client.post(EXECUTE, json=job("echo", callback_url=url), headers=auth)
    assert refused.status == 422
    assert_no_secret(await refused.text())
    assert_no_secret("\n".join(record.getMessage() for record in caplog.records))


async def test_n8n_trigger_errors_show_the_webhook_url_redacted(
    make_client: ClientFactory, auth: dict[str, str], target: Target
) -> None:
    client = await make_client(retry_base_s=0.01, n8n_max_attempts=1)
    target.script = [404, 500]
    for _ in range(2):  # n8n refused it (4xx), then it kept failing (5xx)
        body = {
            "processing_type": "n8n_trigger",
            "items": [{"json": {}}],
            "parameters": {"webhook": secret_url(target, "/webhook/orders")},
        }
        answer = await client.post(EXECUTE, json=body, headers=auth)
        text = await answer.text()
        assert shown(target, "/webhook/orders") in text
        assert_no_secret(text)
    assert len(target.received) == 2


async def test_n8n_trigger_refused_webhook_url_is_redacted(
    client: TestClient, auth: dict[str, str]
) -> None:
    body = {
        "processing_type": "n8n_trigger",
        "items": [{"json": {}}],
        "parameters": {"webhook": f"http://n8n:{PASSWORD}@169.254.169.254/w?s={SIGNATURE}"},
    }
    refused = await client.post(EXECUTE, json=body, headers=auth)
    assert refused.status == 422
    assert_no_secret(await refused.text())
