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
from pydantic import ValidationError

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


# Numeric forms aiohttp refuses itself ("not a canonical IPv4 address"): not called in dev
# either, and refused when given rather than failing later.
NOT_CANONICAL = ["http://2130706433/", "http://127.1/", "http://0177.0.0.1/", "http://0127.0.0.1/"]


@pytest.mark.parametrize("url", [url for url in PRIVATE if url not in NOT_CANONICAL])
def test_dev_lets_loopback_and_private_networks_be_called(url: str) -> None:
    assert DEV.refusal(url) is None


@pytest.mark.parametrize("url", NOT_CANONICAL)
def test_numeric_hosts_the_client_would_not_call_are_refused_when_given(url: str) -> None:
    reason = DEV.refusal(url)
    assert reason is not None and "standard form" in reason


@pytest.mark.parametrize("url", PRIVATE)
def test_production_refuses_loopback_and_private_networks_in_every_encoding(url: str) -> None:
    reason = PRODUCTION.refusal(url)
    assert reason is not None and "BRIDGE_OUTBOUND_POLICY" in reason


@pytest.mark.parametrize("url", PUBLIC)
def test_production_lets_public_addresses_be_called(url: str) -> None:
    assert PRODUCTION.refusal(url) is None


def test_production_judges_names_by_what_they_resolve_to() -> None:
    assert PRODUCTION.refusal("http://n8n.example.com/") is None  # no DNS when a URL is given
    with pytest.raises(OutboundRefused, match="BRIDGE_OUTBOUND_POLICY"):
        PRODUCTION.check_resolved("localhost", 5678, ["127.0.0.1"])
    with pytest.raises(OutboundRefused, match="BRIDGE_OUTBOUND_POLICY"):
        PRODUCTION.check_resolved("rebind.example", 80, ["203.0.113.9", "::ffff:10.0.0.1"])
    PRODUCTION.check_resolved("n8n.example.com", 443, ["93.184.215.14"])


def production(**overrides: Any) -> OutboundGuard:
    return OutboundGuard.from_settings(Settings.model_validate({"env": "production", **overrides}))


# Names that reach only this machine or a local network, whatever DNS says: refused when given.
LOCAL_NAMES = [
    "localhost",  # RFC 6761: loopback
    "LOCALHOST.",
    "api.localhost",
    "ip6-localhost",  # Debian's /etc/hosts
    "ip6-loopback",
    "localhost.localdomain",  # Red Hat's /etc/hosts
    "printer.local",  # RFC 6762: multicast DNS on the link
    "router.home.arpa",  # RFC 8375: home networks
    "n8n.internal",  # ICANN's private-use top-level domain (2024)
    "redis",  # one label: the hosts file or a search domain (no dotless names on the Internet)
    "nas.lan",  # RFC 6762 appendix G: used privately
    "db.intranet",
    "mail.corp",
    "box.home",
    "srv.private",
]


@pytest.mark.parametrize("name", LOCAL_NAMES)
def test_production_refuses_local_names_when_given(name: str) -> None:
    reason = PRODUCTION.refusal(f"http://{name}:8080/x")
    assert reason is not None and "BRIDGE_OUTBOUND_POLICY" in reason
    assert DEV.refusal(f"http://{name}:8080/x") is None


def test_a_local_name_is_called_when_allowed() -> None:
    assert production(n8n_url="http://localhost:5678").refusal("http://localhost:5678/x") is None
    assert production(n8n_url="http://127.0.0.1:5678").refusal("http://localhost:5678/x") is None
    assert production(n8n_url="http://n8n:5678").refusal("http://n8n:5678/x") is None
    assert production(n8n_url="http://n8n:5678").refusal("http://n8n:6379/x") is not None
    named = production(outbound_allow="n8n.internal,.home.arpa")
    assert named.refusal("http://n8n.internal/x") is None
    assert named.refusal("http://nas.home.arpa/x") is None
    assert named.refusal("http://other.internal/x") is not None
    loopback = production(outbound_allow="127.0.0.0/8,::1/128")
    assert loopback.refusal("http://localhost:8080/x") is None
    assert loopback.refusal("http://printer.local/x") is not None  # no fixed address


