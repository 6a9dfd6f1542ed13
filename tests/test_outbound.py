"""The SSRF guard: callback URLs, event-webhook URLs and n8n_trigger webhooks that point at
link-local or cloud-metadata addresses (or outside an allow list; or, in production, at
loopback and private networks) are refused — when given (422, nothing accepted) and when a
request goes out (a name resolving to a refused address, a redirect to one), whatever encoding
the address is written in. Refusals are shown against a real loopback canary that must not get
so much as a connection."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from bridge.outbound import OutboundGuard, OutboundRefused
from bridge.settings import Settings
from tests.canary import Canary
from tests.conftest import ClientFactory, token
from tests.processors.test_n8n_trigger import trigger
from tests.test_admin import admin, dead_letters
from tests.test_events import run_job
from tests.test_worker import after_callback
from tests.webhook_target import Target

embedded_only = pytest.mark.parametrize("backend", ["embedded"])  # no backend part in it

EXECUTE = "/api/v1/workflow/execute"
DEFAULT = OutboundGuard.from_settings(Settings())


def wide(digits: str) -> str:
    """The same text in full-width digits (U+FF10...), which IDNA maps back to ASCII."""
    return digits.translate({ord(c): ord(c) + 0xFEE0 for c in "0123456789"})


DEV = DEFAULT
PRODUCTION = OutboundGuard.from_settings(Settings(env="production"))

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
    # the same addresses written otherwise: each is the address the connection would reach
    "http://2852039166/",  # 169.254.169.254 as one decimal integer
    "http://0xa9.0xfe.0xa9.0xfe/",  # hexadecimal parts
    "http://0251.0376.0251.0376/",  # octal parts
    "http://169.254.43518/",  # two parts
    f"http://{wide('0')}xa9fea9fe/",  # full-width characters, mapped by IDNA
    f"http://{wide('169.254.169.254')}/",
    "http://[64:ff9b::a9fe:a9fe]/",  # NAT64
    "http://[64:ff9b:1::a9fe:a9fe]/",  # local-use NAT64
    "http://[2002:a9fe:a9fe::1]/",  # 6to4
    "http://[::ffff:0:a9fe:a9fe]/",  # SIIT
    "http://[::a9fe:a9fe]/",  # IPv4-compatible
    "http://[2001:0:4136:e378:8000:63bf:5601:5601]/",  # Teredo, client 169.254.169.254
    "http://[fe80::1%25eth0]/",  # with a zone
    "http://168.63.129.16/",  # Azure's wire server
    "http://192.0.0.192/",  # Oracle Cloud's metadata
    # not an address, though aiohttp would hand it to the resolver as one
    "http://169.254.169.254./",
    "http://1.2.3.4.5/",
]
# Refused in production, allowed in dev: loopback and private networks in every encoding.
PRIVATE = [
    "http://127.0.0.1:5678/webhook",
    "http://2130706433/",
    "http://0x7f.1/",
    "http://127.1/",
    "http://0177.0.0.1/",
    f"http://{wide('127.0.0.1')}/",
    "http://[::1]:5678/",
    "http://[::ffff:7f00:1]/",
    "http://[::ffff:127.0.0.1]/",
    "http://10.1.2.3/",
    "http://172.16.0.1/",
    "http://192.168.1.1/",
    "http://100.64.0.1/",  # carrier-grade NAT
    "http://[fd00::1]/",
    "http://[64:ff9b::7f00:1]/",
    "http://[64:ff9b::a01:203]/",
    "http://[2002:7f00:1::]/",
    "http://[::ffff:0:a00:1]/",
    "http://[::7f00:1]/",
    "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/",  # Teredo, client 127.0.0.1
]
PUBLIC = [
    "https://n8n.example.com/webhook/x",
    "http://93.184.215.14/",
    "http://[2606:4700::1111]/",
    "http://[64:ff9b::808:808]/",  # NAT64 of 8.8.8.8
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


@pytest.mark.parametrize("url", REFUSED)
def test_production_refuses_the_metadata_service_too(url: str) -> None:
    assert PRODUCTION.refusal(url) is not None


@pytest.mark.parametrize("url", ALLOWED)
def test_the_defaults_let_n8n_be_reached_where_it_usually_runs(url: str) -> None:
    assert DEFAULT.refusal(url) is None


@pytest.mark.parametrize("url", PRIVATE)
def test_dev_lets_loopback_and_private_networks_be_called(url: str) -> None:
    assert DEV.refusal(url) is None


@pytest.mark.parametrize("url", PRIVATE)
def test_production_refuses_loopback_and_private_networks_in_every_encoding(url: str) -> None:
    reason = PRODUCTION.refusal(url)
    assert reason is not None and "BRIDGE_OUTBOUND_POLICY" in reason


@pytest.mark.parametrize("url", PUBLIC)
def test_production_lets_public_addresses_be_called(url: str) -> None:
    assert PRODUCTION.refusal(url) is None


def test_production_judges_names_by_what_they_resolve_to() -> None:
    assert PRODUCTION.refusal("http://localhost:5678/") is None  # no DNS when a URL is given
    with pytest.raises(OutboundRefused, match="BRIDGE_OUTBOUND_POLICY"):
        PRODUCTION.check_resolved("localhost", 5678, ["127.0.0.1"])
    with pytest.raises(OutboundRefused, match="BRIDGE_OUTBOUND_POLICY"):
        PRODUCTION.check_resolved("rebind.example", 80, ["203.0.113.9", "::ffff:10.0.0.1"])
    PRODUCTION.check_resolved("n8n.example.com", 443, ["93.184.215.14"])


def production(**overrides: Any) -> OutboundGuard:
    return OutboundGuard.from_settings(Settings.model_validate({"env": "production", **overrides}))


def test_production_allows_the_n8n_url_by_itself_and_only_it() -> None:
    by_address = production(n8n_url="http://127.0.0.1:5678")
    assert by_address.refusal("http://127.0.0.1:5678/webhook/x") is None
    assert by_address.refusal("http://127.0.0.1:6379/") is not None  # same host, another port
    by_address.check_resolved("localhost", 5678, ["127.0.0.1"])
    by_name = production(n8n_url="http://n8n:5678/")
    by_name.check_resolved("n8n", 5678, ["172.18.0.4"])
    with pytest.raises(OutboundRefused):
        by_name.check_resolved("n8n", 22, ["172.18.0.4"])
    with pytest.raises(OutboundRefused):
        by_name.check_resolved("redis", 5678, ["172.18.0.5"])
    https = production(n8n_url="https://n8n.internal")
    https.check_resolved("n8n.internal", 443, ["10.0.0.5"])


def test_production_allows_what_bridge_outbound_allow_names() -> None:
    guard = production(outbound_allow="10.0.0.0/8,n8n.internal")
    assert guard.refusal("http://10.1.2.3/") is None
    assert guard.refusal("http://[64:ff9b::a01:203]/") is None  # judged as 10.1.2.3
    assert guard.refusal("http://127.0.0.1/") is not None
    guard.check_resolved("n8n.internal", 80, ["192.168.7.7"])
    metadata = production(outbound_allow="0.0.0.0/0")
    assert metadata.refusal("http://169.254.169.254/") is not None  # the deny list wins


def test_the_opt_out_keeps_dev_behaviour_in_production() -> None:
    guard = production(outbound_policy="private-allowed")
    assert guard.refusal("http://127.0.0.1:5678/") is None
    assert guard.refusal("http://2852039166/") is not None


def test_the_policy_follows_the_environment_unless_set() -> None:
    assert Settings().outbound_policy == "private-allowed"
    assert Settings(env="production").outbound_policy == "private-denied"
    assert Settings(outbound_policy="private-denied").outbound_policy == "private-denied"
    with pytest.raises(ValueError, match="outbound_policy"):
        Settings.model_validate({"outbound_policy": "open"})


def test_an_allow_list_admits_only_what_it_names() -> None:
    guard = OutboundGuard(["10.0.0.0/8", "n8n.example.com", ".corp.example"], ["10.9.0.0/16"])
    assert guard.refusal("http://10.1.2.3/x") is None
    assert guard.refusal("http://10.9.0.1/x") is not None  # deny wins
    assert guard.refusal("http://192.168.1.1/x") is not None
    guard.check_resolved("n8n.example.com", 443, ["203.0.113.9"])  # named: any address
    guard.check_resolved("hooks.corp.example", 443, ["203.0.113.9"])
    guard.check_resolved("elsewhere.example", 443, ["10.3.3.3"])  # resolves into an allowed net
    with pytest.raises(OutboundRefused, match="BRIDGE_OUTBOUND_ALLOW does not list"):
        guard.check_resolved("elsewhere.example", 443, ["203.0.113.9"])
    with pytest.raises(OutboundRefused, match="refused by BRIDGE_OUTBOUND_DENY"):
        guard.check_resolved("n8n.example.com", 443, ["10.9.0.7"])


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


# Every way of writing the canary's loopback address (127.0.0.1) in a URL.
CANARY_HOSTS = [
    "127.0.0.1",
    "2130706433",
    "0x7f.1",
    "127.1",
    "0177.0.0.1",
    "[::ffff:7f00:1]",
    "[::ffff:127.0.0.1]",
    wide("127.0.0.1"),
    "localhost",
    "LOCALHOST",
    "127.0.0.1.",
]


async def settled(client: TestClient, auth: dict[str, str], job_id: str) -> dict[str, Any]:
    """A background job's record once its callback has ended (delivered or failed)."""
    done = await after_callback(client, auth, job_id, "failed")
    assert done["callback"]["state"] in ("delivered", "failed"), done
    return done


