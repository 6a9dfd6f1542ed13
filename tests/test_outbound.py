"""The SSRF guard: callback URLs, event-webhook URLs and n8n_trigger webhooks that point at
link-local or cloud-metadata addresses (or outside an allow list) are refused — when given
(422, nothing accepted) and when a request goes out (a name resolving to a refused address, a
redirect to one)."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from bridge.outbound import OutboundGuard, OutboundRefused
from bridge.settings import Settings
from tests.conftest import ClientFactory, token
from tests.processors.test_n8n_trigger import trigger
from tests.test_admin import admin, dead_letters
from tests.webhook_target import Target

embedded_only = pytest.mark.parametrize("backend", ["embedded"])  # no backend part in it

EXECUTE = "/api/v1/workflow/execute"
DEFAULT = OutboundGuard((), Settings().outbound_deny)

REFUSED = [
    "http://169.254.169.254/latest/meta-data/iam/",
    "http://169.254.170.2/v2/credentials",
    "http://[fe80::1]/x",
    "http://[fd00:ec2::254]/latest",
    "http://[::ffff:169.254.169.254]/x",  # IPv4-mapped
    "http://100.100.100.200/latest/meta-data",
    "http://0.0.0.0:5678/webhook",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://METADATA.GOOGLE.INTERNAL./computeMetadata/v1/",
    "http://224.0.0.1/",
]
ALLOWED = [
    "http://127.0.0.1:5678/webhook-waiting/1",  # n8n next to the bridge
    "http://n8n:5678/webhook/x",
    "https://n8n.example.com/webhook/x",
    "http://10.1.2.3/hook",
    "http://[::1]:5678/x",
]


@pytest.mark.parametrize("url", REFUSED)
def test_the_default_deny_list_refuses_link_local_and_metadata(url: str) -> None:
    assert DEFAULT.refusal(url) is not None


@pytest.mark.parametrize("url", ALLOWED)
def test_the_defaults_let_n8n_be_reached_where_it_usually_runs(url: str) -> None:
    assert DEFAULT.refusal(url) is None


def test_an_allow_list_admits_only_what_it_names() -> None:
    guard = OutboundGuard(["10.0.0.0/8", "n8n.example.com", ".corp.example"], ["10.9.0.0/16"])
    assert guard.refusal("http://10.1.2.3/x") is None
    assert guard.refusal("http://10.9.0.1/x") is not None  # deny wins
    assert guard.refusal("http://192.168.1.1/x") is not None
    guard.check_resolved("n8n.example.com", ["203.0.113.9"])  # named: any address
    guard.check_resolved("hooks.corp.example", ["203.0.113.9"])
    guard.check_resolved("elsewhere.example", ["10.3.3.3"])  # resolves into an allowed net
    with pytest.raises(OutboundRefused, match="does not list"):
        guard.check_resolved("elsewhere.example", ["203.0.113.9"])
    with pytest.raises(OutboundRefused, match="DENY refuses"):
        guard.check_resolved("n8n.example.com", ["10.9.0.7"])


def test_a_bad_entry_stops_start_up() -> None:
    with pytest.raises(ValueError, match="neither a network"):
        Settings.model_validate({"outbound_deny": "10.0.0.0/33"})


@embedded_only
async def test_a_callback_url_at_the_metadata_service_is_refused_and_nothing_accepted(
    client: TestClient, auth: dict[str, str]
) -> None:
    job = {
        "processing_type": "echo",
        "mode": "async",
        "workflow_id": "wf-ssrf",
        "callback_url": "http://169.254.169.254/latest/meta-data/",
        "items": [{"json": {}}],
    }
    response = await client.post(EXECUTE, json=job, headers=auth)
    assert response.status == 422
    error = (await response.json())["error"]
    assert error["details"][0]["pointer"] == "/callback_url"
    assert "BRIDGE_OUTBOUND_DENY" in error["message"]
    listed = await client.get("/api/v1/status/wf-ssrf", headers=auth)
    assert (await listed.json())["jobs"] == []


@embedded_only
async def test_a_subscription_to_a_link_local_url_is_refused(
    client: TestClient, settings: Settings
) -> None:
    response = await client.post(
        "/api/v1/subscriptions",
        json={"url": "http://[fe80::1]/events", "events": ["workflow.failed"]},
        headers=admin(settings),
    )
    assert response.status == 422
    assert (await response.json())["error"]["details"][0]["pointer"] == "/url"
    listed = await (await client.get("/api/v1/subscriptions", headers=admin(settings))).json()
    assert listed["subscriptions"] == []


@embedded_only
async def test_n8n_trigger_does_not_call_the_metadata_service(
    client: TestClient, auth: dict[str, str]
) -> None:
    response = await client.post(
        EXECUTE, json=trigger("http://169.254.169.254/latest/user-data", [{}]), headers=auth
    )
    assert response.status == 422
    assert "BRIDGE_OUTBOUND_DENY" in (await response.json())["error"]["message"]


@embedded_only
async def test_a_name_resolving_to_a_refused_address_is_caught_at_connect_time(
    make_client: ClientFactory, settings: Settings, auth: dict[str, str], target: Target
) -> None:
    """`localhost` passes the check by name; its address, denied here, is refused when the
    callback is sent — as a name that resolves differently later (DNS rebinding) would be. The
    callback becomes a dead letter at once (no retry can help) and the target hears nothing."""
    client = await make_client(outbound_deny=["127.0.0.0/8", "::1/128"], retry_base_s=0.01)
    url = target.url("/hook").replace("127.0.0.1", "localhost")
    job = {"processing_type": "echo", "mode": "async", "callback_url": url, "items": [{}]}
    response = await client.post(EXECUTE, json=job, headers=auth)
    assert response.status == 202
    [letter] = await dead_letters(client, settings, 1)
    assert letter["attempts"] == 1
    assert "localhost resolves to" in letter["last_error"]
    assert "BRIDGE_OUTBOUND_DENY" in letter["last_error"]
    assert target.received == []


@embedded_only
async def test_a_redirect_to_a_refused_address_is_not_followed(
    client: TestClient, auth: dict[str, str], target: Target
) -> None:
    target.script = [302]
    target.headers = {"Location": "http://169.254.169.254/latest/meta-data/"}
    answer = await client.post(EXECUTE, json=trigger(target.url("/webhook/x"), [{}]), headers=auth)
    body: dict[str, Any] = await answer.json()
    assert len(target.received) == 1  # the first hop only
    text = str(body)
    assert "169.254.169.254" in text and "BRIDGE_OUTBOUND_DENY" in text


@embedded_only
async def test_an_allow_list_refuses_everything_else(
    make_client: ClientFactory, settings: Settings, target: Target
) -> None:
    client = await make_client(outbound_allow=["192.0.2.0/24"])
    headers = {"Authorization": f"Bearer {token(settings)}"}
    job = {
        "processing_type": "echo",
        "mode": "async",
        "callback_url": target.url("/hook"),
        "items": [{}],
    }
    response = await client.post(EXECUTE, json=job, headers=headers)
    assert response.status == 422
    assert "BRIDGE_OUTBOUND_ALLOW" in (await response.json())["error"]["message"]