# The IANA special-purpose address registries (iana-ipv4-special-registry,
# iana-ipv6-special-registry, 2025), plus multicast and IPv6 site-local: (entry, an address in
# it, globally reachable). A "not applicable" is not globally reachable.
IPV4_REGISTRY = [
    ("0.0.0.0/8", "0.0.0.1", False),
    ("0.0.0.0/32", "0.0.0.0", False),
    ("10.0.0.0/8", "10.20.30.40", False),
    ("100.64.0.0/10", "100.100.1.1", False),
    ("127.0.0.0/8", "127.3.2.1", False),
    ("169.254.0.0/16", "169.254.9.9", False),
    ("172.16.0.0/12", "172.31.0.1", False),
    ("192.0.0.0/24", "192.0.0.100", False),
    ("192.0.0.0/29", "192.0.0.1", False),
    ("192.0.0.8/32", "192.0.0.8", False),
    ("192.0.0.170/32", "192.0.0.170", False),
    ("192.0.0.171/32", "192.0.0.171", False),
    ("192.0.2.0/24", "192.0.2.1", False),
    ("192.31.196.0/24", "192.31.196.1", True),
    ("192.52.193.0/24", "192.52.193.1", True),
    ("192.88.99.0/24", "192.88.99.1", False),  # deprecated 6to4 relay anycast (RFC 7526)
    ("192.168.0.0/16", "192.168.1.1", False),
    ("192.175.48.0/24", "192.175.48.1", True),
    ("198.18.0.0/15", "198.19.0.1", False),
    ("198.51.100.0/24", "198.51.100.1", False),
    ("203.0.113.0/24", "203.0.113.1", False),
    ("240.0.0.0/4", "250.1.2.3", False),
    ("255.255.255.255/32", "255.255.255.255", False),
    ("224.0.0.0/4", "239.1.2.3", False),  # multicast
]
IPV6_REGISTRY = [
    ("::1/128", "::1", False),
    ("::/128", "::", False),
    ("::ffff:0:0/96", "::ffff:10.0.0.1", False),  # judged as the IPv4 address it is
    ("64:ff9b::/96", "64:ff9b::808:808", True),  # and as the IPv4 address it carries
    ("64:ff9b:1::/48", "64:ff9b:1::808:808", False),
    ("100::/64", "100::1", False),
    ("100:0:0:1::/64", "100:0:0:1::1", False),
    ("2001::/23", "2001:100::1", False),
    ("2001::/32", "2001::1", False),  # Teredo
    ("2001:2::/48", "2001:2::1", False),
    ("2001:3::/32", "2001:3::1", True),
    ("2001:4:112::/48", "2001:4:112::1", True),
    ("2001:10::/28", "2001:10::1", False),
    ("2001:20::/28", "2001:20::1", True),
    ("2001:30::/28", "2001:30::1", True),
    ("2001:db8::/32", "2001:db8::1", False),
    ("2002::/16", "2002:808:808::1", False),  # 6to4
    ("2620:4f:8000::/48", "2620:4f:8000::1", True),
    ("3fff::/20", "3fff::1", False),
    ("5f00::/16", "5f00::1", False),
    ("fc00::/7", "fd12::1", False),
    ("fe80::/10", "fe80::1", False),
    ("fec0::/10", "fec0::1", False),  # site-local, deprecated
    ("ff00::/8", "ff0e::1", False),  # multicast
    ("4000::/3", "4000::1", False),  # not allocated: outside global unicast 2000::/3
]