@embedded_only
@pytest.mark.parametrize("host", CANARY_HOSTS)
async def test_production_n8n_trigger_cannot_reach_a_loopback_service(
    make_client: ClientFactory, auth: dict[str, str], canary: Canary, host: str
) -> None:
    client = await make_client(env="production", n8n_max_attempts=1)
    response = await client.post(EXECUTE, json=trigger(canary.url(host), [{}]), headers=auth)
    answer = await response.json()
    assert response.status == 422 or answer["errors"], answer
    assert "BRIDGE_OUTBOUND" in str(answer)
    assert canary.connections == 0


@embedded_only
@pytest.mark.parametrize("host", CANARY_HOSTS)
async def test_production_callbacks_cannot_reach_a_loopback_service(
    make_client: ClientFactory, auth: dict[str, str], canary: Canary, host: str
) -> None:
    client = await make_client(env="production", retry_base_s=0.01)
    job = {"processing_type": "echo", "mode": "async", "callback_url": canary.url(host)}
    response = await client.post(EXECUTE, json={**job, "items": [{}]}, headers=auth)
    if response.status == 202:  # a name: refused when it resolves
        done = await settled(client, auth, (await response.json())["job_id"])
        assert done["callback"]["state"] == "failed"
        assert "BRIDGE_OUTBOUND_POLICY" in done["callback"]["last_error"]
    else:
        assert response.status == 422
    assert canary.connections == 0