@pytest.mark.parametrize(
    ("entry", "address", "reachable"), IPV4_REGISTRY + IPV6_REGISTRY, ids=lambda v: str(v)
)
def test_production_refuses_every_address_that_is_not_globally_reachable(
    entry: str, address: str, reachable: bool
) -> None:
    host = f"[{address}]" if ":" in address else address
    reason = PRODUCTION.refusal(f"http://{host}/x")
    assert (reason is None) == reachable, reason


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
    done = await settled(client, auth, (await response.json())["job_id"])
    assert done["status"] == "completed" and done["callback"]["state"] == "failed"
    assert "localhost resolves to" in done["callback"]["last_error"]
    answer = await (await client.post(EXECUTE, json=trigger(url, [{}]), headers=auth)).json()
    [error] = answer["errors"]
    assert error["code"] == "integration" and "localhost resolves to" in error["message"]
    assert target.received == []


@embedded_only
async def test_production_refuses_localhost_at_every_door_when_given(
    make_client: ClientFactory, settings: Settings, auth: dict[str, str], canary: Canary
) -> None:
    """Callback URL, subscription and n8n_trigger webhook: 422 with the pointer, nothing
    accepted, no connection."""
    client = await make_client(env="production")
    url = canary.url("localhost")
    callback = {"processing_type": "echo", "mode": "async", "callback_url": url, "items": [{}]}
    webhook = {**trigger(url, [{}]), "mode": "async"}
    for path, body, headers, pointer in (
        (EXECUTE, callback, auth, "/callback_url"),
        (EXECUTE, webhook, auth, "/parameters/webhook"),
        (
            "/api/v1/subscriptions",
            {"url": url, "events": ["workflow.failed"]},
            admin(settings),
            "/url",
        ),
    ):
        response = await client.post(path, json=body, headers=headers)
        answer = await response.json()
        assert response.status == 422, answer
        assert answer["error"]["details"][0]["pointer"] == pointer
        assert "BRIDGE_OUTBOUND_POLICY" in answer["error"]["message"]
    assert canary.connections == 0


@embedded_only
async def test_production_n8n_trigger_refuses_the_documentation_range_when_given(
    make_client: ClientFactory, auth: dict[str, str]
) -> None:
    client = await make_client(env="production")
    body = trigger("http://[2001:db8::1]:23401/webhook/x", [{}])
    response = await client.post(EXECUTE, json={**body, "mode": "async"}, headers=auth)
    assert response.status == 422
    assert "BRIDGE_OUTBOUND_POLICY" in (await response.json())["error"]["message"]


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
    # a host outside ASCII is refused before the guard (it must be given as IDNA, xn--…)
    assert "BRIDGE_OUTBOUND" in str(answer) or "outside ASCII" in str(answer)
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