@embedded_only
@pytest.mark.parametrize("host", ["127.0.0.1", "2130706433", "localhost"])
async def test_production_event_webhooks_cannot_reach_a_loopback_service(
    make_client: ClientFactory, settings: Settings, auth: dict[str, str], canary: Canary, host: str
) -> None:
    client = await make_client(env="production", retry_base_s=0.01)
    response = await client.post(
        "/api/v1/subscriptions",
        json={"url": canary.url(host), "events": ["workflow.completed"]},
        headers=admin(settings),
    )
    if response.status == 201:
        await run_job(client, auth, "wf-1")
        [letter] = await dead_letters(client, settings, 1)
        assert "BRIDGE_OUTBOUND_POLICY" in letter["last_error"]
    else:
        assert response.status == 422
    assert canary.connections == 0


@embedded_only
@pytest.mark.parametrize("host", ["127.0.0.1", "0x7f.1", "[::ffff:7f00:1]", "localhost"])
async def test_dev_reaches_loopback_services_in_every_encoding(
    client: TestClient, auth: dict[str, str], canary: Canary, host: str
) -> None:
    answer = await (
        await client.post(EXECUTE, json=trigger(canary.url(host), [{}]), headers=auth)
    ).json()
    assert answer["items"][0]["json"]["n8n"]["status"] == 200, answer
    assert canary.connections == 1


@embedded_only
@pytest.mark.parametrize("host", ["2130706433", "0x7f.1", "127.1", "[::ffff:7f00:1]"])
async def test_the_deny_list_holds_whatever_the_encoding(
    make_client: ClientFactory, auth: dict[str, str], canary: Canary, host: str
) -> None:
    """Dev, with loopback denied: an address written as an integer, in hex or IPv4-mapped is
    judged as the address it is."""
    client = await make_client(outbound_deny=["127.0.0.0/8"], n8n_max_attempts=1)
    response = await client.post(EXECUTE, json=trigger(canary.url(host), [{}]), headers=auth)
    answer = await response.json()
    assert response.status == 422 or answer["errors"], answer
    assert canary.connections == 0


@embedded_only
@pytest.mark.parametrize("host", ["127.0.0.1", "2130706433", "localhost", "[::ffff:7f00:1]"])
async def test_a_redirect_to_a_refused_address_reaches_nothing(
    make_client: ClientFactory,
    auth: dict[str, str],
    target: Target,
    canary: Canary,
    host: str,
) -> None:
    """Production, n8n at the target (allowed by BRIDGE_N8N_URL): its 302 to the canary on the
    same host, another port, is judged again and not followed."""
    client = await make_client(env="production", n8n_url=target.url("/"), n8n_max_attempts=1)
    target.script = [302]
    target.headers = {"Location": canary.url(host)}
    answer = await (
        await client.post(EXECUTE, json=trigger("webhook/x", [{}]), headers=auth)
    ).json()
    assert len(target.received) == 1
    [error] = answer["errors"]
    assert "BRIDGE_OUTBOUND_POLICY" in error["message"]
    assert canary.connections == 0


@embedded_only
async def test_production_calls_n8n_at_its_configured_url(
    make_client: ClientFactory, auth: dict[str, str], target: Target
) -> None:
    client = await make_client(env="production", n8n_url=target.url("/"))
    answer = await (
        await client.post(EXECUTE, json=trigger("webhook/x", [{}]), headers=auth)
    ).json()
    assert answer["items"][0]["json"]["n8n"]["status"] == 200, answer
    job = {"processing_type": "echo", "mode": "async", "callback_url": target.url("/wait/1")}
    accepted = await (await client.post(EXECUTE, json={**job, "items": [{}]}, headers=auth)).json()
    done = await settled(client, auth, accepted["job_id"])
    assert done["callback"]["state"] == "delivered"


@embedded_only
@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({}, "outbound policy: private-allowed"),
        ({"env": "production"}, "outbound policy: private-denied"),
        ({"env": "production", "outbound_policy": "private-allowed"}, "private-allowed"),
    ],
)
async def test_start_up_says_which_policy_is_in_force(
    make_client: ClientFactory,
    caplog: pytest.LogCaptureFixture,
    overrides: dict[str, Any],
    expected: str,
) -> None:
    with caplog.at_level(logging.INFO, logger="bridge"):
        await make_client(**overrides)
        await asyncio.sleep(0)
    lines = [r.getMessage() for r in caplog.records if "outbound policy" in r.getMessage()]
    assert len(lines) == 1 and expected in lines[0], lines