# Given URLs the bridge would not call as given: a parser or a server would read another path
# (dot segments in any encoding, line breaks and spaces dropped or re-encoded, backslashes read
# as slashes), or too long, or not http(s). Refused at every door where a caller gives a URL.
NOT_AS_GIVEN = [
    "/webhook/../../x",
    "/webhook/./x",
    "/webhook/%2e%2e/x",
    "/webhook/%2E%2e/x",
    "/webhook/%2e./x",
    "/webhook/.%2E/x",
    "/webhook/%252e%252e/x",  # double-encoded
    "/webhook/%25252e%25252e/x",
    "/webhook/%u002e%u002e/x",
    "/webhook/%c0%ae%c0%ae/x",  # overlong UTF-8
    "/webhook/..;x/x",  # read as .. by Tomcat and others
    "/webhook/a%2f..%2fx",
    "/webhook/a%5c..%5cx",
    "/webhook\\..\\x",
    "/x\r\nX: y",
    "/x\ty",
    "/x y",
    "/x\x00",
    "/é",
    "/" + "a" * 2048,
    # a decoded `?`, `#` or `;` ends the segment for a server that decodes the path first
    "/a/..%3F/x",
    "/a/..%3f/x",
    "/a/..%23/x",
    "/a/..%253F/x",
    "/a/..%3B/x",
    # NUL, controls, trailing spaces and dots: trimmed by some servers (IIS, Windows)
    "/a/..%00/x",
    "/a/%2e%2e%00/x",
    "/a/..%2500/x",
    "/a/..%20/x",
    "/a/..%09/x",
    "/a/%20..%20/x",
    "/a/.%20./x",
    "/a/..%0b/x",
    "/a/..%c2%85/x",
    "/a/..%e2%80%a8/x",
    "/a/...../x",
    "/a/.../x",
    "/a/x%00y/x",  # a NUL anywhere
    "/a/x%7fy/x",
    "/a/x%1by/x",
    # `%` not starting two hex digits: the client re-encodes it, so another URL is called
    "/a/%U002E%U002E/x",
    "/a/%u002E%u002e/x",
    "/a/%u2215..%u2215x",
    "/a/%zz/x",
    "/a/%/x",
    "/a/x%2",
    "/a?q=%",
    "/a?",  # an empty query: the client drops the `?`
    "/a?#f",
    # a fragment is never sent: a GET callback's outcome appended after it was lost
    "/a#f",
    "/a#",
    "/cbget/3?sig=abc#frag",
    "/cbget/3?sig=abc#",
    "/#",
    "/a#f#g",
    # dots and slashes that NFKC or a server's Unicode folding turns into `.` and `/`
    "/a/%ef%bc%8e%ef%bc%8e/x",  # full-width full stop
    "/a/%e3%80%82%e3%80%82/x",  # ideographic full stop
    "/a/%ef%bd%a1%ef%bd%a1/x",  # half-width ideographic full stop
    "/a/%e2%80%a4%e2%80%a4/x",  # one dot leader
    "/a/%ef%b9%92./x",  # small full stop
    "/a/x%e2%88%95..%e2%88%95x",  # division slash
    "/a/x%e2%81%84..%e2%81%84x",  # fraction slash
    "/a/x%ef%bc%8f..%ef%bc%8fx",  # full-width solidus
    "/a/x%ef%bc%bc..%ef%bc%bcx",  # full-width reverse solidus
    "/a/%25ef%25bc%258e%25ef%25bc%258e/x",  # and encoded twice
    # not RFC 3986 characters: sent as they are or re-encoded, either way not as given
    '/a/"x"',
    "/a/<x>",
    "/a/{x}",
    "/a/x|y",
    "/a/x^y",
    "/a/`x`",
]


def _door(door: str, url: str) -> tuple[str, dict[str, Any], str]:
    if door == "callback":
        job = {"processing_type": "echo", "mode": "async", "callback_url": url, "items": [{}]}
        return EXECUTE, job, "/callback_url"
    if door == "webhook":
        return EXECUTE, {**trigger(url, [{}]), "mode": "async"}, "/parameters/webhook"
    return "/api/v1/subscriptions", {"url": url, "events": ["workflow.failed"]}, "/url"


@embedded_only
@pytest.mark.parametrize("door", ["callback", "webhook", "subscription"])
async def test_every_door_refuses_a_url_that_would_not_be_called_as_given(
    client: TestClient, settings: Settings, auth: dict[str, str], target: Target, door: str
) -> None:
    bad = [target.url("/") + path.lstrip("/") for path in NOT_AS_GIVEN]
    bad += ["ftp://127.0.0.1/x", "javascript:alert(1)", "http:///x", "HTTP://"]
    for url in bad:
        path, body, pointer = _door(door, url)
        headers = admin(settings) if door == "subscription" else auth
        response = await client.post(path, json=body, headers=headers)
        answer = await response.json()
        assert response.status == 422, (url, answer)
        assert pointer in [d["pointer"] for d in answer["error"]["details"]], (url, answer)
    assert target.received == []


@embedded_only
@pytest.mark.parametrize("door", ["callback", "webhook", "subscription"])
async def test_every_door_takes_an_ordinary_url_as_given(
    client: TestClient, settings: Settings, auth: dict[str, str], target: Target, door: str
) -> None:
    """Dots inside a segment, encoded characters and `;` parameters are not dot segments."""
    url = target.url("/") + "webhook-waiting/a..b/.x/%C3%A9;v=1?signature=s%2E"
    path, body, _ = _door(door, url)
    headers = admin(settings) if door == "subscription" else auth
    response = await client.post(path, json=body, headers=headers)
    assert response.status in (200, 201, 202), await response.text()


# Given URLs that are called: each exactly as given, byte for byte (path and query as the
# server receives them) — the HTTP client neither decodes, re-encodes nor normalises them.
AS_GIVEN = [
    "webhook-waiting/a..b/.x/%C3%A9;v=1?signature=s%2E",
    "webhook/%c3%a9/x%2Ey",  # lower-case hex, an encoded unreserved character
    "webhook/a%7Eb/%41?q=%7e&r=%2F",
    "webhook/..x/x..",
    "webhook/a.b./.c",
    "webhook/%20x/a%20b",
    "webhook/a+b/c%2Bd/'(x)'*!$,=:@/~_-",
    "webhook/%25/x",  # an encoded percent sign
    "webhook/u%40x/cb",
    "webhook/x?a=1&a=2&b=%3B;c",
    "webhook/a%23b?sig=abc%23frag",  # an encoded `#` is path and query, sent as given
]


@embedded_only
@pytest.mark.parametrize("door", ["callback", "webhook"])
async def test_every_accepted_url_is_called_byte_for_byte(
    client: TestClient, auth: dict[str, str], target: Target, door: str
) -> None:
    urls = [target.url("/") + path for path in AS_GIVEN]
    for url in urls:
        path, body, _ = _door(door, url)
        response = await client.post(path, json=body, headers=auth)
        assert response.status in (200, 202), (url, await response.text())
    received = await target.wait_for(len(urls))
    sent = sorted(call.raw_path for call in received)
    origin = target.url("/").rstrip("/")
    assert sent == sorted(url.removeprefix(origin) for url in urls)


@embedded_only
async def test_a_get_callback_to_a_url_with_a_fragment_is_refused_not_lost(
    client: TestClient, auth: dict[str, str], target: Target
) -> None:
    """The outcome of a GET callback travels in the query. A fragment is never sent, so a query
    appended after one was dropped (the receiver got `?sig=abc` alone, and the job said
    `delivered`): a URL with a fragment, even an empty one, is refused; an encoded `%23` is
    the path's or the query's and is called as given, the outcome after it."""
    origin = target.url("/").rstrip("/")  # (yarl would drop an empty fragment)
    for path in ("/cbget/3?sig=abc#frag", "/cbget/3?sig=abc#", "/cbget/3#frag"):
        url = origin + path
        job = {"processing_type": "echo", "mode": "async", "callback_method": "GET"}
        response = await client.post(
            EXECUTE, json={**job, "callback_url": url, "items": [{}]}, headers=auth
        )
        answer = await response.json()
        assert response.status == 422, (url, answer)
        [detail] = answer["error"]["details"]
        assert detail["pointer"] == "/callback_url"
        assert "fragment" in detail["message"], detail
    job = {"processing_type": "echo", "mode": "async", "callback_method": "GET"}
    given = origin + "/cbget/3?sig=abc%23frag"
    response = await client.post(
        EXECUTE, json={**job, "callback_url": given, "items": [{}]}, headers=auth
    )
    assert response.status == 202, await response.text()
    done = await settled(client, auth, (await response.json())["job_id"])
    assert done["callback"]["state"] == "delivered"
    [received] = target.received
    assert received.raw_path.startswith("/cbget/3?sig=abc%23frag&job_id="), received.raw_path
    assert received.query["sig"] == "abc#frag"
    assert received.query["job_id"] == done["job_id"]
    assert received.query["status"] == "completed"


@pytest.mark.parametrize(
    "url", ["http://n8n:5678/#x", "http://n8n:5678/base#", "http://n8n/?a=1", "http://n8n/?"]
)
def test_bridge_n8n_url_with_a_fragment_or_query_stops_start_up(url: str) -> None:
    """Webhook paths are joined under BRIDGE_N8N_URL: a fragment (never sent) or a query there
    would be lost in the join, so every path was refused as leaving it."""
    with pytest.raises(ValidationError, match="without a query or fragment"):
        Settings(n8n_url=url)
